"""Helpers of the toolkit tests: tiny settings, subprocess CLI runs, file digests.

(Kept out of conftest.py so that ``import`` never picks another directory's conftest.)"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

# a few batches of a tiny model: every run below takes about a second
TINY_ADDING = [
    "--task", "adding", "--set", "task.seq_len=12", "--set", "task.train_size=64",
    "--set", "task.test_size=24", "--hidden-size", "8", "--batch-size", "16", "--epochs", "2",
    "--no-progress",
]
TINY_SMNIST = [
    "--task", "smnist", "--set", "task.train_size=48", "--set", "task.test_size=20",
    "--hidden-size", "6", "--batch-size", "16", "--epochs", "1", "--no-progress",
]


def cli_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("OMP_NUM_THREADS", "1")
    for var in ("LOCAL_RANK", "NODE_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    return env


def run_subprocess(args: list[str], cwd: Path, timeout: float = 240, **kw) -> subprocess.CompletedProcess:
    """``python -m momentumrnn ARGS`` in a fresh process."""
    return subprocess.run([sys.executable, "-m", "momentumrnn", *args], cwd=cwd, env=cli_env(),
                          capture_output=True, text=True, timeout=timeout, **kw)


def metric_rows(run_dir: Path) -> list[dict]:
    """metrics.csv rows without the wall-clock column."""
    from momentumrnn.toolkit.runfiles import read_metrics

    return [{k: v for k, v in r.items() if k != "time_s"} for r in read_metrics(run_dir)]


def tree_digest(root: Path) -> dict[str, str]:
    """path -> sha256 of every file under ``root`` (to prove nothing was changed)."""
    out = {}
    for p in sorted(Path(root).rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out
