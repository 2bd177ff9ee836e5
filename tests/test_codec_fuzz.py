"""Fuzzing the frame decoder: any bytes, any split, any options → events or a documented exception.

* ``test_decoder_survives_*``: a short hypothesis run in the normal suite (a few hundred examples per implementation).
* ``-m fuzz`` (or ``BASTION_FAST_FUZZ=1``) turns on the long runs: the same properties for 100 000 examples, and
  the atheris harness ``tests/fuzz_codec_atheris.py`` (coverage-guided on the pure twin, differential against the
  extension) for 100 000 runs when atheris is installed.

Properties: ``feed`` returns well-formed events or raises ProtocolError / FrameTooLarge / InvalidClosePayload with
the right close code; it never hangs (pytest-timeout); ``buffered`` never exceeds 14 + 125 bytes; the decoder never
returns more payload than it was given.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion_fast.exceptions import FrameTooLarge, InvalidClosePayload, ProtocolError
from tests._wsframes import MAX_BUFFERED, build_frame, chunked

CLOSE_CODES = {ProtocolError: {1002}, FrameTooLarge: {1009}, InvalidClosePayload: {1002, 1007}}
LONG_EXAMPLES = 100_000


def _fuzz_selected(config: pytest.Config) -> bool:
    if os.environ.get("BASTION_FAST_FUZZ", "").strip() == "1":
        return True
    expr = config.getoption("markexpr") or ""
    return bool(re.search(r"(?<!not )\bfuzz\b", expr))


@pytest.fixture
def long_fuzz(request: pytest.FixtureRequest) -> None:
    if not _fuzz_selected(request.config):
        pytest.skip("long fuzz run: opt in with -m fuzz or BASTION_FAST_FUZZ=1")


options_st = st.fixed_dictionaries(
    {"client": st.booleans()},
    optional={
        "max_frame_size": st.integers(0, 100_000),
        "require_mask": st.booleans(),
        "reject_continuation": st.booleans(),
    },
)

frame_st = st.builds(
    lambda op, payload, fin, key, rsv, length, form: build_frame(
        op, payload, fin=fin, key=key, rsv=rsv, length=length, length_form=form
    ),
    st.sampled_from([0, 1, 2, 8, 9, 10, 0, 1, 2, 8, 9, 10, 3, 11]),
    st.binary(max_size=140),
    st.booleans(),
    st.one_of(st.none(), st.binary(min_size=4, max_size=4)),
    st.sampled_from([0, 0, 0, 0, 0, 1, 4]),
    st.one_of(st.none(), st.none(), st.integers(0, 2**64 - 1)),
    st.sampled_from([None, None, None, "7", "16", "64"]),
)

wire_st = st.one_of(
    st.binary(max_size=600),
    st.lists(st.one_of(frame_st, st.binary(max_size=8)), max_size=12).map(b"".join),
)


def check_feed(impl: ModuleType, options: dict[str, Any], wire: bytes, cuts: list[int]) -> None:
    """Feed ``wire`` split at ``cuts``; assert the fuzz properties."""
    decoder = impl.FrameDecoder(**options)
    fed = 0
    payload_out = 0
    for chunk in chunked(wire, cuts):
        fed += len(chunk)
        try:
            events = decoder.feed(chunk)
        except ProtocolError as exc:
            assert type(exc) in CLOSE_CODES, type(exc)
            assert exc.close_code in CLOSE_CODES[type(exc)]
            assert decoder.buffered == 0
            with pytest.raises(type(exc)):
                decoder.feed(b"\x82\x00")
            return
        for op, payload, fin in events:
            assert op in (1, 2, 8, 9, 10)
            assert type(payload) is bytes and type(fin) is bool
            if op >= 8:
                assert fin and len(payload) <= 125
            payload_out += len(payload)
        assert payload_out <= fed
        assert 0 <= decoder.buffered <= MAX_BUFFERED


FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LONG = settings(
    max_examples=LONG_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@FAST
@given(options=options_st, wire=wire_st, data=st.data())
def test_decoder_survives_random_input(impl: ModuleType, options: dict[str, Any], wire: bytes, data: Any) -> None:
    cuts = data.draw(st.lists(st.integers(0, max(len(wire), 1)), max_size=30))
    check_feed(impl, options, wire, cuts)


@FAST
@given(options=options_st, wire=wire_st)
def test_decoder_survives_byte_by_byte_input(impl: ModuleType, options: dict[str, Any], wire: bytes) -> None:
    check_feed(impl, options, wire, list(range(len(wire))))


@pytest.mark.fuzz
@pytest.mark.timeout(3600)
@LONG
@given(options=options_st, wire=wire_st, data=st.data())
def test_decoder_long_fuzz(
    long_fuzz: None, impl: ModuleType, options: dict[str, Any], wire: bytes, data: Any
) -> None:
    cuts = data.draw(st.lists(st.integers(0, max(len(wire), 1)), max_size=30))
    check_feed(impl, options, wire, cuts)


@pytest.mark.fuzz
@pytest.mark.compiled
@pytest.mark.timeout(3600)
def test_atheris_harness(long_fuzz: None, tmp_path: Path) -> None:
    pytest.importorskip("atheris", reason="pip install atheris to run the coverage-guided harness")
    harness = Path(__file__).with_name("fuzz_codec_atheris.py")
    result = subprocess.run(
        [sys.executable, str(harness), f"-runs={LONG_EXAMPLES}", "-max_len=4096", f"-artifact_prefix={tmp_path}/"],
        capture_output=True,
        text=True,
        timeout=3500,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    tail = (result.stdout + result.stderr)[-3000:]
    assert result.returncode == 0, tail
    assert f"Done {LONG_EXAMPLES} runs" in tail, tail
