"""Coverage-guided fuzzing of the frame decoder with atheris (opt-in; ``pip install atheris``).

    python tests/fuzz_codec_atheris.py -runs=100000 -max_len=4096

The pure twin is instrumented (atheris follows its Python branches); every input is also fed, split the same way,
to the Cython extension, and both must produce the same events or the same exception. An input that breaks a
property crashes the process and libFuzzer saves it as ``crash-*``. Run by ``pytest -m fuzz`` too.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["bastion_fast"]):
    from bastion_fast import _codec_py
    from bastion_fast.exceptions import ProtocolError

from bastion_fast import _pump  # type: ignore[attr-defined]  # C code: not instrumentable, compared only

MAX_BUFFERED = 14 + 125


def run(decoder: object, chunks: list[bytes]) -> list[object]:
    outcomes: list[object] = []
    for chunk in chunks:
        try:
            events = decoder.feed(chunk)  # type: ignore[attr-defined]
        except ProtocolError as exc:
            outcomes.append((type(exc).__name__, exc.close_code, str(exc)))
            return outcomes
        assert decoder.buffered <= MAX_BUFFERED  # type: ignore[attr-defined]
        outcomes.append(events)
    return outcomes


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    flags = fdp.ConsumeIntInRange(0, 255)
    options = {
        "client": bool(flags & 1),
        "require_mask": not flags & 2,
        "reject_continuation": bool(flags & 4),
    }
    if flags & 8:
        options["max_frame_size"] = fdp.ConsumeIntInRange(0, 70_000)
    sizes = [fdp.ConsumeIntInRange(1, 64) for _ in range(fdp.ConsumeIntInRange(0, 8))]
    wire = fdp.ConsumeBytes(fdp.remaining_bytes())
    chunks = []
    pos = 0
    for size in sizes:
        chunks.append(wire[pos : pos + size])
        pos += size
    chunks.append(wire[pos:])
    pure = run(_codec_py.FrameDecoder(**options), chunks)
    compiled = run(_pump.FrameDecoder(**options), chunks)
    if pure != compiled:
        raise AssertionError(f"implementations disagree: {pure!r} != {compiled!r}")


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
