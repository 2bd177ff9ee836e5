"""Build only the optional Cython extension ``bastion_fast._pump``; metadata lives in pyproject.toml.

Build modes (one place decides):

* ``BASTION_FAST_BUILD_EXTENSION=1`` or ``CIBUILDWHEEL=1``: the extension is mandatory; a failure stops the build.
* ``BASTION_FAST_BUILD_EXTENSION=0``: pure-Python build, no compiler needed.
* unset: try to build it; if that fails, install the pure-Python twin and say so loudly.

``--with-coverage`` style tracing is enabled by ``BASTION_FAST_CYTHON_TRACE=1``; ``BASTION_FAST_CYTHON_ANNOTATE=1``
writes the HTML annotation next to the source.
"""

from __future__ import annotations

import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

MODE = os.environ.get("BASTION_FAST_BUILD_EXTENSION", "").strip().lower()
MANDATORY = MODE in {"1", "yes", "true"} or os.environ.get("CIBUILDWHEEL", "0") == "1"
DISABLED = MODE in {"0", "no", "false"} or sys.implementation.name != "cpython"
TRACE = os.environ.get("BASTION_FAST_CYTHON_TRACE") == "1"

# Cython directives and C flags: the only place they are set.
COMPILER_DIRECTIVES = {
    "language_level": 3,
    "boundscheck": False,
    "wraparound": False,
    "nonecheck": False,
    "cdivision": True,
    "initializedcheck": False,
    "embedsignature": True,
    "linetrace": TRACE,
}
if sys.platform == "win32":
    EXTRA_COMPILE_ARGS = ["/O2"]
else:
    EXTRA_COMPILE_ARGS = ["-O2", "-fno-strict-aliasing", "-Wno-unused-function"]
DEFINE_MACROS = [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1")] if TRACE else []


class OptionalBuildExt(build_ext):
    """Turn a failed optional build into a pure-Python install with a clear message."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            if MANDATORY:
                raise
            self._warn(exc)

    def build_extension(self, ext):  # type: ignore[no-untyped-def]
        try:
            super().build_extension(ext)
        except Exception as exc:
            if MANDATORY:
                raise
            self._warn(exc)

    @staticmethod
    def _warn(exc: BaseException) -> None:
        bar = "*" * 75
        print(
            f"\n{bar}\n* bastion-fast: the Cython extension could not be built ({exc}).\n"
            "* Installing the pure-Python implementation: it works, but the data path is much slower.\n"
            "* Install a C compiler and the Python headers, then reinstall, for the accelerated build.\n"
            f"{bar}\n",
            file=sys.stderr,
        )


def extensions() -> list:  # type: ignore[type-arg]
    if DISABLED:
        print("* bastion-fast: pure-Python build (BASTION_FAST_BUILD_EXTENSION=0) *", file=sys.stderr)
        return []
    try:
        from Cython.Build import cythonize
        from setuptools import Extension
    except ImportError:
        if MANDATORY:
            raise
        print("* bastion-fast: Cython missing, pure-Python build *", file=sys.stderr)
        return []
    ext = Extension(
        "bastion_fast._pump",
        ["src/_pump.pyx"],
        include_dirs=["src"],
        extra_compile_args=EXTRA_COMPILE_ARGS,
        define_macros=DEFINE_MACROS,
        optional=not MANDATORY,
    )
    print("* bastion-fast: accelerated build (Cython) *", file=sys.stderr)
    return cythonize(
        [ext],
        compiler_directives=COMPILER_DIRECTIVES,
        annotate=os.environ.get("BASTION_FAST_CYTHON_ANNOTATE") == "1",
        include_path=["src"],
    )


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
