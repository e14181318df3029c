"""The copying task: generated data, targets, the memoryless baseline, determinism, a tiny run."""

from __future__ import annotations

import json
import math

import pytest
import torch
from toolkit_helpers import metric_rows

from momentumrnn.toolkit.config import load_recipe, resolve
from momentumrnn.toolkit.errors import ToolkitError
from momentumrnn.toolkit.models import build_model, make_optimizer
from momentumrnn.toolkit.tasks import build_task
from momentumrnn.toolkit.tasks.synthetic import MARKER, CopyingTask, CopyRows, memoryless_baseline


def copy_task(**opts) -> CopyingTask:
    return build_task({"name": "copy", **opts})


def test_shapes_inputs_and_targets():
    T, K = 7, 10
    task = copy_task(seq_len=T, train_size=50, test_size=20)
    train, test = task.load()
    assert len(train) == 50 and len(test) == 20 and train.x.shape == (50, T + 2 * K)
    x = train.x[torch.arange(6)]
    assert x.shape == (6, T + 20) and x.dtype == torch.int64
    assert ((x[:, :K] >= 1) & (x[:, :K] <= 8)).all()  # 8 symbols
    assert (x[:, K : K + T] == 0).all() and (x[:, T + K] == MARKER).all() and (x[:, T + K + 1 :] == 0).all()
    inp = task.inputs(x)
    assert inp.shape == (6, T + 20, 10) and torch.equal(inp.sum(-1), torch.ones(6, T + 20))
    y = task.targets(x, train.y[:6])
    assert y.shape == (6, T + 20) and (y[:, : T + K] == 0).all() and torch.equal(y[:, T + K :], x[:, :K])
    model = build_model({"name": "MomentumLSTM", "hidden_size": 5}, task)
    pred = model(inp)
    assert pred.shape == (6, T + 20, 9)  # blank + 8 symbols at every step
    assert task.per_sample_loss(pred, y).shape == (6,)
    # a smaller copy length
    t3 = copy_task(seq_len=4, copy_len=3, train_size=2, test_size=2)
    assert t3.load()[0].x[0].shape == (10,) and t3.baseline == pytest.approx(3 * math.log(8) / 10)


def test_the_memoryless_baseline():
    assert memoryless_baseline(100) == pytest.approx(10 * math.log(8) / 120) == pytest.approx(0.17329, abs=1e-5)
    assert memoryless_baseline(1000) == pytest.approx(0.020386, abs=1e-6)
    task = copy_task(seq_len=100)
    assert "10 log 8 / (T + 20)" in CopyingTask.summary
    assert "10 log 8 / (T + 20) = 0.1733" in task.describe()


def _memoryless_logits(T: int, K: int, B: int) -> torch.Tensor:
    """Blank (certain) until the marker, then uniform over the 8 symbols."""
    logits = torch.full((B, T + 2 * K, 9), -1e4)
    logits[:, : T + K, 0] = 0.0
    logits[:, T + K :, 1:] = 0.0
    return logits


def test_memoryless_and_perfect_predictions():
    T, K = 50, 10
    task = copy_task(seq_len=T, test_size=1000)
    _, test = task.load()
    x = test.x[torch.arange(len(test))]
    y = task.targets(x, test.y)
    loss = task.per_sample_loss(_memoryless_logits(T, K, len(test)), y)
    assert float(loss.mean()) == pytest.approx(task.baseline, rel=1e-6)  # exactly the baseline
    stats = task.per_sample_stats(_memoryless_logits(T, K, len(test)), y, loss)
    assert 0.09 < float(stats["acc"].mean()) < 0.16  # argmax ties: symbol 1, 1 in 8
    # predicting the blank everywhere (with a little mass elsewhere) is baseline-like: far from 0
    blank = torch.zeros(len(test), T + 2 * K, 9)
    blank[..., 0] = 3.0
    b = float(task.per_sample_loss(blank, y).mean())
    assert task.baseline < b < 3 * task.baseline
    perfect = torch.nn.functional.one_hot(y, 9).float() * 50
    p = task.per_sample_loss(perfect, y)
    assert float(p.max()) < 1e-6
    assert float(task.per_sample_stats(perfect, y, p)["acc"].mean()) == 1.0


def test_data_is_deterministic_and_generated_on_demand():
    a = copy_task(seq_len=20, train_size=10_000_000, data_seed=3).load()[0]
    b = copy_task(seq_len=20, train_size=10_000_000, data_seed=3).load()[0]
    c = copy_task(seq_len=20, train_size=10_000_000, data_seed=4).load()[0]
    assert isinstance(a.x, CopyRows) and len(a) == 10_000_000  # no memory cost
    rows = torch.tensor([0, 5, 9_999_999, 123_456])
    assert torch.equal(a.x[rows], b.x[rows])
    assert not torch.equal(a.x[rows], c.x[rows])
    assert torch.equal(a.x[rows][1], a.x[5]) and torch.equal(a.x[[5]][0], a.x[5])  # independent of the batch
    assert torch.equal(a.x[:3], a.x[torch.arange(3)])
    train, test = copy_task(seq_len=20, train_size=100, test_size=100).load()
    assert not torch.equal(train.x[:100], test.x[:100])  # different streams
    counts = torch.bincount(a.x[torch.arange(20_000)][:, :10].reshape(-1), minlength=9)[1:]
    assert counts.sum() == 200_000 and (counts - 25_000).abs().max() < 800  # uniform over the 8 symbols
    with pytest.raises(IndexError):
        train.x[torch.tensor([100])]


def test_bad_options():
    for key, value in (("seq_len", 0), ("copy_len", 0), ("train_size", 0)):
        with pytest.raises(ToolkitError, match=f"task.{key}"):
            resolve({"task": {"name": "copy", key: value}}, [])


def test_a_tiny_training_run(cli, tmp_path):
    out = tmp_path / "run"
    code, _, err = cli(
        [
            "train",
            "--task",
            "copy",
            "--set",
            "task.seq_len=5",
            "--set",
            "task.copy_len=3",
            "--set",
            "task.train_size=64",
            "--set",
            "task.test_size=16",
            "--model",
            "LSTM",
            "--hidden-size",
            "8",
            "--batch-size",
            "16",
            "--epochs",
            "2",
            "--no-progress",
            "--out",
            out,
        ]
    )
    assert code == 0, err
    rows = metric_rows(out)
    assert len(rows) == 2
    assert set(rows[0]) == {"epoch", "step", "train_loss", "train_acc", "test_loss", "test_acc", "lr"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metric"] == "test_loss"
    assert 0 < rows[-1]["test_loss"] < 3 and 0 <= rows[-1]["test_acc"] <= 1


def test_the_copy_recipes():
    cfg = resolve(load_recipe("copy"), [], command="compare")
    assert cfg["task"]["seq_len"] == 1000 and cfg["optim"]["lr_orth"] == 2e-5
    names = [m["name"] for m in cfg["models"]]
    assert names == ["LSTM", "MomentumLSTM", "DTRIV", "MomentumDTRIV"]
    task = build_task(cfg["task"])
    dtriv = build_model({**cfg["models"][3], "hidden_size": 6}, task)
    groups = make_optimizer(cfg["optim"], dtriv).param_groups
    assert [g["lr"] for g in groups] == [2e-4, 2e-5]  # orthogonal parameters: lr_orth
    small = resolve(load_recipe("copy-small"), [], command="compare")
    t = build_task(small["task"])
    assert t.baseline == pytest.approx(5 * math.log(8) / 40)
    assert small["report"]["target"] < t.baseline
