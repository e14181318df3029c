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
    "--task",
    "adding",
    "--set",
    "task.seq_len=12",
    "--set",
    "task.train_size=64",
    "--set",
    "task.test_size=24",
    "--hidden-size",
    "8",
    "--batch-size",
    "16",
    "--epochs",
    "2",
    "--no-progress",
]
TINY_SMNIST = [
    "--task",
    "smnist",
    "--set",
    "task.train_size=48",
    "--set",
    "task.test_size=20",
    "--hidden-size",
    "6",
    "--batch-size",
    "16",
    "--epochs",
    "1",
    "--no-progress",
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
    return subprocess.run(
        [sys.executable, "-m", "momentumrnn", *args],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


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


# A process of the CLI that signals itself (or is killed) when its rank starts a given optimizer step:
# MRNN_TEST_SIGNAL="RANK:STEP:SIGNAL" (e.g. "0:9:SIGKILL"; RANK is the local rank, 0 without DDP).
# A sitecustomize module, so that DDP workers started by Lightning install it too.
SIGNAL_HOOK = """
import os
if os.environ.get("MRNN_TEST_SIGNAL"):
    import signal
    from momentumrnn.toolkit import module as _module
    _rank, _step, _sig = os.environ["MRNN_TEST_SIGNAL"].split(":")
    _train_step = _module.RunModule.training_step
    def training_step(self, batch, batch_idx):
        if self.global_step == int(_step) and os.environ.get("LOCAL_RANK", "0") == _rank:
            os.kill(os.getpid(), getattr(signal, _sig))
        return _train_step(self, batch, batch_idx)
    _module.RunModule.training_step = training_step
"""


def signal_env(tmp_path: Path, spec: str, **extra: str) -> dict:
    """The environment of a CLI process that signals itself as ``spec`` says (see SIGNAL_HOOK)."""
    hook = tmp_path / "signal-hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(SIGNAL_HOOK)
    env = cli_env()
    env["PYTHONPATH"] = f"{hook}{os.pathsep}{env['PYTHONPATH']}"
    env["MRNN_TEST_SIGNAL"] = spec
    env.update(extra)
    return env


def run_signalled(args: list[str], tmp_path: Path, spec: str, timeout: float = 240, **extra: str):
    """``python -m momentumrnn ARGS`` that signals itself at a step: the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", "momentumrnn", *args],
        cwd=tmp_path,
        env=signal_env(tmp_path, spec, **extra),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ckpt_step(path: Path) -> int:
    import torch

    return int(torch.load(path, weights_only=True)["global_step"])


def same_weights(a: Path, b: Path) -> bool:
    """Two checkpoints hold the same step and bit-identical weights."""
    import torch

    x, y = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    return (
        x["global_step"] == y["global_step"]
        and x["state_dict"].keys() == y["state_dict"].keys()
        and all(torch.equal(x["state_dict"][k], y["state_dict"][k]) for k in x["state_dict"])
    )
