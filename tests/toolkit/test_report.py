"""``momentumrnn report`` on fabricated run directories."""

from __future__ import annotations

import csv
import io
import json
import statistics

from momentumrnn.toolkit.runfiles import metrics_text

COLS = ["epoch", "step", "time_s", "train_loss", "train_acc", "test_loss", "test_acc", "lr"]


def fabricate(root, label, seed, accs, status="completed", target=0.9):
    d = root / label / f"seed{seed}"
    d.mkdir(parents=True)
    rows = [
        {
            "epoch": float(i + 1),
            "step": 10 * (i + 1),
            "time_s": 1.5 * (i + 1),
            "train_loss": 2.0 - 0.1 * i,
            "train_acc": a - 0.01,
            "test_loss": 2.1 - 0.1 * i,
            "test_acc": a,
            "lr": 1e-3,
        }
        for i, a in enumerate(accs)
    ]
    (d / "metrics.csv").write_text(metrics_text(rows, COLS))
    (d / "summary.json").write_text(
        json.dumps(
            {
                "status": status,
                "label": label,
                "task": "smnist",
                "seed": seed,
                "parameters": 1234,
                "metric": "test_acc",
                "mode": "max",
                "target": target,
            }
        )
    )
    return d


def test_report_tables_and_plot(cli, tmp_path):
    root = tmp_path / "cmp"
    lstm = {0: [0.2, 0.5, 0.6], 1: [0.3, 0.4, 0.8], 2: [0.1, 0.3, 0.4]}
    mom = {0: [0.5, 0.92, 0.95], 1: [0.6, 0.91, 0.93], 2: [0.7, 0.8, 0.96]}
    for s, a in lstm.items():
        fabricate(root, "LSTM", s, a)
    for s, a in mom.items():
        fabricate(root, "MomentumLSTM", s, a)
    code, out, err = cli(["report", root, "--out", root])  # a folder of runs, not a run: it may be --out
    assert code == 0, err
    md = (root / "report.md").read_text()
    assert out.strip().startswith("### smnist: test acc")

    def pm(values):
        return f"{statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f}"

    lines = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ")}
    assert pm([0.6, 0.8, 0.4]) in lines["LSTM"]  # final
    assert pm([0.95, 0.93, 0.96]) in lines["MomentumLSTM"]  # final
    assert lines["LSTM"].count(pm([0.6, 0.8, 0.4])) == 2  # best == final here
    assert pm([0.95, 0.93, 0.96]) in lines["MomentumLSTM"] and pm([0.95, 0.93, 0.96]) != pm([0.92, 0.91, 0.96])
    assert "not reached" in lines["LSTM"]
    # target 0.9: MomentumLSTM seeds reach it at epochs 2, 2 and 3
    assert f"{statistics.fmean([2, 2, 3]):.2f} ± {statistics.stdev([2, 2, 3]):.2f}" in lines["MomentumLSTM"]
    assert f"{statistics.fmean([20, 20, 30]):.0f} ± {statistics.stdev([20, 20, 30]):.0f}" in lines["MomentumLSTM"]

    rows = {r["model"]: r for r in csv.DictReader(io.StringIO((root / "report.csv").read_text()))}
    assert rows["LSTM"]["runs"] == "3" and rows["LSTM"]["seeds"] == "0 1 2"
    assert abs(float(rows["LSTM"]["best_mean"]) - statistics.fmean([0.6, 0.8, 0.4])) < 1e-12
    assert abs(float(rows["MomentumLSTM"]["final_std"]) - statistics.stdev([0.95, 0.93, 0.96])) < 1e-12
    assert rows["MomentumLSTM"]["runs_reaching_target"] == "3" and rows["LSTM"]["runs_reaching_target"] == "0"
    png = (root / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_report_target_override_partial_and_unfinished(cli, tmp_path):
    root = tmp_path / "runs"
    fabricate(root, "LSTM", 0, [0.2, 0.55])
    fabricate(root, "LSTM", 1, [0.3, 0.4], status="interrupted")
    out_dir = tmp_path / "rep"
    code, _out, err = cli(
        ["report", root / "LSTM" / "seed0", root / "LSTM" / "seed1", "--target", "0.5", "--out", out_dir, "--x", "step"]
    )
    assert code == 0, err
    line = next(x for x in (out_dir / "report.md").read_text().splitlines() if x.startswith("| LSTM"))
    assert "2 (1 unfinished)" in line and "2.00 (1/2 runs)" in line
    assert (out_dir / "curves.png").exists()


def test_report_skips_an_unreadable_run(cli, tmp_path):
    root = tmp_path / "runs"
    fabricate(root, "LSTM", 0, [0.2, 0.5])
    broken = root / "broken"
    broken.mkdir()
    (broken / "summary.json").write_text("{not json")
    code, out, err = cli(["report", root])
    assert code == 0
    assert "skipping" in err and "broken" in err
    assert "| LSTM | 1 |" in out


def test_report_from_config_only(cli, tmp_path):
    """A run killed before its first evaluation has config.yaml but no summary."""
    from momentumrnn.toolkit.config import dump_yaml, resolve

    d = tmp_path / "early"
    d.mkdir()
    (d / "config.yaml").write_text(dump_yaml(resolve(None, [("task.name", "adding")])))
    code, out, err = cli(["report", d])
    assert code == 0, err
    assert "### adding: test loss (lower is better)" in out and "| MomentumLSTM | 1 (1 unfinished) |" in out
