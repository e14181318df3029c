"""Bad input: one line ``error: ...`` on stderr, exit code 2, no traceback, nothing damaged."""

from __future__ import annotations

import numpy as np
import pytest
from toolkit_helpers import TINY_ADDING, TINY_SMNIST, run_subprocess, tree_digest


def _assert_one_line_error(code, out, err, *needles):
    assert code == 2, (code, out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err + out
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--model", "MomentumLSMT"], ["unknown model 'MomentumLSMT'", "did you mean 'MomentumLSTM'"]),
        (["--model", "lstm/heavy_bal"], ["model lstm/heavy_bal", "heavy_bal"]),
        (["--task", "cifar"], ["unknown task 'cifar'", "choose one of"]),
        (["--optimizer", "lbfgs"], ["optim.name: unknown value 'lbfgs'", "rmsprop, rmsprop_tf, adam, sgd, sgd_asgd"]),
        (["--set", "train.epoch=3"], ["unknown recipe key 'train.epoch'", "did you mean 'epochs'"]),
        (["--set", "model.momentum=0.5"], ["model.momentum is not a parameter of MomentumLSTM"]),
        (["--epochs", "many"], ["train.epochs: expected an integer, got 'many'"]),
        (["--lr", "0"], ["optim.lr: 0.0 is out of range (must be > 0)"]),
        (["--set", "model.mu=1.5"], ["mu"]),
        (["--precision", "fp8"], ["train.precision: unknown value 'fp8'"]),
        (["--set", "nokey"], ["--set 'nokey': write KEY=VALUE"]),
        (["--resume", "--overwrite"], ["--resume and --overwrite exclude each other"]),
    ],
)
def test_bad_settings(cli, tmp_path, args, needles):
    code, out, err = cli(["train", *TINY_ADDING, *args, "--out", tmp_path / "run"])
    _assert_one_line_error(code, out, err, *needles)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--set", "task.train_size=100000"], ["task.train_size=100000 is larger than the training set (4000"]),
        (["--set", "task.data_file=/nonexistent/mnist.npz"], ["data file '/nonexistent/mnist.npz' not found"]),
        (["--set", "task.data_dir=/nonexistent"], ["task.data_dir '/nonexistent' is not a directory"]),
        (["--set", "task.seq_len=5"], ["unknown recipe key 'task.seq_len'", "valid keys of task"]),
    ],
)
def test_bad_data_settings(cli, tmp_path, args, needles):
    code, out, err = cli(["train", *TINY_SMNIST, *args, "--out", tmp_path / "run"])
    _assert_one_line_error(code, out, err, *needles)
    assert not (tmp_path / "run").exists()


def test_bad_recipes(cli, tmp_path):
    code, out, err = cli(["train", str(tmp_path / "missing.yaml")])
    _assert_one_line_error(code, out, err, "recipe", "not found")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: [1\n")
    code, out, err = cli(["train", str(bad)])
    _assert_one_line_error(code, out, err, "is not valid YAML")
    typo = tmp_path / "typo.yaml"
    typo.write_text("optimizer: {name: adam}\n")
    code, out, err = cli(["train", str(typo)])
    _assert_one_line_error(code, out, err, "unknown recipe key 'optimizer'")
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("train: {batch_size: -4}\n")
    code, out, err = cli(["compare", str(wrong)])
    _assert_one_line_error(code, out, err, "train.batch_size: -4 is out of range")


def test_existing_run_directory_is_refused_and_kept(cli, tmp_path):
    out = tmp_path / "run"
    assert cli(["train", *TINY_ADDING, "--model", "LSTM", "--out", out])[0] == 0
    before = tree_digest(out)
    code, o, err = cli(["train", *TINY_ADDING, "--model", "LSTM", "--out", out])
    _assert_one_line_error(code, o, err, f"run directory {out} already exists", "--resume", "--overwrite")
    assert tree_digest(out) == before
    # resuming with other settings is refused too
    code, o, err = cli(["train", *TINY_ADDING, "--model", "LSTM", "--hidden-size", "9", "--out", out, "--resume"])
    _assert_one_line_error(code, o, err, "model.hidden_size=8", "asks for 9")
    assert tree_digest(out) == before
    # --overwrite with a bad setting damages nothing either
    code, o, err = cli(["train", *TINY_ADDING, "--model", "NoSuchLSTM", "--out", out, "--overwrite"])
    _assert_one_line_error(code, o, err, "unknown model")
    assert tree_digest(out) == before
    # --overwrite replaces it
    assert cli(["train", *TINY_ADDING, "--model", "GRU", "--out", out, "--overwrite"])[0] == 0
    assert "GRU" in (out / "config.yaml").read_text()


def test_overwrite_refuses_a_foreign_directory(cli, tmp_path):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "thesis.tex").write_text("precious")
    code, out, err = cli(["train", *TINY_ADDING, "--out", d, "--overwrite"])
    _assert_one_line_error(code, out, err, "is not a momentumrnn run directory", "refusing to delete")
    assert (d / "thesis.tex").read_text() == "precious"


def test_resume_needs_an_existing_run(cli, tmp_path):
    code, out, err = cli(["train", *TINY_ADDING, "--out", tmp_path / "nothing", "--resume"])
    _assert_one_line_error(code, out, err, "does not exist", "drop --resume")
    (tmp_path / "notrun").mkdir()
    (tmp_path / "notrun" / "x").write_text("x")
    code, out, err = cli(["train", *TINY_ADDING, "--out", tmp_path / "notrun", "--resume"])
    _assert_one_line_error(code, out, err, "not a run directory (no config.yaml)")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_checkpoint_on_resume(cli, tmp_path, damage):
    out = tmp_path / "run"
    args = ["train", *TINY_ADDING, "--model", "LSTM", "--out", out]
    assert cli(args)[0] == 0
    last = out / "checkpoints" / "last.ckpt"
    data = last.read_bytes()
    last.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"not a checkpoint" * 10, "empty": b""}[damage])
    before = tree_digest(out)
    code, o, err = cli([*args, "--resume"])
    _assert_one_line_error(code, o, err, f"checkpoint {last} is corrupt", "--overwrite")
    assert tree_digest(out) == before


def test_corrupt_run_config_on_resume(cli, tmp_path):
    out = tmp_path / "run"
    args = ["train", *TINY_ADDING, "--model", "LSTM", "--out", out]
    assert cli(args)[0] == 0
    (out / "config.yaml").write_text("task: [unclosed\n")
    before = tree_digest(out)
    code, o, err = cli([*args, "--resume"])
    _assert_one_line_error(code, o, err, "config.yaml is corrupt")
    assert tree_digest(out) == before


def test_corrupt_data_files(cli, tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 this is not a zip")
    code, out, err = cli(["train", "--task", "smnist", "--set", f"task.data_file={bad}", "--out", tmp_path / "r"])
    _assert_one_line_error(code, out, err, "is corrupt or not an .npz archive")
    partial = tmp_path / "partial.npz"
    np.savez(partial, x_train=np.zeros((2, 784), np.uint8))
    code, out, err = cli(["train", "--task", "smnist", "--set", f"task.data_file={partial}", "--out", tmp_path / "r"])
    _assert_one_line_error(code, out, err, "lacks array")
    idx = tmp_path / "idx"
    idx.mkdir()
    for name in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        (idx / name).write_bytes(b"\x00\x00\x08\x03" + (5).to_bytes(4, "big") * 3 + b"\x01" * 10)
    code, out, err = cli(["train", "--task", "smnist", "--set", f"task.data_dir={idx}", "--out", tmp_path / "r"])
    _assert_one_line_error(code, out, err, "truncated or corrupt")
    assert not (tmp_path / "r").exists()


def test_report_errors(cli, tmp_path):
    code, out, err = cli(["report", tmp_path / "nope"])
    _assert_one_line_error(code, out, err, "does not exist")
    (tmp_path / "empty").mkdir()
    code, out, err = cli(["report", tmp_path / "empty"])
    _assert_one_line_error(code, out, err, "no run directories found")
    code, out, err = cli(["report", tmp_path / "empty", "--target", "high"])
    _assert_one_line_error(code, out, err, "--target: expected a number")


def test_usage_errors_exit_2(cli):
    with pytest.raises(SystemExit) as e:
        cli(["train", "--no-such-flag"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        cli(["frobnicate"])
    assert e.value.code == 2


@pytest.mark.subprocess
def test_error_exit_code_of_the_real_command(tmp_path):
    r = run_subprocess(["train", "--model", "NoSuchModel", "--out", str(tmp_path / "x")], tmp_path, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and r.stderr.startswith("error: unknown model")
    assert not (tmp_path / "x").exists()


def test_checkpoint_of_another_model_on_resume(cli, tmp_path):
    import torch

    out = tmp_path / "run"
    args = ["train", *TINY_ADDING, "--model", "LSTM", "--out", out]
    assert cli(args)[0] == 0
    last = out / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    key = next(k for k in ckpt["state_dict"] if k.endswith("weight_hh_l0"))
    ckpt["state_dict"][key] = torch.zeros(3, 3)
    torch.save(ckpt, last)
    before = tree_digest(out)
    code, o, err = cli([*args, "--resume"])
    _assert_one_line_error(code, o, err, "does not fit the model", key)
    assert tree_digest(out) == before
