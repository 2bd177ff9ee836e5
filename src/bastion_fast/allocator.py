"""glibc malloc tuning for processes that move bulk data: fixed mmap and trim thresholds.

Why this exists: every read the pump turns into frames, and every batch of ciphertext uvloop's TLS layer hands to
the socket, is a transient buffer of 64 KiB to a few hundred KiB. glibc serves allocations above its *mmap
threshold* (128 KiB at start, raised dynamically as such blocks are freed) with a fresh ``mmap`` and gives the
heap's free top back to the kernel whenever it exceeds the *trim threshold*. With buffers of varying size that
alternate in the heap, a fresh process keeps doing both: every buffer is new pages, every page a fault, a zeroing
and a cgroup charge. Measured on the 2-core bench box (``bench/README.md``): a fresh ``bastion-fast tunnel``
uploading 512 MiB spent 1.42–1.59 CPU-s/GB, two thirds of it in the kernel's page-fault path; with the thresholds
fixed as below, 0.64–0.70 CPU-s/GB.

The fix is two ``mallopt`` calls at process start (the CLI does it in :func:`bastion_fast.loop.run`; library users
who embed a tunnel can call :func:`tune_allocator` themselves — it changes a process-wide setting, so the library
never does it on import). Freed buffers then stay in the heap for the next read; what stays resident is bounded by
the data path's own buffer limits plus ``trim_threshold``.

Nothing happens (and ``False`` is returned) where it cannot help or the user decided otherwise: not Linux, a C
library without glibc's ``mallopt`` (musl accepts the call and ignores it: reported as ``False``), glibc malloc
settings already given in the environment (``GLIBC_TUNABLES`` naming ``glibc.malloc``, ``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_``), or ``BASTION_FAST_MALLOC_TUNING=0``.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

__all__ = ["DEFAULT_MMAP_THRESHOLD", "DEFAULT_TRIM_THRESHOLD", "is_tuned", "tune_allocator"]

log = logging.getLogger("bastion_fast.allocator")

# glibc <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

DEFAULT_MMAP_THRESHOLD = 4 << 20  # above the largest transient buffer: a 1 MiB frame size × a 256 KiB read + TLS
DEFAULT_TRIM_THRESHOLD = 8 << 20  # free heap top kept for reuse before it is returned to the kernel

_STATE: dict[str, bool] = {}  # "tuned": the outcome of the one attempt per process


def _user_configured_malloc() -> bool:
    env = os.environ
    if env.get("BASTION_FAST_MALLOC_TUNING", "").strip().lower() in ("0", "no", "false", "off"):
        return True
    if "glibc.malloc" in env.get("GLIBC_TUNABLES", ""):
        return True
    return any(name in env for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"))


def tune_allocator(mmap_threshold: int = DEFAULT_MMAP_THRESHOLD, trim_threshold: int = DEFAULT_TRIM_THRESHOLD) -> bool:
    """Fix glibc's mmap and trim thresholds for this process (once); ``True`` when glibc took both settings."""
    if "tuned" in _STATE:
        return _STATE["tuned"]
    _STATE["tuned"] = False
    if not sys.platform.startswith("linux") or _user_configured_malloc():
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        gnu_get_libc_version = libc.gnu_get_libc_version  # glibc only: musl's mallopt is a no-op
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    del gnu_get_libc_version
    tuned = bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold) == 1 and mallopt(_M_TRIM_THRESHOLD, trim_threshold) == 1)
    _STATE["tuned"] = tuned
    log.debug("glibc malloc thresholds fixed (mmap %d, trim %d): %s", mmap_threshold, trim_threshold, tuned)
    return tuned


def is_tuned() -> bool | None:
    """What :func:`tune_allocator` did in this process: ``None`` if it was never called."""
    return _STATE.get("tuned")
