"""``report.published``: the paper's numbers beside ours in reports."""

from __future__ import annotations

import csv

import pytest
import yaml

from momentumrnn.toolkit.config import resolve
from momentumrnn.toolkit.errors import ToolkitError


def test_published_values_appear_in_the_report(cli, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "task": {"name": "adding", "seq_len": 8, "train_size": 32, "test_size": 16},
                "model": {"hidden_size": 4},
                "models": ["LSTM", "MomentumLSTM", "GRU"],
                "seeds": [0],
                "train": {"epochs": 1, "batch_size": 16, "progress": False},
                "report": {"published": {"LSTM": 0.0123, "MomentumLSTM": 0.0099}, "published_source": "Table 9 of X"},
            }
        )
    )
    out = tmp_path / "c"
    code, _stdout, err = cli(["compare", recipe, "--out", out])
    assert code == 0, err
    md = (out / "report.md").read_text()
    header = next(l for l in md.splitlines() if l.startswith("| model |"))
    assert "| best test loss | paper |" in header
    line = next(l for l in md.splitlines() if l.startswith("| LSTM |"))
    assert "0.0123" in line
    line = next(l for l in md.splitlines() if l.startswith("| GRU |"))
    assert "–" in line
    assert "Table 9 of X" in md
    rows = {r["model"]: r for r in csv.DictReader((out / "report.csv").open())}
    assert float(rows["MomentumLSTM"]["published"]) == 0.0099 and rows["GRU"]["published"] == ""
    # reporting keys may change on --resume (they never change training)
    recipe.write_text(recipe.read_text().replace("0.0123", "0.5"))
    code, _stdout, err = cli(["compare", recipe, "--out", out, "--resume"])
    assert code == 0, err


def test_published_must_be_a_mapping_of_numbers():
    with pytest.raises(ToolkitError, match=r"report.published"):
        resolve({"report": {"published": [1, 2]}}, [], command="train")
    with pytest.raises(ToolkitError, match=r"report.published.LSTM"):
        resolve({"report": {"published": {"LSTM": "high"}}}, [], command="train")
