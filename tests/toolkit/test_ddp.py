"""Multi-process training through Lightning's DDP (2 CPU processes, gloo)."""

from __future__ import annotations

import json

import pytest
from toolkit_helpers import metric_rows, run_subprocess

# uneven sizes on purpose: 70 = 4 full global batches of 16 + 6, 21 test examples
ARGS = [
    "train",
    "--task",
    "adding",
    "--set",
    "task.seq_len=16",
    "--set",
    "task.train_size=70",
    "--set",
    "task.test_size=21",
    "--model",
    "MomentumLSTM",
    "--hidden-size",
    "8",
    "--batch-size",
    "16",
    "--epochs",
    "2",
    "--evals-per-epoch",
    "2",
    "--no-progress",
]


@pytest.mark.ddp
@pytest.mark.subprocess
def test_two_processes_match_one_up_to_the_batch_split(cli, tmp_path):
    ddp = tmp_path / "ddp"
    r = run_subprocess([*ARGS, "--devices", "2", "--out", str(ddp)], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("MomentumLSTM on adding") == 1  # only rank 0 talks
    one = tmp_path / "one"
    code, _, err = cli([*ARGS, "--out", one])
    assert code == 0, err
    a, b = metric_rows(ddp), metric_rows(one)
    # 5 batches per epoch, an evaluation every 2 batches, and one of the final weights
    assert [r["step"] for r in a] == [r["step"] for r in b] == [2, 4, 7, 9, 10]
    for ra, rb in zip(a, b):
        for k in ("train_loss", "test_loss"):
            assert ra[k] == pytest.approx(rb[k], rel=1e-5, abs=1e-7), (k, ra, rb)
    assert json.loads((ddp / "summary.json").read_text())["status"] == "completed"
    assert (ddp / "checkpoints" / "last.ckpt").exists()
