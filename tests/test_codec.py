"""RFC 6455 frame codec: byte vectors, masking, every violation and its close code, decoder state rules.

Every test runs on the pure twin and on the Cython extension (``impl`` fixture). The Cython ``feed`` is a thin
wrapper over the C-level ``parse`` the pump uses, so these tests exercise that path too.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest

from bastion_fast.exceptions import FrameTooLarge, InvalidClosePayload, ProtocolError
from tests._wsframes import MAX_BUFFERED, build_frame, naive_mask

KEY = bytes.fromhex("37fa213d")  # RFC 6455 §5.7
HELLO_MASKED = bytes.fromhex("818537fa213d7f9f4d5158")
MiB = 1024 * 1024


@pytest.fixture
def fixed_keys(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every masking key drawn from os.urandom is the RFC 6455 §5.7 key."""
    monkeypatch.setattr(os, "urandom", lambda n: KEY * (n // 4) + KEY[: n % 4])
    yield


def events_of(decoder: Any, stream: bytes, step: int | None = None) -> list[tuple[int, bytes, bool]]:
    if step is None:
        return list(decoder.feed(stream))
    out: list[tuple[int, bytes, bool]] = []
    for i in range(0, len(stream), step):
        out += decoder.feed(stream[i : i + step])
    return out


def test_constants(impl: ModuleType) -> None:
    assert (impl.OP_CONT, impl.OP_TEXT, impl.OP_BINARY) == (0, 1, 2)
    assert (impl.OP_CLOSE, impl.OP_PING, impl.OP_PONG) == (8, 9, 10)


# --- masking -------------------------------------------------------------------------------------------------


def test_apply_mask_rfc_vector(impl: ModuleType) -> None:
    assert impl.apply_mask(b"Hello", KEY) == bytes.fromhex("7f9f4d5158")
    assert impl.apply_mask(bytes.fromhex("7f9f4d5158"), KEY) == b"Hello"


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview", "noncontiguous"])
def test_apply_mask_buffer_types(impl: ModuleType, kind: str) -> None:
    raw = bytes(range(256)) * 5
    data: Any
    expected_src = raw
    if kind == "bytes":
        data = raw
    elif kind == "bytearray":
        data = bytearray(raw)
    elif kind == "memoryview":
        data = memoryview(raw)
    else:
        data = memoryview(raw)[::3]
        expected_src = raw[::3]
    assert impl.apply_mask(data, KEY) == naive_mask(expected_src, KEY)
    assert impl.apply_mask(data, bytearray(KEY)) == naive_mask(expected_src, KEY)


def test_apply_mask_every_length_and_offset(impl: ModuleType) -> None:
    # Lengths and start offsets around every vector width (8, 16, 32, 64, 128 bytes) and their tails.
    base = os.urandom(600)
    key = os.urandom(4)
    for offset in range(9):
        for length in [*range(0, 70), 127, 128, 129, 255, 256, 257, 300, 511]:
            chunk = memoryview(base)[offset : offset + length]
            assert impl.apply_mask(chunk, key) == naive_mask(bytes(chunk), key), (offset, length)


def test_apply_mask_large_odd_length(impl: ModuleType) -> None:
    data = os.urandom(MiB + 3)
    key = os.urandom(4)
    masked = impl.apply_mask(data, key)
    assert masked[:64] == naive_mask(data[:64], key)
    assert masked[-67:] == naive_mask(data[-67:], key, phase=(len(data) - 67) % 4)
    assert impl.apply_mask(masked, key) == data


@pytest.mark.compiled
@pytest.mark.parametrize("path", ["uint64", "sse2", "avx2"])
def test_every_c_masking_path(path: str) -> None:
    """The extension picks one path per CPU; force each one this machine has and check it, incl. in place."""
    from bastion_fast import _pump  # type: ignore[attr-defined]

    best = _pump._mask_impl()
    try:
        _pump._set_mask_impl(path)
    except ValueError:
        pytest.skip(f"{path} masking is not available on this build/CPU")
    try:
        assert _pump._mask_impl() == path
        base = os.urandom(1200)
        key = os.urandom(4)
        for offset in range(5):
            for length in [*range(0, 140), 255, 256, 257, 1000, 1031]:
                chunk = memoryview(base)[offset : offset + length]
                assert _pump.apply_mask(chunk, key) == naive_mask(bytes(chunk), key), (path, offset, length)
        # Server-role unmasking works in place, with the key phase carried between pieces.
        payload = os.urandom(3001)
        frame = build_frame(2, payload, key=key)
        dec = _pump.FrameDecoder(client=False)
        events = [e for cut in range(0, len(frame), 331) for e in dec.feed(frame[cut : cut + 331])]
        assert b"".join(p for _, p, _ in events) == payload
        enc = _pump.FrameEncoder(client=True, frame_size=777)
        assert b"".join(p for _, p, _ in _pump.FrameDecoder(client=False).feed(enc.encode_data(payload))) == payload
    finally:
        _pump._set_mask_impl(best)


@pytest.mark.parametrize("key", [b"", b"abc", b"abcde"])
def test_apply_mask_rejects_bad_key(impl: ModuleType, key: bytes) -> None:
    with pytest.raises(ValueError, match="4 bytes"):
        impl.apply_mask(b"data", key)


def test_apply_mask_rejects_str(impl: ModuleType) -> None:
    with pytest.raises(TypeError):
        impl.apply_mask("text", KEY)


def test_mask_key_source_draws_in_bulk(impl: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    draws: list[int] = []
    real = os.urandom

    def counting(n: int) -> bytes:
        draws.append(n)
        return real(n)

    monkeypatch.setattr(os, "urandom", counting)
    source = impl.MaskKeySource(batch_keys=16)
    keys = [source.next_key() for _ in range(40)]
    assert all(type(k) is bytes and len(k) == 4 for k in keys)
    assert draws == [64, 64, 64]  # 40 keys = 3 draws of 16 keys, never one draw per key
    assert len(set(keys)) > 30  # random keys (a collision among 40 random 32-bit keys is ~2e-7 likely)


def test_mask_key_source_cuts_keys_in_order(impl: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "urandom", lambda n: bytes(i % 256 for i in range(n)))
    source = impl.MaskKeySource(batch_keys=2)
    assert [source.next_key() for _ in range(3)] == [b"\x00\x01\x02\x03", b"\x04\x05\x06\x07", b"\x00\x01\x02\x03"]
    assert len(impl.MaskKeySource().next_key()) == 4
    with pytest.raises(ValueError):
        impl.MaskKeySource(batch_keys=0)


# --- encoder -------------------------------------------------------------------------------------------------


def test_encode_rfc_vectors_server_role(impl: ModuleType) -> None:
    enc = impl.FrameEncoder(client=False)
    assert enc.encode(impl.OP_TEXT, b"Hello") == bytes.fromhex("810548656c6c6f")
    assert enc.encode(impl.OP_TEXT, b"Hel", fin=False) == bytes.fromhex("010348656c")
    assert enc.encode(impl.OP_CONT, b"lo") == bytes.fromhex("80026c6f")
    assert enc.ping(b"Hello") == bytes.fromhex("890548656c6c6f")
    payload = os.urandom(256)
    assert enc.encode(impl.OP_BINARY, payload) == bytes.fromhex("827e0100") + payload
    payload = os.urandom(65536)
    assert enc.encode(impl.OP_BINARY, payload) == bytes.fromhex("827f0000000000010000") + payload


def test_encode_rfc_vectors_client_role(impl: ModuleType, fixed_keys: None) -> None:
    enc = impl.FrameEncoder(client=True)
    assert enc.encode(impl.OP_TEXT, b"Hello") == HELLO_MASKED
    assert enc.pong(b"Hello") == bytes.fromhex("8a8537fa213d7f9f4d5158")
    assert enc.encode_data(b"Hello") == bytes.fromhex("828537fa213d7f9f4d5158")


@pytest.mark.parametrize(
    ("n", "header"),
    [
        (0, "8200"),
        (125, "827d"),
        (126, "827e007e"),
        (65535, "827effff"),
        (65536, "827f0000000000010000"),
        (70000, "827f0000000000011170"),
    ],
)
def test_encode_length_forms(impl: ModuleType, n: int, header: str) -> None:
    payload = os.urandom(n)
    frame = impl.FrameEncoder(client=False).encode(impl.OP_BINARY, payload)
    assert frame == bytes.fromhex(header) + payload


def test_encode_client_role_masks_each_frame_with_a_fresh_key(impl: ModuleType) -> None:
    enc = impl.FrameEncoder(client=True, frame_size=100)
    data = os.urandom(1000)
    wire = enc.encode_data(data)
    keys = []
    pos = 0
    while pos < len(wire):
        assert wire[pos] == 0x82
        assert wire[pos + 1] == 0x80 | 100
        key = wire[pos + 2 : pos + 6]
        keys.append(key)
        body = wire[pos + 6 : pos + 106]
        assert naive_mask(body, key) == data[len(keys) * 100 - 100 : len(keys) * 100]
        pos += 106
    assert pos == len(wire)
    assert len(keys) == 10 and len(set(keys)) > 5


@pytest.mark.parametrize("client", [False, True])
@pytest.mark.parametrize("frame_size", [1, 7, 125, 126, 65535, 65536, 100_000])
def test_encode_data_splits_into_complete_messages(impl: ModuleType, client: bool, frame_size: int) -> None:
    enc = impl.FrameEncoder(client=client, frame_size=frame_size)
    assert enc.frame_size == frame_size and enc.client is client
    for n in sorted({0, 1, frame_size - 1, frame_size, frame_size + 1, 2 * frame_size + 3}):
        if n < 0 or (frame_size == 1 and n > 3000):
            continue
        data = os.urandom(n)
        wire = enc.encode_data(data)
        if n == 0:
            assert wire == b""
            continue
        dec = impl.FrameDecoder(client=not client)
        events = dec.feed(wire)
        # Each frame is one whole message: FIN set, binary, never a continuation, <= frame_size.
        assert all(op == impl.OP_BINARY and fin for op, _, fin in events)
        assert [len(p) for _, p, _ in events] == [min(frame_size, n - i) for i in range(0, n, frame_size)]
        assert b"".join(p for _, p, _ in events) == data
        assert dec.buffered == 0


def test_encode_data_accepts_buffer_types(impl: ModuleType) -> None:
    enc = impl.FrameEncoder(client=False, frame_size=4)
    expected = enc.encode_data(b"abcdefghij")
    assert enc.encode_data(bytearray(b"abcdefghij")) == expected
    assert enc.encode_data(memoryview(b"xxabcdefghijyy")[2:12]) == expected
    assert enc.encode_data(memoryview(b"a-b-c-d-e-f-g-h-i-j-")[::2]) == expected


def test_control_frames(impl: ModuleType) -> None:
    enc = impl.FrameEncoder(client=False)
    assert enc.ping() == b"\x89\x00"
    assert enc.pong(b"x" * 125) == b"\x8a\x7d" + b"x" * 125
    assert enc.close() == b"\x88\x02\x03\xe8"
    assert enc.close(1001, "bye") == b"\x88\x05\x03\xe9bye"
    assert enc.close(None) == b"\x88\x00"
    assert enc.close(4999, "é" * 61) == b"\x88\x7c\x13\x87" + "é".encode() * 61


@pytest.mark.parametrize(
    "call",
    [
        lambda e: e.ping(b"x" * 126),
        lambda e: e.pong(b"x" * 126),
        lambda e: e.encode(8, b"x" * 126),
        lambda e: e.encode(9, b"", fin=False),
        lambda e: e.encode(3, b""),
        lambda e: e.encode(11, b""),
        lambda e: e.close(1000, "r" * 124),
        lambda e: e.close(None, "reason"),
        lambda e: e.close(1005),
        lambda e: e.close(1006),
        lambda e: e.close(999),
        lambda e: e.close(2000),
        lambda e: e.close(5000),
        lambda e: e.close(70000),
        lambda e: e.close(-1),
    ],
)
def test_encoder_refuses_invalid_frames(impl: ModuleType, call: Callable[[Any], bytes]) -> None:
    with pytest.raises(ValueError):
        call(impl.FrameEncoder(client=True))


def test_encoder_rejects_bad_frame_size(impl: ModuleType) -> None:
    with pytest.raises(ValueError):
        impl.FrameEncoder(client=True, frame_size=0)


# --- decoder: valid input ------------------------------------------------------------------------------------


def test_decode_rfc_vectors(impl: ModuleType) -> None:
    dec = impl.FrameDecoder(client=True)
    assert dec.feed(bytes.fromhex("810548656c6c6f")) == [(1, b"Hello", True)]
    # Fragmented text message: the continuation reports the message's opcode.
    assert dec.feed(bytes.fromhex("010348656c80026c6f")) == [(1, b"Hel", False), (1, b"lo", True)]
    assert dec.feed(bytes.fromhex("890548656c6c6f")) == [(9, b"Hello", True)]
    payload = os.urandom(256)
    assert dec.feed(bytes.fromhex("827e0100") + payload) == [(2, payload, True)]
    payload = os.urandom(65536)
    assert dec.feed(bytes.fromhex("827f0000000000010000") + payload) == [(2, payload, True)]
    server = impl.FrameDecoder(client=False)
    assert server.feed(HELLO_MASKED) == [(1, b"Hello", True)]
    assert server.feed(bytes.fromhex("8a8537fa213d7f9f4d5158")) == [(10, b"Hello", True)]


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_decode_buffer_types(impl: ModuleType, kind: Callable[[bytes], Any]) -> None:
    dec = impl.FrameDecoder(client=True)
    assert dec.feed(kind(bytes.fromhex("810548656c6c6f"))) == [(1, b"Hello", True)]
    assert type(dec.feed(kind(b"\x82\x01x"))[0][1]) is bytes


def test_decode_one_byte_at_a_time(impl: ModuleType) -> None:
    key = os.urandom(4)
    payload = os.urandom(1000)
    stream = (
        build_frame(2, payload[:300], fin=False, key=key)
        + build_frame(9, b"ping!", key=key)
        + build_frame(0, payload[300:], fin=True, key=key)
        + build_frame(1, b"", key=key)
    )
    dec = impl.FrameDecoder(client=False)
    events = events_of(dec, stream, step=1)
    data = [e for e in events if e[0] != 9]
    assert all(len(p) == 1 for _, p, _ in data[:-1])  # one event per slice present, never an empty one ...
    assert data[-1] == (1, b"", True)  # ... except the one event of a zero-length frame
    assert b"".join(p for _, p, _ in data) == payload
    assert [op for op, _, _ in data[:-1]] == [2] * 1000
    assert [i for i, (_, _, fin) in enumerate(data) if fin] == [999, 1000]
    assert (9, b"ping!", True) in events
    assert dec.buffered == 0


def test_decode_control_frame_inside_fragmented_message(impl: ModuleType) -> None:
    stream = build_frame(1, b"ab", fin=False) + build_frame(9, b"p") + build_frame(0, b"cd", fin=False)
    stream += build_frame(10, b"") + build_frame(0, b"ef", fin=True) + build_frame(2, b"next")
    assert impl.FrameDecoder(client=True).feed(stream) == [
        (1, b"ab", False),
        (9, b"p", True),
        (1, b"cd", False),
        (10, b"", True),
        (1, b"ef", True),
        (2, b"next", True),
    ]


def test_decode_zero_length_frames(impl: ModuleType) -> None:
    stream = build_frame(2, b"", fin=False) + build_frame(0, b"", fin=False) + build_frame(0, b"", fin=True)
    stream += build_frame(2, b"") + build_frame(9, b"") + build_frame(8, b"")
    assert impl.FrameDecoder(client=True).feed(stream) == [
        (2, b"", False),
        (2, b"", False),
        (2, b"", True),
        (2, b"", True),
        (9, b"", True),
        (8, b"", True),
    ]


def test_decode_text_is_delivered_as_bytes_without_utf8_check(impl: ModuleType) -> None:
    assert impl.FrameDecoder(client=True).feed(build_frame(1, b"\xff\xfe")) == [(1, b"\xff\xfe", True)]


def test_decode_64bit_and_non_minimal_lengths(impl: ModuleType) -> None:
    dec = impl.FrameDecoder(client=True)
    assert dec.feed(build_frame(2, b"abc", length_form="64")) == [(2, b"abc", True)]
    assert dec.feed(build_frame(2, b"abc", length_form="16")) == [(2, b"abc", True)]
    big = os.urandom(70_000)
    assert dec.feed(build_frame(2, big)) == [(2, big, True)]


def test_decode_large_frame_streams_without_buffering(impl: ModuleType) -> None:
    payload = os.urandom(MiB)
    stream = build_frame(2, payload, key=os.urandom(4))
    dec = impl.FrameDecoder(client=False)
    received = []
    for i in range(0, len(stream), 65536):
        events = dec.feed(stream[i : i + 65536])
        assert all(len(p) <= 65536 for _, p, _ in events)
        assert dec.buffered <= 14
        received += events
    assert b"".join(p for _, p, _ in received) == payload
    assert [fin for _, _, fin in received] == [False] * (len(received) - 1) + [True]


def test_decode_mask_phase_carried_across_feeds(impl: ModuleType) -> None:
    payload = os.urandom(1001)
    stream = build_frame(2, payload, key=os.urandom(4))
    for cuts in ([9, 10], [7, 8, 13, 14, 19, 22, 500, 501, 777], [1, 2, 3, 4, 5, 6, 7, 8, 9, 1000]):
        dec = impl.FrameDecoder(client=False)
        events: list[tuple[int, bytes, bool]] = []
        start = 0
        for cut in [*cuts, len(stream)]:
            events += dec.feed(stream[start:cut])
            start = cut
        assert b"".join(p for _, p, _ in events) == payload


def test_decode_server_role_does_not_modify_input(impl: ModuleType) -> None:
    stream = bytearray(build_frame(2, b"secret data", key=KEY))
    before = bytes(stream)
    assert impl.FrameDecoder(client=False).feed(stream) == [(2, b"secret data", True)]
    assert stream == before


def test_decode_unmasked_client_frames_when_mask_not_required(impl: ModuleType) -> None:
    dec = impl.FrameDecoder(client=False, require_mask=False)
    assert dec.feed(build_frame(2, b"plain") + build_frame(2, b"masked", key=KEY)) == [
        (2, b"plain", True),
        (2, b"masked", True),
    ]


def test_decode_frame_at_max_size_is_accepted(impl: ModuleType) -> None:
    dec = impl.FrameDecoder(client=True, max_frame_size=1000)
    assert dec.feed(build_frame(2, b"x" * 1000)) == [(2, b"x" * 1000, True)]
    zero = impl.FrameDecoder(client=True, max_frame_size=0)
    assert zero.feed(build_frame(2, b"") + build_frame(9, b"")) == [(2, b"", True), (9, b"", True)]


def test_decode_fragmented_message_larger_than_max_frame_size(impl: ModuleType) -> None:
    # The limit is per frame: a large message in frames under the limit passes.
    dec = impl.FrameDecoder(client=True, max_frame_size=100)
    stream = build_frame(2, b"a" * 100, fin=False) + build_frame(0, b"b" * 100, fin=False)
    stream += build_frame(0, b"c" * 100, fin=True)
    assert b"".join(p for _, p, _ in dec.feed(stream)) == b"a" * 100 + b"b" * 100 + b"c" * 100


def test_decoder_attributes(impl: ModuleType) -> None:
    dec = impl.FrameDecoder(client=False, max_frame_size=5, require_mask=False, reject_continuation=True)
    assert (dec.client, dec.max_frame_size, dec.require_mask, dec.reject_continuation) == (False, 5, False, True)
    with pytest.raises(ValueError):
        impl.FrameDecoder(client=True, max_frame_size=-1)


# --- decoder: close ------------------------------------------------------------------------------------------


def test_close_frame_then_input_ignored(impl: ModuleType) -> None:
    dec = impl.FrameDecoder(client=True)
    stream = build_frame(2, b"a") + build_frame(8, b"\x03\xe8bye") + build_frame(2, b"after") + b"\xff\xff"
    assert dec.feed(stream) == [(2, b"a", True), (8, b"\x03\xe8bye", True)]
    assert dec.feed(build_frame(2, b"more")) == []
    assert dec.feed(b"\x70\x00garbage that would be a violation") == []
    assert dec.buffered == 0


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1011, 1012, 1014, 3000, 4000, 4999])
def test_valid_close_codes(impl: ModuleType, code: int) -> None:
    payload = code.to_bytes(2, "big") + "fin ✓".encode()
    dec = impl.FrameDecoder(client=True)
    assert dec.feed(build_frame(8, payload)) == [(8, payload, True)]
    assert impl.parse_close(payload) == (code, "fin ✓")
    assert impl.parse_close(bytearray(payload)) == (code, "fin ✓")


def test_parse_close_empty(impl: ModuleType) -> None:
    assert impl.parse_close(b"") == (1005, "")
    assert impl.parse_close(b"\x03\xe8") == (1000, "")


@pytest.mark.parametrize(
    ("payload", "close_code"),
    [
        (b"\x03", 1002),
        (b"\x03\xe7", 1002),  # 999
        (b"\x03\xec", 1002),  # 1004
        (b"\x03\xed", 1002),  # 1005
        (b"\x03\xee", 1002),  # 1006
        (b"\x03\xf7", 1002),  # 1015
        (b"\x07\xd0", 1002),  # 2000
        (b"\x0b\xb7", 1002),  # 2999
        (b"\x13\x88", 1002),  # 5000
        (b"\xff\xff", 1002),
        (b"\x03\xe8\xff", 1007),
        (b"\x03\xe8ok\xc3", 1007),  # truncated UTF-8 sequence
        (b"\x03\xe8\xed\xa0\x80", 1007),  # UTF-8-encoded surrogate
    ],
)
def test_invalid_close_payload(impl: ModuleType, payload: bytes, close_code: int) -> None:
    with pytest.raises(InvalidClosePayload) as info:
        impl.parse_close(payload)
    assert info.value.close_code == close_code
    dec = impl.FrameDecoder(client=True)
    with pytest.raises(InvalidClosePayload) as info:
        dec.feed(build_frame(8, payload))
    assert info.value.close_code == close_code


# --- decoder: violations -------------------------------------------------------------------------------------

CONT_OPEN = build_frame(2, b"x", fin=False)

VIOLATIONS: list[tuple[str, bytes, dict[str, Any], type[ProtocolError], int]] = [
    ("rsv1", build_frame(2, b"x", rsv=4), {}, ProtocolError, 1002),
    ("rsv2", build_frame(2, b"x", rsv=2), {}, ProtocolError, 1002),
    ("rsv3", build_frame(9, b"", rsv=1), {}, ProtocolError, 1002),
    ("opcode 3", build_frame(3, b"x"), {}, ProtocolError, 1002),
    ("opcode 7", build_frame(7, b"x"), {}, ProtocolError, 1002),
    ("opcode 11", build_frame(11, b""), {}, ProtocolError, 1002),
    ("opcode 15", build_frame(15, b""), {}, ProtocolError, 1002),
    ("fragmented ping", build_frame(9, b"p", fin=False), {}, ProtocolError, 1002),
    ("fragmented close", build_frame(8, b"", fin=False), {}, ProtocolError, 1002),
    ("ping of 126 bytes", build_frame(9, b"p" * 126), {}, ProtocolError, 1002),
    ("pong with 64-bit length", build_frame(10, b"p", length_form="64"), {}, ProtocolError, 1002),
    ("masked frame from server", build_frame(2, b"x", key=KEY), {}, ProtocolError, 1002),
    ("unmasked frame from client", build_frame(2, b"x"), {"client": False}, ProtocolError, 1002),
    ("unmasked ping from client", build_frame(9, b""), {"client": False}, ProtocolError, 1002),
    ("continuation without message", build_frame(0, b"x"), {}, ProtocolError, 1002),
    ("binary inside message", CONT_OPEN + build_frame(2, b"y"), {}, ProtocolError, 1002),
    ("text inside message", CONT_OPEN + build_frame(1, b"y", fin=False), {}, ProtocolError, 1002),
    ("64-bit length MSB", build_frame(2, length=1 << 63), {}, ProtocolError, 1002),
    ("64-bit length all ones", build_frame(2, length=(1 << 64) - 1), {}, ProtocolError, 1002),
    ("too large", build_frame(2, b"", length=1001), {"max_frame_size": 1000}, FrameTooLarge, 1009),
    ("too large 64-bit", build_frame(2, length=(1 << 62)), {}, FrameTooLarge, 1009),
    ("too large continuation", CONT_OPEN + build_frame(0, length=11), {"max_frame_size": 10}, FrameTooLarge, 1009),
    ("continuation rejected", CONT_OPEN + build_frame(0, b"y"), {"reject_continuation": True}, ProtocolError, 1002),
    ("close 1 byte", build_frame(8, b"\x03"), {}, InvalidClosePayload, 1002),
    ("close code 1005", build_frame(8, b"\x03\xed"), {}, InvalidClosePayload, 1002),
    ("close reason not utf-8", build_frame(8, b"\x03\xe8\x80"), {}, InvalidClosePayload, 1007),
]


@pytest.mark.parametrize(
    ("stream", "options", "exc_type", "close_code"),
    [pytest.param(*v[1:], id=v[0]) for v in VIOLATIONS],
)
@pytest.mark.parametrize("step", [None, 1, 3])
def test_violation(
    impl: ModuleType,
    stream: bytes,
    options: dict[str, Any],
    exc_type: type[ProtocolError],
    close_code: int,
    step: int | None,
) -> None:
    options = {"client": True, **options}
    dec = impl.FrameDecoder(**options)
    with pytest.raises(exc_type) as info:
        events_of(dec, stream, step)
    exc = info.value
    assert type(exc) is exc_type
    assert exc.close_code == close_code
    assert str(exc)  # says what went wrong
    # The decoder is dead: any further input raises the same error again, and nothing is held.
    assert dec.buffered == 0
    for more in (b"", build_frame(2, b"fine"), b"\x00"):
        with pytest.raises(exc_type) as again:
            dec.feed(more)
        assert again.value is exc


def test_violations_detected_in_server_role_too(impl: ModuleType) -> None:
    dec = impl.FrameDecoder(client=False)
    with pytest.raises(ProtocolError, match="reserved"):
        dec.feed(build_frame(2, b"x", key=KEY, rsv=4))
    dec = impl.FrameDecoder(client=False, max_frame_size=3)
    with pytest.raises(FrameTooLarge):
        dec.feed(build_frame(2, b"xxxx", key=KEY))


def test_continuation_accepted_unless_rejected(impl: ModuleType) -> None:
    stream = CONT_OPEN + build_frame(0, b"y")
    assert impl.FrameDecoder(client=True).feed(stream) == [(2, b"x", False), (2, b"y", True)]
    # With reject_continuation the first fragment still arrives; the continuation frame is the violation.
    dec = impl.FrameDecoder(client=True, reject_continuation=True)
    assert dec.feed(CONT_OPEN) == [(2, b"x", False)]
    with pytest.raises(ProtocolError, match="continuation"):
        dec.feed(build_frame(0, b"y"))


def test_feed_that_raises_delivers_no_events(impl: ModuleType) -> None:
    dec = impl.FrameDecoder(client=True)
    with pytest.raises(ProtocolError):
        dec.feed(build_frame(2, b"good") + build_frame(3, b"bad"))


def test_violation_found_as_soon_as_the_header_is_complete(impl: ModuleType) -> None:
    dec = impl.FrameDecoder(client=True, max_frame_size=10)
    header = build_frame(2, length=1 << 20)  # 10-byte header, no payload needed to judge it
    assert dec.feed(header[:-1]) == []
    with pytest.raises(FrameTooLarge):
        dec.feed(header[-1:])


# --- decoder: buffering bound --------------------------------------------------------------------------------


def test_buffered_counts_partial_header_and_control_payload(impl: ModuleType) -> None:
    dec = impl.FrameDecoder(client=False)
    frame = build_frame(2, b"z" * 70000, key=KEY)  # 2 + 8 + 4 = 14-byte header
    assert dec.feed(frame[:1]) == [] and dec.buffered == 1
    assert dec.feed(frame[1:13]) == [] and dec.buffered == 13
    assert dec.feed(frame[13:20]) == [(2, b"z" * 6, False)] and dec.buffered == 0
    dec.feed(frame[20:])
    ping = build_frame(9, b"p" * 125, key=KEY)
    assert dec.feed(ping[:106]) == [] and dec.buffered == 100
    assert dec.feed(ping[106:]) == [(9, b"p" * 125, True)] and dec.buffered == 0


def test_buffered_never_exceeds_bound(impl: ModuleType) -> None:
    key = os.urandom(4)
    stream = b"".join(
        build_frame(op, os.urandom(n), key=key, fin=True) for op, n in [(9, 125), (2, 70000), (10, 125), (2, 3)]
    )
    dec = impl.FrameDecoder(client=False)
    peak = 0
    for i in range(len(stream)):
        dec.feed(stream[i : i + 1])
        peak = max(peak, dec.buffered)
    assert 0 < peak <= MAX_BUFFERED
    assert peak == 124  # an incomplete 125-byte control payload is the most ever held
