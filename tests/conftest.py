"""What the whole suite needs to run on every core (pytest-xdist: ``-n auto --dist load`` in
pyproject.toml, so the README's ``python -m pytest -q`` uses one worker per CPU).

* **The C++ time loop is built once, before the workers start** (in the controlling process):
  otherwise each worker compiles ``gated_loop.cpp`` at the same moment, when it collects
  ``test_fast_paths.py`` (about 20 s of CPU each, the same file built N times over; the cache is
  installed atomically, so the result would be right, only slow). The workers then load the cached
  library; subprocesses of the CLI tests inherit the cache directory through the environment.
* **One torch thread per worker** when the workers share the cores (N workers x torch's default
  of N threads oversubscribe the CPU: OpenMP's waiting threads spin and slow every worker). An
  ``OMP_NUM_THREADS`` you set is kept; tests that need several threads still set them.
* **Multi-process DDP tests (marker ``ddp``) run alone**: while one runs, no other test runs in any
  worker (an exclusive file lock; every other test holds it shared). They start two or more
  processes that talk over localhost ports, and their timing matters: Lightning's launcher kills
  the whole job (SIGKILL) 5 s after a worker dies (``_ChildProcessObserver``), so the dead-worker
  test needs the main process to report and exit within 5 s, which a CPU shared with another
  worker's tests does not guarantee (seen: exit code -9 instead of 1 at load 10 on 2 cores). Alone,
  they also never race each other for a "free" rendezvous port.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile

import pytest

_LOCK_ENV = "MOMENTUMRNN_TEST_LOCK"


def _xdist_controller(config) -> bool:
    """True in the process that distributes tests to xdist workers (not in a worker, not without xdist)."""
    if hasattr(config, "workerinput"):
        return False
    try:
        n = config.getoption("numprocesses")
    except ValueError:  # xdist not installed or disabled (-p no:xdist)
        return False
    return bool(n) and not config.getoption("collectonly")


def pytest_configure(config):
    if _xdist_controller(config):
        from momentumrnn.backends import _build

        _build.load()  # builds, or decides the fallback, once; the workers find it in the cache
        fd, path = tempfile.mkstemp(prefix="momentumrnn-tests-", suffix=".lock")
        os.close(fd)
        os.environ[_LOCK_ENV] = path  # the workers, started after this, inherit it
        config._momentumrnn_lock = path
    if hasattr(config, "workerinput") and "OMP_NUM_THREADS" not in os.environ:
        import torch

        workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        torch.set_num_threads(max(1, cores // workers))


def pytest_unconfigure(config):
    path = getattr(config, "_momentumrnn_lock", None)
    if path:
        for p in (path, path + ".gate"):
            with contextlib.suppress(OSError):
                os.unlink(p)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Hold the suite's lock around a test (set-up, call, tear-down): exclusively for ``ddp`` tests,
    shared for the others. Without xdist (no lock file) tests run one at a time anyway."""
    path = os.environ.get(_LOCK_ENV)
    if not path or not os.path.exists(path):
        return (yield)
    exclusive = item.get_closest_marker("ddp") is not None
    # A turnstile first, so that a waiting exclusive test is not starved by the other workers'
    # stream of shared holders: it holds the gate while it waits, and new tests queue behind it.
    with open(path + ".gate", "a") as gate, open(path) as lock:
        fcntl.flock(gate, fcntl.LOCK_EX)
        fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        fcntl.flock(gate, fcntl.LOCK_UN)
        try:
            return (yield)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
