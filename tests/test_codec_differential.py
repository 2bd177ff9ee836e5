"""Differential tests: the Cython codec and the pure twin must agree on every input, split any way.

Random frame sequences (fragmented messages with control frames in between, masked or not, sometimes with a
violation or junk spliced in) are cut into random chunks and fed to both decoders: each ``feed`` must return the
same events, or raise the same exception (type, close code, message), and leave the same ``buffered``. Valid
streams must also reassemble to the original messages under every chunking.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion_fast import _pump_py
from bastion_fast.exceptions import ProtocolError
from tests._wsframes import MAX_BUFFERED, build_frame, chunked

pytestmark = pytest.mark.compiled  # compares against the extension: deselected in pure-only runs

SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _cython() -> ModuleType:
    from bastion_fast import _pump  # type: ignore[attr-defined]

    return _pump  # type: ignore[no-any-return]


@dataclass
class Stream:
    client: bool  # decoder role
    options: dict[str, Any]
    wire: bytes
    messages: list[tuple[int, bytes]]  # what a correct decoder reassembles (data messages and control frames)
    valid: bool


def _payload(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 9)) == 0:  # sometimes a 16- or 64-bit length
        size = draw(st.sampled_from([126, 1000, 65535, 65536, 70001]))
        return random.Random(draw(st.integers(0, 2**32))).randbytes(size)
    return draw(st.binary(max_size=200))


@st.composite
def streams(draw: st.DrawFn, allow_invalid: bool = True) -> Stream:
    client = draw(st.booleans())
    options: dict[str, Any] = {"client": client}
    if not client and draw(st.booleans()):
        options["require_mask"] = False
    if draw(st.integers(0, 4)) == 0:
        options["max_frame_size"] = draw(st.integers(0, 70000))
    if draw(st.integers(0, 4)) == 0:
        options["reject_continuation"] = True

    def key() -> bytes | None:
        if client:
            return None
        if options.get("require_mask", True) or draw(st.booleans()):
            return draw(st.binary(min_size=4, max_size=4))
        return None

    def control() -> tuple[int, bytes]:
        return (draw(st.sampled_from([9, 10])), draw(st.binary(max_size=125)))

    parts: list[bytes] = []
    messages: list[tuple[int, bytes]] = []
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.integers(0, 3)) == 0:
            op, payload = control()
            parts.append(build_frame(op, payload, key=key()))
            messages.append((op, payload))
            continue
        op = draw(st.sampled_from([1, 2]))
        payload = _payload(draw)
        cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=3)))
        pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
        for i, piece in enumerate(pieces):
            parts.append(build_frame(op if i == 0 else 0, piece, fin=i == len(pieces) - 1, key=key()))
            if i < len(pieces) - 1 and draw(st.integers(0, 3)) == 0:
                cop, cpayload = control()
                parts.append(build_frame(cop, cpayload, key=key()))
                messages.append((cop, cpayload))
        messages.append((op, payload))
    if draw(st.booleans()):
        code = draw(st.sampled_from([1000, 1001, 1011, 1012, 3000, 4999]))
        reason = draw(st.text(max_size=20)).encode()[:100]
        parts.append(build_frame(8, code.to_bytes(2, "big") + reason, key=key()))
        messages.append((8, code.to_bytes(2, "big") + reason))
        parts.append(draw(st.binary(max_size=20)))  # ignored after the close
    valid = True
    if allow_invalid and draw(st.integers(0, 2)) == 0:
        valid = False
        junk = draw(
            st.one_of(
                st.binary(min_size=1, max_size=30),
                st.builds(
                    lambda op, rsv, fin, n: build_frame(op, b"\x03\xe8"[: n % 3], rsv=rsv, fin=fin, length=n),
                    st.integers(0, 15),
                    st.integers(0, 7),
                    st.booleans(),
                    st.sampled_from([0, 1, 2, 125, 126, 65536, 2**63, 2**64 - 1]),
                ),
            )
        )
        parts.insert(draw(st.integers(0, len(parts))), junk)
    return Stream(client, options, b"".join(parts), messages, valid)


def _outcome(decoder: Any, chunk: bytes) -> tuple[Any, ...]:
    try:
        events = decoder.feed(chunk)
    except ProtocolError as exc:
        return ("error", type(exc).__name__, exc.close_code, str(exc), decoder.buffered)
    return ("events", events, decoder.buffered)


def _run(impl: ModuleType, stream: Stream, cuts: list[int]) -> list[tuple[Any, ...]]:
    decoder = impl.FrameDecoder(**stream.options)
    outcomes = []
    for chunk in chunked(stream.wire, cuts):
        outcome = _outcome(decoder, chunk)
        outcomes.append(outcome)
        assert outcome[-1] <= MAX_BUFFERED
        if outcome[0] == "error":
            outcomes.append(_outcome(decoder, b"\x82\x00"))  # dead: raises the same again
            break
    return outcomes


def _reassemble(outcomes: list[tuple[Any, ...]]) -> list[tuple[int, bytes]]:
    messages: list[tuple[int, bytes]] = []
    pending: dict[int, bytearray] = {}
    for outcome in outcomes:
        assert outcome[0] == "events", outcome
        for op, payload, fin in outcome[1]:
            assert type(payload) is bytes and type(fin) is bool
            if op >= 8:
                messages.append((op, payload))
                continue
            pending.setdefault(op, bytearray()).extend(payload)
            if fin:
                messages.append((op, bytes(pending.pop(op))))
    assert not pending
    return messages


@SETTINGS
@given(stream=streams(), data=st.data())
def test_decoders_agree_on_any_chunking(stream: Stream, data: st.DataObject) -> None:
    cuts = data.draw(st.lists(st.integers(0, max(len(stream.wire), 1)), max_size=40))
    pure = _run(_pump_py, stream, cuts)
    compiled = _run(_cython(), stream, cuts)
    assert compiled == pure
    if stream.valid and pure[-1][0] == "events":
        assert _reassemble(pure) == stream.messages


@SETTINGS
@given(stream=streams(allow_invalid=False), data=st.data())
def test_payloads_survive_every_chunking(stream: Stream, data: st.DataObject) -> None:
    stream.options.pop("reject_continuation", None)
    stream.options.pop("max_frame_size", None)
    size = max(len(stream.wire), 1)
    chunkings = [
        [],
        list(range(1, size)) if size < 3000 else list(range(1, size, 997)),
        data.draw(st.lists(st.integers(0, size), max_size=60)),
    ]
    for impl in (_pump_py, _cython()):
        for cuts in chunkings:
            assert _reassemble(_run(impl, stream, cuts)) == stream.messages


@SETTINGS
@given(
    payload=st.one_of(st.binary(max_size=3000), st.integers(0, 200_000).map(lambda n: b"\xa5" * n)),
    frame_size=st.integers(1, 70_000),
    client=st.booleans(),
    seed=st.binary(min_size=4, max_size=4),
)
def test_encoders_agree(payload: bytes, frame_size: int, client: bool, seed: bytes) -> None:
    if frame_size < 20 and len(payload) > 5000:
        payload = payload[:5000]  # keep the frame count (and the test) small
    real = os.urandom
    os.urandom = lambda n: (seed * (n // 4 + 1))[:n]
    try:
        outputs = []
        for impl in (_pump_py, _cython()):
            enc = impl.FrameEncoder(client=client, frame_size=frame_size)
            outputs.append(
                (
                    enc.encode_data(payload),
                    enc.encode(2, payload[:1000], fin=False),
                    enc.ping(payload[:125]),
                    enc.close(1000, "x"),
                )
            )
    finally:
        os.urandom = real
    assert outputs[0] == outputs[1]
    events = _pump_py.FrameDecoder(client=not client).feed(outputs[0][0])
    assert b"".join(p for _, p, _ in events) == payload
    assert all(fin and op == 2 and len(p) <= frame_size for op, p, fin in events)
