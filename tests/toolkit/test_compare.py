"""``momentumrnn compare`` and ``momentumrnn demo`` end to end on tiny settings."""

from __future__ import annotations

import json

import pytest
import yaml
from toolkit_helpers import TINY_ADDING, metric_rows


def test_compare_trains_every_model_and_seed_then_reports(cli, tmp_path):
    out = tmp_path / "cmp"
    args = ["compare", *TINY_ADDING, "--models", "LSTM", "MomentumLSTM", "--seeds", "0", "1", "--out", out]
    code, stdout, err = cli(args)
    assert code == 0, err
    for label in ("LSTM", "MomentumLSTM"):
        for seed in (0, 1):
            run = out / label / f"seed{seed}"
            assert json.loads((run / "summary.json").read_text())["status"] == "completed"
            assert yaml.safe_load((run / "config.yaml").read_text())["train"]["seed"] == seed
    assert metric_rows(out / "LSTM" / "seed0") != metric_rows(out / "LSTM" / "seed1")
    for name in ("report.md", "report.csv", "curves.png", "compare.yaml"):
        assert (out / name).is_file(), name
    assert "| LSTM | 2 |" in stdout and "| MomentumLSTM | 2 |" in stdout
    # same settings, same seeds: same metrics as a single train run
    single = tmp_path / "single"
    assert cli(["train", *TINY_ADDING, "--model", "MomentumLSTM", "--seed", "1", "--out", single])[0] == 0
    assert metric_rows(single) == metric_rows(out / "MomentumLSTM" / "seed1")

    # resuming a finished comparison trains nothing again
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.ckpt")}
    code, stdout, err = cli([*args, "--resume"])
    assert code == 0, err
    assert stdout.count("already complete") == 4
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.ckpt")} == before
    # ... and refuses other models
    code, _, err = cli(["compare", *TINY_ADDING, "--models", "GRU", "--seeds", "0", "1", "--out", out, "--resume"])
    assert code == 2 and "different models" in err


def test_compare_recipe_with_presets_and_host_scheme(cli, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "task": {"name": "adding", "seq_len": 10, "train_size": 32, "test_size": 16},
                "model": {"hidden_size": 5},
                "presets": {"lstm/adam": {"mu": 0.3, "epsilon": 0.5, "beta": 0.5}},
                "models": ["lstm/adam", {"name": "SRLSTM", "restart": 3, "label": "SR3"}],
                "seeds": [4],
                "train": {"epochs": 1, "batch_size": 16, "progress": False},
            }
        )
    )
    out = tmp_path / "c"
    code, stdout, err = cli(["compare", recipe, "--out", out])
    assert code == 0, err
    cfg = yaml.safe_load((out / "lstm-adam" / "seed4" / "config.yaml").read_text())
    assert cfg["model"] == {"mu": 0.3, "epsilon": 0.5, "beta": 0.5, "hidden_size": 5, "host": "lstm", "scheme": "adam"}
    cfg = yaml.safe_load((out / "SR3" / "seed4" / "config.yaml").read_text())
    assert cfg["model"]["restart"] == 3 and cfg["model"]["epsilon"] == 1.0  # the default SRLSTM preset
    assert "| SR3 | 1 |" in stdout


def test_demo_runs_end_to_end_on_tiny_settings(cli, tmp_path):
    tiny = [
        "--set",
        "task.train_size=32",
        "--set",
        "task.test_size=16",
        "--set",
        "model.hidden_size=4",
        "--set",
        "train.epochs=1",
        "--set",
        "train.batch_size=16",
        "--no-progress",
    ]
    code, stdout, err = cli(["demo", *tiny])
    assert code == 0, err
    out = tmp_path / "momentumrnn-demo"
    assert "LSTM vs MomentumLSTM on sequential MNIST (784 pixel steps)" in stdout
    assert "| LSTM | 1 |" in stdout and "| MomentumLSTM | 1 |" in stdout
    assert (out / "curves.png").is_file() and (out / "report.md").is_file()
    cfg = yaml.safe_load((out / "MomentumLSTM" / "seed0" / "config.yaml").read_text())
    assert cfg["task"]["name"] == "smnist" and cfg["model"]["mu"] == 0.6 and cfg["model"]["epsilon"] == 0.6
    # a second demo goes to a fresh directory instead of failing
    code, stdout, err = cli(["demo", *tiny, "--jobs", "1"])
    assert code == 0, err
    assert (tmp_path / "momentumrnn-demo-2" / "report.md").is_file()


@pytest.mark.subprocess
def test_compare_jobs_runs_side_by_side_with_the_same_results(cli, tmp_path):
    args = ["compare", *TINY_ADDING, "--models", "LSTM", "MomentumLSTM", "--seeds", "3", "--set", "train.threads=1"]
    code, stdout, err = cli([*args, "--jobs", "2", "--out", tmp_path / "par"])
    assert code == 0, err
    assert "[1/2 LSTM seed 3]" in stdout and "[2/2 MomentumLSTM seed 3]" in stdout
    assert not (tmp_path / "par" / ".recipes").exists()
    code, _, err = cli([*args, "--out", tmp_path / "seq"])
    assert code == 0, err
    for label in ("LSTM", "MomentumLSTM"):
        assert metric_rows(tmp_path / "par" / label / "seed3") == metric_rows(tmp_path / "seq" / label / "seed3")
        a = yaml.safe_load((tmp_path / "par" / label / "seed3" / "config.yaml").read_text())
        b = yaml.safe_load((tmp_path / "seq" / label / "seed3" / "config.yaml").read_text())
        assert a == b  # the child re-resolved the run's config to the very same settings


def test_a_run_made_when_lr_orth_went_to_every_model_still_resumes(cli, tmp_path):
    """Comparisons used to give a shared optim.lr_orth to every model; such a run of a model without
    orthogonal parameters resumes under the scoped setting (null), one with them does not."""
    lstm, dtriv = tmp_path / "lstm", tmp_path / "dtriv"
    for model, out in (("LSTM", lstm), ("DTRIV", dtriv)):
        code, _, err = cli(
            ["train", *TINY_ADDING, "--model", model, "--lr-orth", "1e-4", "--epochs", "1", "--out", out]
        )
        assert code == 0, err
    code, out, err = cli(["train", *TINY_ADDING, "--model", "LSTM", "--out", lstm, "--resume"])
    assert code == 0 and "resuming from step 4" in out, err
    assert yaml.safe_load((lstm / "config.yaml").read_text())["optim"]["lr_orth"] is None
    code, _, err = cli(["train", *TINY_ADDING, "--model", "DTRIV", "--out", dtriv, "--resume"])
    assert code == 2 and "ran with optim.lr_orth=0.0001 but this command asks for None" in err
