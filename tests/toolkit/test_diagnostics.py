"""``momentumrnn grads`` (hidden-state gradient norms) and ``momentumrnn sweep`` (mu x epsilon)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from toolkit_helpers import TINY_ADDING
from torch import nn

from momentumrnn.cells import cell_class
from momentumrnn.toolkit.config import resolve
from momentumrnn.toolkit.errors import ToolkitError
from momentumrnn.toolkit.models import build_model
from momentumrnn.toolkit.probe import GRAD_FILE, hidden_gradient_norms, load_grad_norms, save_grad_norms
from momentumrnn.toolkit.sweep import sweep_grid, sweep_label
from momentumrnn.toolkit.tasks import build_task


def _reference_norms(model, task, x, y, cell):
    """Literal loop: the cell (carrying its momentum from step to step, as the layer does within a
    sequence), with the layer's weights, keeping every h_t as an autograd leaf-like node."""
    assert cell.carry_momentum
    layer = model.recurrent
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).copy_(getattr(layer, f"{name}_l0"))
    inp = task.inputs(x)
    state, hs = None, []
    for t in range(inp.shape[1]):
        state = cell(inp[:, t], state)
        h = state[0] if isinstance(state, tuple) else state  # (h, [c,] *momentum) or h
        h.retain_grad()
        hs.append(h)
    out = torch.stack(hs, dim=1)
    loss = task.per_sample_loss(model.head(task.head_input(out)), task.targets(x, y)).mean()
    loss.backward()
    return torch.stack([h.grad.norm() for h in hs]).double()


@pytest.mark.parametrize(
    "name, kind",
    [
        ("LSTM", "none"),
        ("MomentumLSTM", "heavy_ball"),
        ("AdamLSTM", "adam"),
        ("SRLSTM", "nesterov"),
        ("MomentumGRU", "heavy_ball"),
    ],
)
def test_hidden_gradient_norms_equal_a_literal_step_loop(name, kind):
    torch.manual_seed(0)
    task = build_task({"name": "adding", "seq_len": 9, "train_size": 4, "test_size": 2, "data_seed": 1})
    cfg = {"name": name, "hidden_size": 5}
    if kind != "none":
        cfg.update(mu=0.5, epsilon=0.7) if kind in ("heavy_ball", "adam") else cfg.update(epsilon=0.8, restart=3)
    model = build_model(cfg, task).double()
    # float64 end to end (the task's own input / loss convert to float32)
    task.inputs = lambda x: x.double()
    task.per_sample_loss = lambda pred, y: (pred.squeeze(-1) - y) ** 2
    train, _ = task.load()
    x, y = train.x[:3].double(), train.y[:3].double()
    got = hidden_gradient_norms(model, task, x, y)
    assert all(p.grad is None for p in model.parameters())  # the probe leaves training untouched
    assert model.recurrent.carry_momentum is False  # (it carries the momentum only while it replays)
    cell = cell_class(f"{name}Cell")(
        2,
        5,
        dtype=torch.float64,
        carry_momentum=True,
        **{k: v for k, v in cfg.items() if k in ("mu", "epsilon", "restart")},
    )
    want = _reference_norms(model, task, x, y, cell)
    assert got.shape == (9,)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-14)


def test_per_step_head_counts_direct_and_recurrent_paths():
    """With a head on every step, dL/dh_t has both parts: compare with an unrolled nn.LSTM."""
    torch.manual_seed(1)
    task = build_task({"name": "adding", "seq_len": 6, "train_size": 4, "test_size": 2, "data_seed": 1})
    model = build_model({"name": "LSTM", "hidden_size": 4}, task).double()
    task.inputs = lambda x: x.double()
    task.head_input = lambda out: out  # every step feeds the head
    task.per_sample_loss = lambda pred, y: (pred.squeeze(-1) ** 2).mean(-1)
    x, _y = task.load()[0].x[:2].double(), None
    got = hidden_gradient_norms(model, task, x, torch.zeros(2, dtype=torch.float64))
    cell = nn.LSTMCell(2, 4).double()
    layer = model.recurrent
    with torch.no_grad():
        for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, n).copy_(getattr(layer, f"{n}_l0"))
    h = c = torch.zeros(2, 4, dtype=torch.float64)
    hs = []
    for t in range(6):
        h, c = cell(x[:, t], (h, c))
        h.retain_grad()
        hs.append(h)
    pred = model.head(torch.stack(hs, 1))
    (pred.squeeze(-1) ** 2).mean(-1).mean().backward()
    torch.testing.assert_close(got, torch.stack([h.grad.norm() for h in hs]), rtol=1e-10, atol=1e-14)


def test_orthogonal_and_unitary_layers_can_be_probed():
    task = build_task({"name": "adding", "seq_len": 7, "train_size": 4, "test_size": 2, "data_seed": 1})
    for name in ("MomentumDTRIV", "ScuRNN"):
        model = build_model({"name": name, "hidden_size": 4}, task)
        x, y = task.load()[0].x[:2], task.load()[0].y[:2]
        n = hidden_gradient_norms(model, task, x, y)
        assert n.shape == (7,) and torch.isfinite(n).all() and (n > 0).all()


def test_bidirectional_is_refused():
    task = build_task({"name": "adding", "seq_len": 5, "train_size": 4, "test_size": 2, "data_seed": 1})
    model = build_model({"name": "LSTM", "hidden_size": 4, "bidirectional": True}, task)
    with pytest.raises(ToolkitError, match="unidirectional"):
        hidden_gradient_norms(model, task, task.load()[0].x[:2], task.load()[0].y[:2])


def test_grad_file_roundtrip_and_corruption(tmp_path):
    save_grad_norms(tmp_path, np.array([0, 5]), np.arange(6.0).reshape(2, 3))
    steps, norms = load_grad_norms(tmp_path)
    assert steps.tolist() == [0, 5] and norms.shape == (2, 3)
    (tmp_path / GRAD_FILE).write_bytes(b"not an npz")
    with pytest.raises(ToolkitError, match=GRAD_FILE):
        load_grad_norms(tmp_path)


def test_grads_command_records_plots_and_resumes(cli, tmp_path):
    out = tmp_path / "g"
    args = [
        "grads",
        *TINY_ADDING,
        "--models",
        "LSTM",
        "MomentumLSTM",
        "--seeds",
        "0",
        "--at",
        "0",
        "3",
        "7",
        "--probe-size",
        "5",
        "--out",
        out,
    ]
    code, stdout, err = cli(args)
    assert code == 0, err
    for label in ("LSTM", "MomentumLSTM"):
        steps, norms = load_grad_norms(out / label / "seed0")
        assert steps.tolist() == [0, 3, 7] and norms.shape == (3, 12) and np.isfinite(norms).all()
    for name in ("grads_heatmap.png", "grads_lines.png", "grads.csv", "grads.md", "report.md"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "grads.csv").open()))
    assert len(rows) == 2 * 3 * 12 and {r["model"] for r in rows} == {"LSTM", "MomentumLSTM"}
    assert "| MomentumLSTM | 7 |" in stdout
    # a finished comparison resumes without training or probing again
    before = (out / "LSTM" / "seed0" / GRAD_FILE).stat().st_mtime_ns
    code, stdout, err = cli([*args, "--resume"])
    assert code == 0, err
    assert (out / "LSTM" / "seed0" / GRAD_FILE).stat().st_mtime_ns == before


def test_grads_default_steps_and_bad_input(cli, tmp_path):
    code, _, err = cli(
        ["grads", *TINY_ADDING, "--models", "LSTM", "--seeds", "0", "--at", "-1", "--out", tmp_path / "x"]
    )
    assert code == 2 and "grad_norm_steps" in err
    code, _, err = cli(["grads", *TINY_ADDING, "--models", "LSTM", "--at", "zero", "--out", tmp_path / "y"])
    assert code == 2 and "integer" in err
    out = tmp_path / "d"
    code, _stdout, err = cli(["grads", *TINY_ADDING, "--models", "LSTM", "--seeds", "0", "--out", out])
    assert code == 0, err
    steps, _ = load_grad_norms(out / "LSTM" / "seed0")
    assert steps[0] == 0 and steps[-1] == 7 and len(steps) == 8  # 2 epochs x 4 batches, all probed


def test_sweep_command_heatmap_and_table(cli, tmp_path):
    out = tmp_path / "s"
    code, stdout, err = cli(
        [
            "sweep",
            *TINY_ADDING,
            "--model",
            "MomentumLSTM",
            "--mu",
            "0",
            "0.5",
            "--epsilon",
            "0.5",
            "1",
            "--seeds",
            "0",
            "--baseline",
            "LSTM",
            "--out",
            out,
        ]
    )
    assert code == 0, err
    for name in ("sweep.png", "sweep.md", "sweep.csv", "report.md"):
        assert (out / name).is_file(), name
    cfg = json.loads((out / "mu=0.5-eps=1" / "seed0" / "summary.json").read_text())["model"]
    assert cfg["mu"] == 0.5 and cfg["epsilon"] == 1.0 and cfg["name"] == "MomentumLSTM"
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert len(rows) == 4 and all(np.isfinite(float(r["mean"])) for r in rows)
    assert "baseline LSTM" in stdout and "| 0.5 |" in stdout
    # mu=0, eps=1 is the plain LSTM exactly: same seed, same data, same numbers as the baseline
    a = json.loads((out / "mu=0-eps=1" / "seed0" / "summary.json").read_text())["final"]["test_loss"]
    b = json.loads((out / "LSTM" / "seed0" / "summary.json").read_text())["final"]["test_loss"]
    assert a == pytest.approx(b, rel=1e-5)


def test_sweep_bad_input(cli, tmp_path):
    code, _, err = cli(["sweep", *TINY_ADDING, "--mu", "0", "x", "--epsilon", "1", "--out", tmp_path / "a"])
    assert code == 2 and "--mu" in err
    code, _, err = cli(["sweep", *TINY_ADDING, "--mu", "0", "0", "--epsilon", "1", "--out", tmp_path / "b"])
    assert code == 2 and "repeated" in err
    code, _, err = cli(
        ["sweep", *TINY_ADDING, "--model", "RMSPropLSTM", "--mu", "0.3", "--epsilon", "1", "--out", tmp_path / "c"]
    )
    assert code == 2 and "mu" in err
    code, _, err = cli(
        ["sweep", *TINY_ADDING, "--models", "LSTM", "--mu", "0.3", "--epsilon", "1", "--out", tmp_path / "d"]
    )
    assert code == 2 and "--model" in err


def test_sweep_grid_means_over_seeds():
    s = [{"label": sweep_label(0.3, 1.0), "metric": "test_acc", "final": {"test_acc": v}} for v in (0.5, 0.7)]
    mean, std = sweep_grid(s, [0.3, 0.6], [1.0])
    assert mean[0, 0] == pytest.approx(0.6) and std[0, 0] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert np.isnan(mean[1, 0])


def test_grad_norm_steps_is_a_validated_recipe_key():
    cfg = resolve({"train": {"grad_norm_steps": [0, 10]}}, [], command="train")
    assert cfg["train"]["grad_norm_steps"] == [0, 10] and cfg["train"]["grad_norm_batch"] == 32
    with pytest.raises(ToolkitError, match="grad_norm_batch"):
        resolve({"train": {"grad_norm_batch": 0}}, [], command="train")
