"""``--resume`` after a kill or a signal continues exactly; what a kill can lose; checkpoint saves
are atomic."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from toolkit_helpers import SRC, ckpt_step, cli_env, metric_rows, run_signalled, same_weights

# 20 steps per epoch, 3 epochs, a checkpoint every 3 steps, dropout (so the RNG state matters)
ARGS = [
    "train",
    "--task",
    "adding",
    "--set",
    "task.seq_len=60",
    "--set",
    "task.train_size=320",
    "--set",
    "task.test_size=40",
    "--model",
    "MomentumLSTM",
    "--hidden-size",
    "12",
    "--set",
    "model.num_layers=2",
    "--set",
    "model.dropout=0.25",
    "--batch-size",
    "16",
    "--epochs",
    "3",
    "--evals-per-epoch",
    "2",
    "--checkpoint-every",
    "3",
    "--no-progress",
]


def _kill_after_checkpoint(out, min_step: int) -> int:
    """Start the run in a subprocess and SIGKILL it once last.ckpt has reached ``min_step``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "momentumrnn", *ARGS, "--out", str(out)],
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=str(SRC),
    )
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
    args = ARGS[:i] + ARGS[i + 2 :]  # checkpoints at the evaluations only
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
    args = [
        "train",
        "--task",
        "adding",
        "--set",
        "task.seq_len=8",
        "--set",
        "task.train_size=32",
        "--set",
        "task.test_size=8",
        "--model",
        "LSTM",
        "--hidden-size",
        "4",
        "--batch-size",
        "16",
        "--epochs",
        "2",
        "--no-progress",
        "--out",
        out,
    ]
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


# --- a plateau: 3 steps per epoch, evaluations at steps 3, 6, 9, 12; the test accuracy stays at its
# epoch-1 value (20 test digits), so best.ckpt stays at step 3 while training goes on
PLATEAU = [
    "train",
    "--task",
    "smnist",
    "--set",
    "task.train_size=48",
    "--set",
    "task.test_size=20",
    "--model",
    "MomentumLSTM",
    "--hidden-size",
    "6",
    "--set",
    "model.num_layers=2",
    "--set",
    "model.dropout=0.25",
    "--batch-size",
    "16",
    "--epochs",
    "4",
    "--no-progress",
]
_FULL: dict = {}


def _plateau_full(cli, tmp_path_factory):
    """The uninterrupted run (once per session) that every interrupted one must equal."""
    if "run" not in _FULL:
        run = tmp_path_factory.mktemp("plateau") / "full"
        code, _, err = cli([*PLATEAU, "--out", run])
        assert code == 0, err
        assert [r["step"] for r in metric_rows(run)] == [3, 6, 9, 12]
        _FULL["run"] = run
    return _FULL["run"]


def _assert_equals_full(run, full) -> None:
    assert metric_rows(run) == metric_rows(full)
    for name in ("last.ckpt", "best.ckpt"):
        assert same_weights(run / "checkpoints" / name, full / "checkpoints" / name), name


@pytest.mark.subprocess
def test_kill_9_on_a_plateau_loses_only_the_epoch_in_progress(cli, tmp_path, tmp_path_factory):
    run = tmp_path / "run"
    r = run_signalled([*PLATEAU, "--out", str(run)], tmp_path, "0:10:SIGKILL")  # in epoch 4, step 11
    assert r.returncode == -signal.SIGKILL, r.stderr[-3000:]
    assert ckpt_step(run / "checkpoints" / "last.ckpt") == 9  # the end of epoch 3, not the best (step 3)
    assert ckpt_step(run / "checkpoints" / "best.ckpt") < 9  # a plateau: no improvement since
    code, out, err = cli([*PLATEAU, "--out", run, "--resume"])
    assert code == 0, err
    assert "resuming from step 9" in out
    _assert_equals_full(run, _plateau_full(cli, tmp_path_factory))


def _signal_at(monkeypatch, step: int, signum: int) -> None:
    """This process signals itself when it starts optimizer step ``step + 1`` (in-process runs)."""
    from momentumrnn.toolkit.module import RunModule

    real = RunModule.training_step

    def training_step(self, batch, batch_idx):
        if self.global_step == step:
            os.kill(os.getpid(), signum)
        return real(self, batch, batch_idx)

    monkeypatch.setattr(RunModule, "training_step", training_step)


@pytest.mark.parametrize(
    "at, signum, step",
    [
        (10, signal.SIGTERM, 11),  # the step is saved when it ends
        (8, signal.SIGINT, 9),  # step 9 is followed by an evaluation: saved once that has run
    ],
)
def test_a_signal_saves_the_current_step_exits_128_plus_signal_and_resumes_exactly(
    cli, tmp_path, tmp_path_factory, at, signum, step
):
    run = tmp_path / "run"
    with pytest.MonkeyPatch.context() as mp:
        _signal_at(mp, at, signum)
        code, _, err = cli([*PLATEAU, "--out", run])  # main()'s return value: the process's exit status
    resume = f"momentumrnn train --resume --out {run}"
    assert code == 128 + signum, err
    assert [ln for ln in err.splitlines() if ln.strip()] == [
        (
            f"interrupted: {signal.Signals(signum).name} at step {step}: saved {run / 'checkpoints' / 'last.ckpt'}; "
            f"continue with: {resume}"
        )
    ]
    assert ckpt_step(run / "checkpoints" / "last.ckpt") == step
    assert [x["step"] for x in metric_rows(run)] == [s for s in (3, 6, 9) if s <= step]
    code, out, err = cli(shlex.split(resume)[1:])  # the command of that line, as it is
    assert code == 0, err
    assert f"resuming from step {step}" in out
    _assert_equals_full(run, _plateau_full(cli, tmp_path_factory))


def test_sigusr1_under_slurm_saves_requeues_and_the_requeued_job_resumes(cli, tmp_path, tmp_path_factory, monkeypatch):
    bin_dir, log = tmp_path / "bin", tmp_path / "scontrol.log"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for k, v in {
        "SLURM_NTASKS": "1",
        "SLURM_JOB_NAME": "table1",
        "SLURM_JOB_ID": "4242",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
    }.items():
        monkeypatch.setenv(k, v)
    run = tmp_path / "run"
    with pytest.MonkeyPatch.context() as mp:
        _signal_at(mp, 4, signal.SIGUSR1)
        code, _, err = cli([*PLATEAU, "--out", run])
    assert code == 128 + signal.SIGUSR1, err
    assert [ln for ln in err.splitlines() if ln.strip()] == [
        (
            f"interrupted: SIGUSR1 at step 5: saved {run / 'checkpoints' / 'last.ckpt'}; SLURM job 4242 requeued: it "
            f"resumes by itself (or continue with: momentumrnn train --resume --out {run})"
        )
    ]
    assert log.read_text().split() == ["requeue", "4242"]
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # the requeued job runs the same command again
    code, out, err = cli([*PLATEAU, "--out", run])
    assert code == 0, err
    assert "resuming from step 5" in out
    _assert_equals_full(run, _plateau_full(cli, tmp_path_factory))


def test_every_time_triggered_checkpoint_resumes_exactly(cli, tmp_path, monkeypatch):
    """A checkpoint interval shorter than a step saves after every step: each save resumes to the
    uninterrupted run (a save on a batch that an evaluation follows waits for that evaluation)."""
    from momentumrnn.toolkit.callbacks import AtomicCheckpointIO

    saved = tmp_path / "saved"
    saved.mkdir()
    real = AtomicCheckpointIO.save_checkpoint

    def keep(self, checkpoint, path, storage_options=None):
        real(self, checkpoint, path, storage_options)
        if os.path.basename(path) == "last.ckpt":
            shutil.copy(path, saved / f"{len(os.listdir(saved)):02d}.ckpt")

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", keep)
    # 5 steps per epoch, evaluations after steps 2 and 4 of each epoch (none at the epoch's end)
    args = [
        "train",
        "--task",
        "adding",
        "--set",
        "task.seq_len=8",
        "--set",
        "task.train_size=80",
        "--set",
        "task.test_size=16",
        "--model",
        "MomentumLSTM",
        "--hidden-size",
        "6",
        "--set",
        "model.num_layers=2",
        "--set",
        "model.dropout=0.25",
        "--batch-size",
        "16",
        "--epochs",
        "2",
        "--evals-per-epoch",
        "2",
        "--checkpoint-minutes",
        "1e-9",
        "--no-progress",
    ]
    full = tmp_path / "full"
    assert cli([*args, "--out", full])[0] == 0
    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", real)
    steps = [ckpt_step(p) for p in sorted(saved.iterdir())]
    assert sorted(set(steps)) == list(range(1, 11)) and steps == sorted(steps)  # every step
    assert [r["step"] for r in metric_rows(full)] == [2, 4, 7, 9, 10]
    for p in sorted(saved.iterdir()):
        if ckpt_step(p) > 6:
            break
        run = tmp_path / p.stem
        shutil.copytree(full, run)  # the run as a kill right after this save would leave it
        shutil.copy(p, run / "checkpoints" / "last.ckpt")
        code, _out, err = cli([*args, "--out", run, "--resume"])
        assert code == 0, err
        assert metric_rows(run) == metric_rows(full), p.name
        assert same_weights(run / "checkpoints" / "last.ckpt", full / "checkpoints" / "last.ckpt"), p.name
