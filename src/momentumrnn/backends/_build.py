"""Build and load the C++ time loop (``csrc/gated_loop.cpp``) on the user's machine, at first use.

No extra install step: the source ships with the package and is compiled by the system's C++
compiler against the installed torch (its headers and libraries; no ninja, no pybind11), once per
(sources, torch version, compiler, flags, CPU capability), into a cache directory:
``$MOMENTUMRNN_EXTENSIONS_DIR``, else ``$TORCH_EXTENSIONS_DIR/momentumrnn``, else
``~/.cache/torch_extensions/momentumrnn``. The vector instruction set is the one torch itself
detected on the CPU the process runs on (``torch.backends.cpu.get_cpu_capability()``: AVX512, AVX2,
or none; torch's own kernels are chosen the same way), on top of the x86-64 baseline, never an
assumption about the build machine; it is part of the cache key, so machines sharing a home
directory each get a build that runs on them. The recurrent GEMM's micro-kernel is not compiled
here at all: oneDNN generates it at run time for the CPU at hand (``csrc/panels.h``).

If there is no compiler, the build fails, the platform is not supported (Windows) or
``MOMENTUMRNN_NO_EXTENSION=1`` is set, :func:`load` returns ``None`` and the backends fall back to
the Python loop (:mod:`!momentumrnn.backends.fused`): the same results, slower. A failure is
reported once, as a warning that says why; the opt-out is silent. :func:`status` says which.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from torch._ops import _OpNamespace

__all__ = ["load", "status", "SOURCE"]

SOURCE = Path(__file__).with_name("csrc") / "gated_loop.cpp"
#: every file of the C++ source (the .cpp and the headers it includes): all of them are in the cache key
SOURCES = tuple(sorted(SOURCE.parent.glob("*.[ch]*")))
_NAMESPACE = "momentumrnn_ext"

_lock = threading.Lock()
_state: dict = {"tried": False, "ops": None, "reason": "not built yet", "path": None}

# The flags torch's own build uses for its kernels of each capability (x86); anything else builds
# ATen's portable vector types.
_CAPABILITY_FLAGS = {
    "AVX512": [
        "-mavx512f",
        "-mavx512bw",
        "-mavx512vl",
        "-mavx512dq",
        "-mavx2",
        "-mfma",
        "-DCPU_CAPABILITY=AVX512",
        "-DCPU_CAPABILITY_AVX512",
    ],
    "AVX2": ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"],
}


def _capability() -> str:
    try:
        cap = str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # older torch
        return "DEFAULT"
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return "DEFAULT"
    return cap if cap in _CAPABILITY_FLAGS else "DEFAULT"


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cache_dir() -> Path:
    if os.environ.get("MOMENTUMRNN_EXTENSIONS_DIR"):
        return Path(os.environ["MOMENTUMRNN_EXTENSIONS_DIR"])
    base = os.environ.get("TORCH_EXTENSIONS_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "torch_extensions"
    )
    return Path(base) / "momentumrnn"


def _flags(std: str) -> list:
    """The compiler flags: the instruction set from the capability torch detected on this CPU, on top
    of the x86-64 baseline (so that a compiler configured with another default ``-march``, e.g. the
    build machine's, cannot put other instructions in)."""
    flags = [
        "-O3",
        f"-std={std}",
        "-fPIC",
        "-shared",
        "-w",
        "-DNDEBUG",
        "-ffp-contract=off",
        "-fvisibility=hidden",
        "-fvisibility-inlines-hidden",
        f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
    ]
    if platform.machine().lower() in ("x86_64", "amd64"):
        flags += ["-march=x86-64", "-mtune=generic"]
    flags += _CAPABILITY_FLAGS.get(_capability(), [])
    if sys.platform == "darwin":
        flags += ["-undefined", "dynamic_lookup"]
    else:
        flags += ["-fopenmp"]  # the loop's thread team, and ATen's parallel_for, run serially without it
    return flags


def _command(cxx: str, std: str, out: Path) -> list:
    from torch.utils import cpp_extension

    inc = [f"-I{p}" for p in cpp_extension.include_paths()]
    libs = [f"-L{p}" for p in cpp_extension.library_paths()] + ["-lc10", "-ltorch_cpu"]
    return [cxx, *_flags(std), *inc, str(SOURCE), *libs, "-o", str(out)]


def _cache_key(cxx: str, version: str) -> str:
    """What the built library depends on: the sources, torch, the compiler, its flags (the
    instruction set among them), the platform."""
    return hashlib.sha256(
        b"\0".join(
            [
                *(p.read_bytes() for p in SOURCES),
                torch.__version__.encode(),
                cxx.encode(),
                version.encode(),
                _capability().encode(),
                " ".join(_flags("c++20") + _flags("c++17")).encode(),
                sys.platform.encode(),
                platform.machine().encode(),
            ]
        )
    ).hexdigest()[:16]


def _build() -> tuple:
    """``(path, None)`` of a built library, or ``(None, reason)``."""
    if os.environ.get("MOMENTUMRNN_NO_EXTENSION", "") not in ("", "0"):
        return None, "disabled by MOMENTUMRNN_NO_EXTENSION"
    if sys.platform.startswith("win"):
        return None, "not built on Windows"
    cxx = _compiler()
    if cxx is None:
        return None, "no C++ compiler found (set CXX, or install g++ / clang++)"
    try:
        version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"the C++ compiler {cxx} does not run ({e})"
    key = _cache_key(cxx, version)
    cache = _cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cache, delete=True):
            pass
    except OSError:
        cache = Path(tempfile.gettempdir()) / f"momentumrnn-ext-{os.getuid() if hasattr(os, 'getuid') else 0}"
        cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"gated_loop_{key}.so"
    if target.exists():
        return target, None
    errors = []
    for std in ("c++20", "c++17"):
        tmp = cache / f".gated_loop_{key}.{os.getpid()}.{threading.get_ident()}.so"
        try:
            res = subprocess.run(_command(cxx, std, tmp), capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.SubprocessError) as e:
            errors.append(str(e))
            continue
        if res.returncode == 0 and tmp.exists():
            os.replace(tmp, target)  # atomic: concurrent builders each install a complete file
            return target, None
        tmp.unlink(missing_ok=True)
        lines = (res.stderr or res.stdout or "").strip().splitlines()
        errors.append(next((ln for ln in lines if "error" in ln), lines[-1] if lines else "(no output)"))
    return None, f"compiling {SOURCE.name} with {cxx} failed: {errors[-1]}"


def load() -> _OpNamespace | None:
    """The compiled operators (``torch.ops.momentumrnn_ext``), building them on first use; ``None``
    where they cannot be built (the reason: :func:`status`)."""
    if _state["tried"]:
        return _state["ops"]
    with _lock:
        if _state["tried"]:
            return _state["ops"]
        path, reason = _build()
        ops: _OpNamespace | None = None
        if path is not None:
            try:
                torch.ops.load_library(str(path))
                ops = getattr(torch.ops, _NAMESPACE)
                ops.forward, ops.backward  # noqa: B018 - resolve both now
            except Exception as e:  # any failure means: use the Python loop
                ops, reason = None, f"loading {path} failed: {e}"
        _state.update(tried=True, ops=ops, reason=reason or "loaded", path=str(path) if ops else None)
        if ops is None and not reason.startswith("disabled"):
            warnings.warn(
                f"momentumrnn: the compiled CPU time loop is not available ({reason}); "
                "Adam / RMSProp / Nesterov layers run on the Python loop (same results, slower), "
                "heavy ball / restart on the native kernel. "
                "Set MOMENTUMRNN_NO_EXTENSION=1 to skip the build and this warning.",
                RuntimeWarning,
                stacklevel=3,
            )
        return ops


def status() -> dict:
    """``{"available": bool, "reason": str, "path": str | None, "capability": str}`` (builds if needed)."""
    ops = load()
    return {
        "available": ops is not None,
        "reason": _state["reason"],
        "path": _state["path"],
        "capability": _capability(),
    }
