"""Pure-Python twin of ``bastion_fast._pump``: the reference implementation and the fallback.

Same public names and behaviour as the Cython module (``tests/test_exports.py`` checks the names, every codec and
pump test runs on both).
"""

from __future__ import annotations

from bastion_fast._codec_py import *  # noqa: F403
from bastion_fast._codec_py import __all__ as _codec_all
from bastion_fast._splice_py import *  # noqa: F403
from bastion_fast._splice_py import __all__ as _splice_all

IMPLEMENTATION = "python"

__all__ = ["IMPLEMENTATION", *_codec_all, *_splice_all]  # noqa: PLE0604
