"""Fixtures of the toolkit tests (helpers live in toolkit_helpers.py)."""

from __future__ import annotations

import os

import pytest
import torch

try:  # the toolkit needs the `train` extra; without it these tests are not collected
    import lightning  # noqa: F401
    import yaml  # noqa: F401
except ImportError:  # pragma: no cover
    collect_ignore_glob = ["test_*.py"]


def pytest_configure(config):
    config.addinivalue_line("markers", "subprocess: starts the CLI in a separate process (slower)")
    config.addinivalue_line("markers", "ddp: multi-process training through Lightning DDP (gloo, CPU)")


@pytest.fixture(autouse=True)
def _isolated_process_state():
    """One thread (tiny models run fastest so; two crawl when other work shares the CPU), and the
    process-wide state a run changes (deterministic-algorithm flag, warning filters, environment
    variables such as Lightning's, the RNG) restored afterwards, so that other test directories of
    the same session are not affected."""
    import warnings

    threads = torch.get_num_threads()
    det = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    env = dict(os.environ)
    rng = torch.get_rng_state()
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(det[0], warn_only=det[1])
    os.environ.clear()
    os.environ.update(env)
    torch.set_rng_state(rng)


@pytest.fixture
def cli(capsys, monkeypatch, tmp_path):
    """Run the CLI in this process: ``code, out, err = cli(args)`` (cwd = tmp_path)."""
    from momentumrnn.__main__ import main

    monkeypatch.chdir(tmp_path)

    def run(args: list[str]):
        capsys.readouterr()
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run
