"""Keep freed memory in the process: every process the toolkit starts calls
:func:`keep_freed_memory` first thing (``momentumrnn`` / ``python -m momentumrnn``, hence also the
``compare`` / ``sweep`` / ``demo`` workers and the DDP ranks, which re-run that command).

Why: a forward + backward of a recurrent layer allocates its workspaces (hundreds of MB at
sequential-MNIST size) in blocks above glibc's mmap threshold, so by default every training step
maps them afresh and the kernel zeroes every page again: in ``momentumrnn demo`` (glibc 2.36, two
cores) a third of the CPU time was system time (45 million minor page faults). With freed memory
kept, the same demo ran 1.3-1.4x faster with every reported number identical (docs/benchmarks.md,
"The toolkit's runs: freed memory kept").

How, by what the platform offers:

* glibc (Linux): ``mallopt(M_MMAP_THRESHOLD)`` and ``mallopt(M_TRIM_THRESHOLD)`` set to 2 GiB, in
  the running process (no restart): blocks up to 2 GiB come from the heap and freed ones stay
  there for the next step, as under a caching allocator. The process keeps its peak heap.
* jemalloc, tcmalloc or mimalloc already in the process (``LD_PRELOAD``): left alone, they cache.
* ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` / ``GLIBC_TUNABLES`` set by the user:
  left alone (the user chose).
* anything else (macOS, Windows, musl): nothing to set; the system allocator as it is.

Opt out: ``MOMENTUMRNN_ALLOCATOR=system`` in the environment (inherited by the worker processes).
:func:`describe` is the one line each run prints (``memory: ...``).

Library users get the same in their own scripts with the environment variables
``MALLOC_MMAP_THRESHOLD_=2147483647 MALLOC_TRIM_THRESHOLD_=2147483647`` (glibc), a preloaded
jemalloc / tcmalloc, or by calling :func:`keep_freed_memory` at the start (README, "Performance").
Only the standard library is imported here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys
from collections.abc import Mapping

__all__ = ["keep_freed_memory", "describe", "OPT_OUT", "THRESHOLD"]

#: the environment variable of the opt-out (value ``system``)
OPT_OUT = "MOMENTUMRNN_ALLOCATOR"
#: bytes; the largest value mallopt takes (an int): blocks up to it come from the heap, and up to
#: it of free memory stays at the heap's top instead of going back to the system
THRESHOLD = 2**31 - 1
# glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_CACHING = {"mallctl": "jemalloc", "tc_malloc": "tcmalloc", "mi_malloc": "mimalloc"}
_GLIBC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")

_state: dict = {"applied": False, "line": None}


def _process_symbols() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None)
    except OSError:  # Windows: no handle to the process's own symbols
        return None


def _caching_allocator(proc: ctypes.CDLL | None) -> str | None:
    """The name of a caching allocator linked or preloaded into this process, if any."""
    if proc is None:
        return None
    for symbol, name in _CACHING.items():
        if hasattr(proc, symbol):
            return name
    return None


def _user_glibc_settings(environ: Mapping[str, str]) -> list[str]:
    names = [v for v in _GLIBC_ENV if environ.get(v)]
    if "glibc.malloc" in environ.get("GLIBC_TUNABLES", ""):
        names.append("GLIBC_TUNABLES")
    return names


def _is_glibc() -> bool:
    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def _default_line(environ: Mapping[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    proc = _process_symbols()
    cache = _caching_allocator(proc)
    if cache:
        return f"{cache} (already in the process; it keeps freed memory)"
    if _is_glibc():
        user = _user_glibc_settings(environ)
        if user:
            return f"glibc malloc as set in the environment ({', '.join(user)})"
        return "glibc malloc, default settings (large blocks returned to the system when freed)"
    return f"the system allocator ({sys.platform}; no setting applied)"


def keep_freed_memory(environ: Mapping[str, str] | None = None) -> str:
    """Apply the setting this platform offers (once per process; later calls only describe it) and
    return the one-line description of the allocator in use."""
    environ = os.environ if environ is None else environ
    if _state["applied"]:
        return _state["line"]
    line = None
    if environ.get(OPT_OUT, "").strip().lower() == "system":
        line = f"{_default_line(environ)}; {OPT_OUT}=system"
    elif _is_glibc() and not _caching_allocator(_process_symbols()) and not _user_glibc_settings(environ):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            ok = libc.mallopt(_M_MMAP_THRESHOLD, THRESHOLD) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, THRESHOLD) == 1
        except (OSError, AttributeError):
            ok = False
        if ok:
            line = (
                f"glibc malloc keeping freed memory (mallopt M_MMAP_THRESHOLD = M_TRIM_THRESHOLD = 2 GiB; "
                f"{OPT_OUT}=system to opt out)"
            )
        else:
            line = f"{_default_line(environ)}; mallopt refused the thresholds"
    if line is None:
        line = _default_line(environ)
    _state.update(applied=True, line=line)
    return line


def describe() -> str:
    """The allocator in use, in one line (what :func:`keep_freed_memory` did, if it ran)."""
    return _state["line"] if _state["applied"] else _default_line()
