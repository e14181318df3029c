"""Beyond one machine: a dead DDP worker is reported in one line, a signal to one rank stops them all
at the same step, and the resumed run (interrupted epoch's train metrics included) equals an
uninterrupted one bit for bit; two node ranks on localhost (gloo) equal one process; compare writes a
job list of self-contained commands."""

from __future__ import annotations

import re
import shlex
import signal
import socket
import subprocess
import sys

import pytest
import yaml
from toolkit_helpers import TINY_ADDING, ckpt_step, cli_env, metric_rows, run_signalled, run_subprocess, same_weights

from momentumrnn.toolkit.cli import _overrides, build_parser
from momentumrnn.toolkit.config import resolve

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
    "--no-progress",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _close(a: list[dict], b: list[dict]) -> None:
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        for k in ("train_loss", "test_loss"):
            assert ra[k] == pytest.approx(rb[k], rel=1e-5, abs=1e-7), (k, ra, rb)


@pytest.mark.ddp
@pytest.mark.subprocess
def test_ddp_sigterm_to_one_rank_then_a_killed_worker_lose_nothing_and_resume_exactly(tmp_path):
    run, resume = tmp_path / "run", f"momentumrnn train --resume --out {tmp_path / 'run'}"
    # 1. only rank 1 gets SIGTERM (during step 3): the ranks agree, step 3 is saved, every rank stops
    r = run_signalled([*ARGS, "--devices", "2", "--out", str(run)], tmp_path, "1:2:SIGTERM")
    assert r.returncode == 128 + signal.SIGTERM, r.stderr[-3000:]
    assert [ln for ln in r.stderr.splitlines() if ln.strip()] == [
        f"interrupted: SIGTERM at step 3: saved {run / 'checkpoints' / 'last.ckpt'}; continue with: {resume}"
    ]
    assert ckpt_step(run / "checkpoints" / "last.ckpt") == 3
    # 2. the resumed run loses rank 1 to SIGKILL (as by the OOM killer) when it starts step 8, in epoch 2
    r = run_signalled(shlex.split(resume)[1:], tmp_path, "1:7:SIGKILL")
    assert "resuming from step 3" in r.stdout
    assert r.returncode == 1, r.stderr[-3000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr[-3000:]
    assert re.fullmatch(
        rf"error: DDP rank 1 died \(killed by SIGKILL\) at step [78]; training stopped\. Continue "
        rf"from the last checkpoint \(step 5\) with: {re.escape(resume)}",
        lines[0],
    ), lines[0]
    assert ckpt_step(run / "checkpoints" / "last.ckpt") == 5  # the end of epoch 1
    # 3. resumed again, it ends as the uninterrupted run: the interrupted epochs' running train sums
    # were carried over both processes, bit for bit
    r = run_subprocess(shlex.split(resume)[1:], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming from step 5" in r.stdout
    full = tmp_path / "full"
    r = run_subprocess([*ARGS, "--devices", "2", "--out", str(full)], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert [x["step"] for x in metric_rows(full)] == [5, 10]
    assert metric_rows(run) == metric_rows(full)
    for name in ("last.ckpt", "best.ckpt"):
        assert same_weights(run / "checkpoints" / name, full / "checkpoints" / name), name


@pytest.mark.ddp
@pytest.mark.subprocess
@pytest.mark.parametrize("launcher", ["env", "torchrun"])
def test_two_node_ranks_on_localhost_equal_one_process(cli, tmp_path, launcher):
    """Multi-node DDP as on a cluster (SLURM / torchrun set the same variables), simulated with two
    node ranks of one process each on this machine, gloo over localhost."""
    out, port = tmp_path / "nodes", _free_port()
    args = [*ARGS, "--set", "train.num_nodes=2", "--out", str(out)]
    procs = []
    for node in (0, 1):
        env = cli_env()
        if launcher == "env":  # Lightning's own cluster environment (what a SLURM script exports)
            env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), NODE_RANK=str(node), LOCAL_RANK="0")
            cmd = [sys.executable, "-m", "momentumrnn", *args]
        else:
            cmd = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "2",
                "--nproc-per-node",
                "1",
                "--node-rank",
                str(node),
                "--master-addr",
                "127.0.0.1",
                "--master-port",
                str(port),
                "-m",
                "momentumrnn",
                *args,
            ]
        procs.append(
            subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    results = [p.communicate(timeout=240) for p in procs]
    for p, (_o, e) in zip(procs, results):
        assert p.returncode == 0, e[-3000:]
    assert "2 process(es)" in results[0][0] and results[1][0].strip() == ""  # only node 0 talks and writes
    one = tmp_path / "one"
    assert cli([*ARGS, "--out", one])[0] == 0
    _close(metric_rows(out), metric_rows(one))


def test_compare_writes_a_job_list_of_self_contained_commands(cli, tmp_path):
    cmp, jobs = tmp_path / "cmp", tmp_path / "jobs.txt"
    code, out, err = cli(
        [
            "compare",
            *TINY_ADDING,
            "--models",
            "LSTM",
            "AdamLSTM",
            "lstm/nesterov",
            "--seeds",
            "0",
            "1",
            "--set",
            "model.num_layers=2",
            "--optimizer",
            "adam",
            "--set",
            "optim.betas=[0.8, 0.99]",
            "--out",
            cmp,
            "--job-list",
            jobs,
        ]
    )
    assert code == 0, err
    assert "wrote 6 jobs" in out and (cmp / "compare.yaml").exists()
    lines = [ln for ln in jobs.read_text().splitlines() if ln and not ln.startswith("#")]
    assert len(lines) == 6 and not any((cmp / d).is_dir() for d in ("LSTM", "AdamLSTM"))  # nothing trained
    saved = yaml.safe_load((cmp / "compare.yaml").read_text())
    for line, (model, seed) in zip(lines, [(m, s) for m in saved["models"] for s in saved["seeds"]]):
        argv = shlex.split(line)
        assert argv[:2] == ["momentumrnn", "train"]
        args = build_parser().parse_args(argv[1:])
        cfg = resolve(None, _overrides(args), command="train")  # no recipe file needed: self-contained
        assert cfg["model"] == model and cfg["train"]["seed"] == seed
        assert {k: cfg[k] for k in ("task", "optim", "report")} == {k: saved[k] for k in ("task", "optim", "report")}
    for line in lines[:2]:  # run two jobs as a scheduler would, then report the comparison
        code, _, err = cli(shlex.split(line)[1:])
        assert code == 0, err
    code, md, err = cli(["report", cmp])
    assert code == 0 and "| LSTM | 2 |" in md and (cmp / "report.md").exists()
