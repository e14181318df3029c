"""``--resume`` after a kill continues exactly; checkpoint saves are atomic."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from toolkit_helpers import SRC, cli_env, metric_rows

# 20 steps per epoch, 3 epochs, a checkpoint every 3 steps, dropout (so the RNG state matters)
ARGS = [
    "train", "--task", "adding", "--set", "task.seq_len=60", "--set", "task.train_size=320",
    "--set", "task.test_size=40", "--model", "MomentumLSTM", "--hidden-size", "12", "--set", "model.num_layers=2",
    "--set", "model.dropout=0.25", "--batch-size", "16", "--epochs", "3", "--evals-per-epoch", "2",
    "--checkpoint-every", "3", "--no-progress",
]


def _kill_after_checkpoint(out, min_step: int) -> int:
    """Start the run in a subprocess and SIGKILL it once last.ckpt has reached ``min_step``."""
    proc = subprocess.Popen([sys.executable, "-m", "momentumrnn", *ARGS, "--out", str(out)], env=cli_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=str(SRC))
    last = out / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    step = -1
    try:
        while proc.poll() is None and time.time() < deadline:
            if last.exists():
                try:
                    step = torch.load(last, weights_only=True)["global_step"]
                except Exception:  # being replaced right now
                    step = -1
                if step >= min_step:
                    proc.send_signal(signal.SIGKILL)
                    break
            time.sleep(0.01)
    finally:
        if proc.poll() is None and time.time() >= deadline:
            proc.kill()
        _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, f"the run was not killed mid-way (rc {proc.returncode}): {err[-2000:]}"
    return step


@pytest.mark.subprocess
def test_resume_after_kill_matches_an_uninterrupted_run(cli, tmp_path):
    killed = tmp_path / "killed"
    step = _kill_after_checkpoint(killed, min_step=7)
    ckpt_step = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert step <= ckpt_step < 60  # killed mid-run (most checkpoints are mid-epoch)

    code, out, err = cli([*ARGS, "--out", killed, "--resume"])
    assert code == 0, err
    assert f"resuming from step {ckpt_step}" in out

    full = tmp_path / "full"
    code, _, err = cli([*ARGS, "--out", full])
    assert code == 0, err

    assert metric_rows(killed) == metric_rows(full)
    assert [r["step"] for r in metric_rows(full)] == [10, 20, 30, 40, 50, 60]
    a = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(full / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 60
    for k in b["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k


def test_stop_at_max_steps_mid_epoch_then_resume_matches_an_uninterrupted_run(cli, tmp_path):
    """Lightning marks the epoch cut by max_steps as done; the resume must still train its rest."""
    i = ARGS.index("--checkpoint-every")
    args = ARGS[:i] + ARGS[i + 2:]  # checkpoints at the evaluations only
    full = tmp_path / "full"
    assert cli([*args, "--out", full])[0] == 0
    part = tmp_path / "part"
    code, _, err = cli([*args, "--max-steps", "7", "--out", part])  # stops 7 steps into epoch 1
    assert code == 0, err
    code, out, err = cli([*args, "--out", part, "--resume"])
    assert code == 0, err
    assert "resuming from step 7" in out
    rows = [r for r in metric_rows(part) if r["step"] != 7]  # the extra evaluation at the stop
    assert rows == metric_rows(full)  # every later evaluation, bit for bit
    assert [r["step"] for r in rows] == [10, 20, 30, 40, 50, 60]
    a = torch.load(part / "checkpoints" / "best.ckpt", weights_only=True)
    b = torch.load(full / "checkpoints" / "best.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"]
    for k in b["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k


def test_resume_of_a_finished_run_changes_nothing(cli, tmp_path):
    out = tmp_path / "done"
    args = ["train", "--task", "adding", "--set", "task.seq_len=8", "--set", "task.train_size=32",
            "--set", "task.test_size=8", "--model", "LSTM", "--hidden-size", "4", "--batch-size", "16",
            "--epochs", "2", "--no-progress", "--out", out]
    assert cli(args)[0] == 0
    before = metric_rows(out)
    ckpt = (out / "checkpoints" / "last.ckpt").read_bytes()
    code, _, err = cli([*args, "--resume"])
    assert code == 0, err
    assert metric_rows(out) == before
    assert (out / "checkpoints" / "last.ckpt").read_bytes() == ckpt
    # a resumed run may be extended
    code, _, err = cli([*args[:-2], "--epochs", "3", "--out", out, "--resume"])
    assert code == 0, err
    assert [r["step"] for r in metric_rows(out)] == [2, 4, 6]
    assert metric_rows(out)[:2] == before


def test_checkpoint_save_is_atomic(tmp_path, monkeypatch):
    from momentumrnn.toolkit.callbacks import AtomicCheckpointIO

    io = AtomicCheckpointIO()
    path = tmp_path / "ck" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "global_step": 1}, path)
    good = path.read_bytes()

    real_save = torch.save

    def crash(obj, f, *a, **k):  # write half a checkpoint, then die
        real_save(obj, f, *a, **k)
        f.truncate(10)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "global_step": 2}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert path.read_bytes() == good
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temporary left behind
    assert io.load_checkpoint(path)["global_step"] == 1


def test_checkpoint_loading_refuses_pickled_objects(tmp_path):
    from momentumrnn.toolkit.callbacks import load_checkpoint_file
    from momentumrnn.toolkit.errors import ToolkitError

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo should-not-run",))

    bad = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "global_step": 0, "x": Payload()}, bad)
    with pytest.raises(ToolkitError, match="corrupt or not a momentumrnn checkpoint"):
        load_checkpoint_file(bad)
