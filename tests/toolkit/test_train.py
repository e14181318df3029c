"""``momentumrnn train`` end to end on tiny settings (a few batches)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from toolkit_helpers import TINY_ADDING, TINY_SMNIST, metric_rows, run_subprocess


def test_train_writes_a_complete_run_directory(cli, tmp_path):
    out = tmp_path / "run"
    code, stdout, err = cli(
        [
            "train",
            *TINY_SMNIST,
            "--model",
            "MomentumLSTM",
            "--set",
            "model.mu=0.3",
            "--lr",
            "2e-3",
            "--batch-size",
            "12",
            "--evals-per-epoch",
            "2",
            "--out",
            out,
        ]
    )
    assert code == 0, err
    for name in (
        "config.yaml",
        "metrics.csv",
        "summary.json",
        "curves.png",
        "checkpoints/last.ckpt",
        "checkpoints/best.ckpt",
    ):
        assert (out / name).is_file(), name
    assert list((out / "tb").glob("events.out.tfevents.*")), "no TensorBoard events"
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["model"] == {"mu": 0.3, "epsilon": 0.6, "name": "MomentumLSTM", "hidden_size": 6}
    assert cfg["optim"]["lr"] == 2e-3 and cfg["task"]["train_size"] == 48
    rows = metric_rows(out)
    assert [r["step"] for r in rows] == [2, 4]  # 48 examples / 12 = 4 steps, evaluated at 1/2 and at the end
    assert set(rows[0]) == {"epoch", "step", "train_loss", "train_acc", "test_loss", "test_acc", "lr"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["metric"] == "test_acc"
    assert summary["final"]["test_acc"] == rows[-1]["test_acc"]
    assert summary["parameters"] == sum(p.numel() for p in _model_of(cfg).parameters())
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "MomentumLSTM on smnist" in stdout


def _model_of(cfg):
    from momentumrnn.toolkit.models import build_model
    from momentumrnn.toolkit.tasks import build_task

    return build_model(cfg["model"], build_task(cfg["task"]))


def test_checkpoints_are_weights_only_and_hold_the_run_state(cli, tmp_path):
    out = tmp_path / "run"
    code, _, err = cli(["train", *TINY_ADDING, "--model", "LSTM", "--out", out])
    assert code == 0, err
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)  # no arbitrary unpickling
    assert ckpt["global_step"] == 8
    state = ckpt["momentumrnn"]
    assert state["config"]["model"]["name"] == "LSTM"
    assert any(k.startswith("model.recurrent.") for k in ckpt["state_dict"])
    best = torch.load(out / "checkpoints" / "best.ckpt", weights_only=True)
    assert best["global_step"] in (4, 8)


def test_same_seed_same_metrics_other_seed_differs(cli, tmp_path):
    args = [
        "train",
        *TINY_ADDING,
        "--model",
        "MomentumLSTM",
        "--set",
        "model.num_layers=2",
        "--set",
        "model.dropout=0.2",
    ]
    assert cli([*args, "--out", tmp_path / "a"])[0] == 0
    assert cli([*args, "--out", tmp_path / "b"])[0] == 0
    assert cli([*args, "--seed", "1", "--out", tmp_path / "c"])[0] == 0
    a, b, c = (metric_rows(tmp_path / d) for d in "abc")
    assert a == b
    assert a != c


def test_every_model_family_and_optimizer_trains(cli, tmp_path):
    cases = [
        ("AdamLSTM", "adam"),
        ("SRLSTM", "sgd"),
        ("gru/heavy_ball", "rmsprop"),
        ("MomentumRNN", "sgd_asgd"),
    ]
    for i, (model, optim) in enumerate(cases):
        code, _, err = cli(
            [
                "train",
                *TINY_ADDING,
                "--model",
                model,
                "--optimizer",
                optim,
                "--epochs",
                "1",
                "--out",
                tmp_path / f"r{i}",
            ]
        )
        assert code == 0, (model, optim, err)
        assert metric_rows(tmp_path / f"r{i}")


def test_sgd_asgd_switches_and_resumes_with_asgd(cli, tmp_path):
    out = tmp_path / "lm"
    args = [
        "train",
        *TINY_ADDING,
        "--model",
        "LSTM",
        "--optimizer",
        "sgd_asgd",
        "--set",
        "optim.asgd_nonmono=1",
        "--lr",
        "50",
        "--clip",
        "0.25",
        "--evals-per-epoch",
        "4",
        "--epochs",
        "3",
        "--out",
        out,
    ]
    assert cli(args)[0] == 0
    summary = json.loads((out / "summary.json").read_text())
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    switched = ckpt["momentumrnn"]["asgd"]
    assert switched == any("ASGD" in n for n in summary["notes"])
    if switched:
        assert "ax" in next(iter(ckpt["optimizer_states"][0]["state"].values()))


@pytest.mark.skipif(
    not __import__("momentumrnn.toolkit.capability", fromlist=["x"]).bf16_native_ok("lstm")[0],
    reason="this CPU's oneDNN has no bf16 LSTM primitive (the refusal is tested in test_edges.py)",
)
def test_bf16_precision_runs(cli, tmp_path):
    code, _, err = cli(
        ["train", *TINY_ADDING, "--model", "LSTM", "--precision", "bf16", "--epochs", "1", "--out", tmp_path / "bf"]
    )
    assert code == 0, err
    cfg = yaml.safe_load((tmp_path / "bf" / "config.yaml").read_text())
    assert cfg["train"]["precision"] == "bf16"


def test_max_steps_evaluates_the_final_weights(cli, tmp_path):
    out = tmp_path / "ms"
    assert cli(["train", *TINY_ADDING, "--model", "LSTM", "--max-steps", "3", "--out", out])[0] == 0
    assert [r["step"] for r in metric_rows(out)] == [3]


def test_limit_batches(cli, tmp_path):
    out = tmp_path / "lim"
    assert (
        cli(
            [
                "train",
                *TINY_ADDING,
                "--model",
                "LSTM",
                "--limit-train-batches",
                "2",
                "--limit-eval-batches",
                "1",
                "--out",
                out,
            ]
        )[0]
        == 0
    )
    assert [r["step"] for r in metric_rows(out)] == [2, 4]


def test_psmnist_saves_and_keeps_its_permutation(cli, tmp_path):
    out = tmp_path / "perm"
    args = ["train", *TINY_SMNIST, "--task", "psmnist", "--model", "LSTM", "--set", "task.perm_seed=3"]
    assert cli([*args, "--out", out])[0] == 0
    perm = np.load(out / "permutation.npy")
    assert sorted(perm.tolist()) == list(range(784)) and perm.tolist() != list(range(784))
    from momentumrnn.toolkit.tasks import build_task

    task = build_task({"name": "psmnist", "perm_seed": 3})
    assert task.permutation.tolist() == perm.tolist()
    x = torch.arange(784, dtype=torch.uint8).repeat(2, 1)
    assert torch.equal(task.inputs(x)[0, :, 0], (torch.arange(784) % 256)[perm].float() / 255)


def test_idx_directory_loader(cli, tmp_path):
    import gzip

    rng = np.random.default_rng(0)
    d = tmp_path / "idx"
    d.mkdir()

    def write(name, arr):
        header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
        with gzip.open(d / f"{name}.gz", "wb") as f:
            f.write(header + arr.astype(np.uint8).tobytes())

    write("train-images-idx3-ubyte", rng.integers(0, 256, (40, 28, 28)))
    write("train-labels-idx1-ubyte", rng.integers(0, 10, 40))
    write("t10k-images-idx3-ubyte", rng.integers(0, 256, (12, 28, 28)))
    write("t10k-labels-idx1-ubyte", rng.integers(0, 10, 12))
    out = tmp_path / "run"
    code, text, err = cli(
        [
            "train",
            "--task",
            "smnist",
            "--set",
            f"task.data_dir={d}",
            "--model",
            "LSTM",
            "--hidden-size",
            "4",
            "--batch-size",
            "20",
            "--epochs",
            "1",
            "--no-progress",
            "--out",
            out,
        ]
    )
    assert code == 0, err
    assert "40 train / 12 test" in text
    assert json.loads((out / "summary.json").read_text())["steps"] == 2


@pytest.mark.subprocess
def test_python_dash_m_and_help(tmp_path):
    r = run_subprocess(["--help"], tmp_path, timeout=120)
    assert r.returncode == 0 and "train" in r.stdout and "compare" in r.stdout and "demo" in r.stdout
    r = run_subprocess(["list", "models"], tmp_path, timeout=120)
    assert r.returncode == 0 and "MomentumLSTM" in r.stdout


def test_orthogonal_hosts_get_lr_orth_and_the_step_hook(cli, tmp_path, monkeypatch):
    import momentumrnn.orthogonal as orthogonal
    from momentumrnn.toolkit.models import build_model, make_optimizer
    from momentumrnn.toolkit.tasks import build_task

    model = build_model({"name": "MomentumDTRIV", "hidden_size": 6, "K": 2}, build_task({"name": "adding"}))
    opt = make_optimizer(
        {
            "name": "rmsprop",
            "lr": 1e-3,
            "lr_orth": 1e-4,
            "alpha": 0.9,
            "eps": 1e-8,
            "momentum": 0.0,
            "weight_decay": 0.0,
        },
        model,
    )
    groups = {g["group"]: g for g in opt.param_groups}
    orth, other = orthogonal.split_parameters(model)
    assert groups["orthogonal"]["lr"] == 1e-4 and len(groups["orthogonal"]["params"]) == len(orth) > 0
    assert groups["default"]["lr"] == 1e-3 and len(groups["default"]["params"]) == len(other)

    calls = []
    cls = orthogonal.OrthogonalRNN
    original = cls.on_optimizer_step
    monkeypatch.setattr(cls, "on_optimizer_step", lambda self: (calls.append(1), original(self))[1])
    out = tmp_path / "dtriv"
    code, _, err = cli(
        ["train", *TINY_ADDING, "--model", "MomentumDTRIV", "--set", "model.K=2", "--lr-orth", "1e-4", "--out", out]
    )
    assert code == 0, err
    assert len(calls) == 8  # once per optimizer step
    code, _, err = cli(["train", *TINY_ADDING, "--model", "scornn/adam", "--epochs", "1", "--out", tmp_path / "sco"])
    assert code == 0, err
