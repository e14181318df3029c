"""Task ``sequences``: your own data from an .npz (classification, regression on the last step or
every step, variable lengths as packed sequences, a held-out fraction), through every command."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from momentumrnn.toolkit.errors import ToolkitError
from momentumrnn.toolkit.tasks import build_task

TINY = ["--hidden-size", "6", "--batch-size", "16", "--epochs", "2", "--no-progress"]


def make_classification(path, n=64, T=10, F=3, lengths=False, seed=0):
    """Class = sign of the sum of feature 0 over the valid steps (a task an RNN can learn)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for s, k in (("train", n), ("test", n // 2)):
        x = rng.normal(2.0, 3.0, size=(k, T, F))
        lens = rng.integers(2, T + 1, size=k) if lengths else np.full(k, T)
        y = np.array([int(x[i, : lens[i], 0].sum() > 2.0 * lens[i]) for i in range(k)])
        arrays.update({f"x_{s}": x, f"y_{s}": y})
        if lengths:
            arrays[f"lengths_{s}"] = lens
    np.savez(path, **arrays)
    return arrays


def seq_task(path, **opts):
    return build_task({"name": "sequences", "data_file": str(path), **opts})


def test_classification_normalises_with_the_training_split_only(tmp_path):
    a = make_classification(tmp_path / "d.npz")
    task = seq_task(tmp_path / "d.npz")
    train, test = task.load()
    assert (task.kind, task.metric, task.input_size, task.num_outputs) == ("classification", "acc", 3, 2)
    mean, std = a["x_train"].reshape(-1, 3).mean(0), a["x_train"].reshape(-1, 3).std(0)
    np.testing.assert_allclose(train.x.numpy(), (a["x_train"] - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(test.x.numpy(), (a["x_test"] - mean) / std, rtol=1e-5, atol=1e-5)  # train stats
    assert train.y.dtype == torch.int64 and train.y.tolist() == a["y_train"].tolist()
    raw = seq_task(tmp_path / "d.npz", normalize=False).load()[0]
    np.testing.assert_allclose(raw.x.numpy(), a["x_train"], rtol=1e-6)


def test_variable_lengths_run_packed_and_equal_each_sequence_alone(tmp_path):
    a = make_classification(tmp_path / "d.npz", lengths=True)
    task = seq_task(tmp_path / "d.npz")
    train, _ = task.load()
    valid = train.x[..., -1].sum(1).long()
    assert valid.tolist() == a["lengths_train"].tolist()
    steps = train.x[..., :-1][train.x[..., -1] > 0].double()
    np.testing.assert_allclose(steps.mean(0).numpy(), 0, atol=1e-5)  # statistics of the valid steps only
    model = task.build_model({"name": "MomentumLSTM", "hidden_size": 5, "mu": 0.6, "epsilon": 0.6})
    x = train.x[:6]
    batch = task.forward(model, x)
    for i in range(6):  # each sequence alone, unpadded: padding changes nothing
        n = int(valid[i])
        alone = model(task.inputs(x[i : i + 1, :n]))
        torch.testing.assert_close(batch[i], alone[0], rtol=1e-5, atol=1e-6)


def test_regression_last_step_every_step_and_a_test_fraction(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 7, 2))
    np.savez(tmp_path / "last.npz", x_train=x, y_train=x[:, -1, :1] * 2.0)
    task = seq_task(tmp_path / "last.npz", test_fraction=0.2)
    train, test = task.load()
    assert (len(train), len(test), task.kind, task.metric, task.num_outputs) == (40, 10, "regression", "loss", 1)
    again = seq_task(tmp_path / "last.npz", test_fraction=0.2).load()[1]
    assert torch.equal(again.y, test.y)  # a fixed draw (task.split_seed)
    np.savez(tmp_path / "every.npz", x_train=x, y_train=np.cumsum(x, axis=1), lengths_train=rng.integers(1, 8, 50))
    task = seq_task(tmp_path / "every.npz")
    train, _ = task.load()
    model = task.build_model({"name": "LSTM", "hidden_size": 4})
    xb, yb = train.x[:4], train.y[:4]
    pred = task.forward(model, xb)
    assert pred.shape == (4, 7, 2)
    loss = task.per_sample_loss(pred, task.targets(xb, yb))
    w = xb[..., -1]
    want = (((pred - yb) ** 2).mean(-1) * w).sum(1) / w.sum(1)  # the valid steps of each sequence only
    torch.testing.assert_close(loss, want)


@pytest.mark.parametrize(
    "arrays, message",
    [
        (lambda x, y: {"x_train": x[0], "y_train": y}, "x_train must be (N, T, F)"),
        (lambda x, y: {"x_train": x, "y_train": y[:-1]}, "x_train holds 20 sequences but y_train 19"),
        (
            lambda x, y: {"x_train": np.where(np.arange(60).reshape(20, 3, 1) == 7, np.nan, x), "y_train": y},
            "x_train holds 1 NaN",
        ),
        (lambda x, y: {"x_train": x, "y_train": y - 1}, "y_train holds labels outside 0..0 (range -1..0)"),
        (
            lambda x, y: {"x_train": x, "y_train": y, "x_test": np.concatenate([x, x], axis=2), "y_test": y},
            "x_test has 2 features but x_train 1",
        ),
        (lambda x, y: {"x_train": x, "y_train": y, "x_test": x}, "x_test without y_test"),
        (lambda x, y: {"x_train": x, "y_train": y.reshape(20, 1)}, "integer y_train is classification"),
        (lambda x, y: {"x_train": x, "y_train": np.zeros((20, 2, 1))}, "(N, T, F') with T = 3"),
        (lambda x, y: {"x_train": x, "y_train": y, "lengths_train": np.full(20, 4)}, "lengths_train must lie in 1..T"),
        (lambda x, y: {"x_train": x, "y_train": y, "X_test": x}, "unknown array 'X_test'"),
        (lambda x, y: {"y_train": y}, "lacks x_train"),
        (lambda x, y: {"x_train": x, "y_train": np.array(["a"] * 20)}, "y_train must hold integer labels or real"),
    ],
)
def test_malformed_files_get_one_clear_error(tmp_path, arrays, message):
    x = np.random.default_rng(0).normal(size=(20, 3, 1))
    y = np.arange(20) % 2
    np.savez(tmp_path / "bad.npz", **arrays(x, y))
    with pytest.raises(ToolkitError, match=re.escape(message)) as e:
        seq_task(tmp_path / "bad.npz").load()
    assert "bad.npz" in str(e.value) and "\n" not in str(e.value)


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(ToolkitError, match=r"needs task.data_file"):
        build_task({"name": "sequences"}).load()
    with pytest.raises(ToolkitError, match="not found"):
        seq_task(tmp_path / "nope.npz").load()
    (tmp_path / "junk.npz").write_bytes(b"not an archive")
    with pytest.raises(ToolkitError, match=r"corrupt or not an .npz"):
        seq_task(tmp_path / "junk.npz").load()
    np.savez(tmp_path / "obj.npz", x_train=np.array([None, 1], dtype=object), y_train=np.zeros(2))
    with pytest.raises(ToolkitError, match="object arrays are refused"):
        seq_task(tmp_path / "obj.npz").load()
    make_classification(tmp_path / "d.npz")
    with pytest.raises(ToolkitError, match="test_fraction does not apply"):
        seq_task(tmp_path / "d.npz", test_fraction=0.3).load()


def test_every_command_works_on_own_data(cli, tmp_path):
    """The docs' example: numpy.savez, then compare (any models, any optimizer), grads, sweep, report."""
    make_classification(tmp_path / "mine.npz", lengths=True)
    data = ["--task", "sequences", "--set", f"task.data_file={tmp_path / 'mine.npz'}", *TINY]
    code, out, err = cli(
        [
            "compare",
            *data,
            "--models",
            "LSTM",
            "MomentumLSTM",
            "AdamGRU",
            "MomentumDTRIV",
            "--optimizer",
            "adam",
            "--out",
            tmp_path / "cmp",
        ]
    )
    assert code == 0, err
    assert "### sequences: test acc (higher is better)" in out
    for label in ("LSTM", "MomentumLSTM", "AdamGRU", "MomentumDTRIV"):
        s = json.loads((tmp_path / "cmp" / label / "seed0" / "summary.json").read_text())
        assert s["status"] == "completed" and s["metric"] == "test_acc"
    code, out, err = cli(
        ["grads", *data, "--models", "LSTM", "MomentumLSTM", "--at", "0", "3", "--out", tmp_path / "g"]
    )
    assert code == 0, err
    assert (tmp_path / "g" / "grads_heatmap.png").exists()
    code, out, err = cli(
        ["sweep", *data, "--model", "MomentumLSTM", "--mu", "0", "0.6", "--epsilon", "0.6", "--out", tmp_path / "sw"]
    )
    assert code == 0, err
    assert (tmp_path / "sw" / "sweep.md").exists()
    code, md, err = cli(["report", tmp_path / "cmp" / "LSTM" / "seed0"])
    assert code == 0 and "| LSTM | 1 |" in md
