"""The user edges: bf16 by capability, --devices beyond the CPU count, report never writes into a
run directory, stale temporaries cleaned on resume, `train --resume --out DIR` alone, PTB without
../shared (the README's command)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
from toolkit_helpers import TINY_ADDING, metric_rows, tree_digest

from momentumrnn.toolkit import capability

ROOT = Path(__file__).resolve().parents[2]
SHARED_PTB = ROOT.parent / "shared" / "data" / "ptb"


def _one_line_error(code, err, *needles):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    for n in needles:
        assert n in lines[0], (n, lines[0])


# -- bf16 ---------------------------------------------------------------------------------------


@pytest.mark.skipif(
    not capability.bf16_native_ok("lstm")[0],
    reason="this CPU's oneDNN has no bf16 LSTM primitive: the run is refused (tested below)",
)
def test_bf16_runs_where_the_cpu_can(cli, tmp_path):
    code, _, err = cli(
        [
            "train",
            *TINY_ADDING,
            "--model",
            "MomentumLSTM",
            "--precision",
            "bf16",
            "--epochs",
            "1",
            "--out",
            tmp_path / "bf",
        ]
    )
    assert code == 0, err


def test_bf16_is_refused_with_one_line_where_the_cpu_cannot(cli, tmp_path, monkeypatch):
    why = "could not create a primitive descriptor for the LSTM forward propagation primitive"
    monkeypatch.setattr(capability, "bf16_native_ok", lambda host: (False, why))
    code, _, err = cli(["train", *TINY_ADDING, "--model", "LSTM", "--precision", "bf16", "--out", tmp_path / "bf"])
    _one_line_error(code, err, "cannot run the LSTM kernel in bf16", why, "--precision fp32")
    assert not (tmp_path / "bf").exists()
    # orthogonal hosts have no oneDNN recurrent kernel: no probe, no refusal
    assert capability.model_host({"name": "MomentumDTRIV"}) == "dtriv"
    capability.check_bf16({"accelerator": "cpu"}, {"name": "MomentumDTRIV"})
    assert capability.model_host({"host": "GRU", "scheme": "adam"}) == "gru"


def test_the_probe_answers_once_and_says_why():
    ok, why = capability.bf16_native_ok("gru")
    assert isinstance(ok, bool) and (ok or why)
    assert capability.bf16_native_ok("gru") is capability.bf16_native_ok("gru")  # cached


# -- devices ------------------------------------------------------------------------------------


def test_more_devices_than_cpu_cores_is_refused(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(capability, "cpu_count", lambda: 2)
    code, _, err = cli(["train", *TINY_ADDING, "--devices", "99", "--out", tmp_path / "d"])
    _one_line_error(code, err, "--devices 99", "2 CPU core(s)", "--devices 2 or fewer")
    assert not (tmp_path / "d").exists()
    capability.check_devices({"devices": 2, "accelerator": "cpu"})  # as many as cores: fine
    capability.check_devices({"devices": 8, "accelerator": "gpu"})  # GPUs are counted by Lightning


# -- report -------------------------------------------------------------------------------------


def test_report_never_writes_into_a_run_directory(cli, tmp_path):
    run = tmp_path / "run"
    assert cli(["train", *TINY_ADDING, "--out", run])[0] == 0
    before = tree_digest(run)
    code, out, err = cli(["report", run])
    assert code == 0, err
    assert "| MomentumLSTM | 1 |" in out and "nothing written" in out
    assert tree_digest(run) == before and not (tmp_path / "report").exists()
    code, _, err = cli(["report", run, "--out", run])
    _one_line_error(code, err, "is a run directory")
    assert tree_digest(run) == before
    code, out, err = cli(["report", run, "--out", tmp_path / "rep"])
    assert code == 0 and (tmp_path / "rep" / "report.md").exists() and tree_digest(run) == before


def test_report_writes_into_a_comparison_and_aggregates_runs_from_anywhere(cli, tmp_path):
    cmp = tmp_path / "cmp"
    code, _, err = cli(["compare", *TINY_ADDING, "--models", "LSTM", "--seeds", "0", "1", "--out", cmp])
    assert code == 0, err
    runs = {s: tree_digest(cmp / "LSTM" / f"seed{s}") for s in (0, 1)}
    (cmp / "report.md").unlink()
    code, _, _ = cli(["report", cmp])
    assert code == 0 and (cmp / "report.md").exists()  # a comparison's own folder
    assert all(tree_digest(cmp / "LSTM" / f"seed{s}") == d for s, d in runs.items())
    # runs that ran on different machines, copied to different places: one table
    a, b = tmp_path / "machine-a" / "x", tmp_path / "elsewhere" / "y" / "z"
    shutil.copytree(cmp / "LSTM" / "seed0", a)
    shutil.copytree(cmp / "LSTM" / "seed1", b)
    code, out, _ = cli(["report", a, b, "--out", tmp_path / "all"])
    assert code == 0 and "| LSTM | 2 |" in out
    assert (tmp_path / "all" / "report.csv").read_text() == (cmp / "report.csv").read_text()


# -- resume ---------------------------------------------------------------------------------------


def test_stale_temporary_checkpoints_are_removed_on_resume(cli, tmp_path):
    run = tmp_path / "run"
    assert cli(["train", *TINY_ADDING, "--epochs", "1", "--out", run])[0] == 0
    stale = [run / "checkpoints" / ".last.ckpt.tmp-999999999", run / ".summary.json.tmp-999999998"]
    for p in stale:
        p.write_bytes(b"half a checkpoint")
    keep = run / "checkpoints" / "notes.tmp-1.txt"  # not a temporary of ours
    keep.write_text("mine")
    code, _, err = cli(["train", *TINY_ADDING, "--epochs", "2", "--out", run, "--resume"])
    assert code == 0, err
    assert not any(p.exists() for p in stale) and keep.exists()


def test_resume_with_the_run_directory_alone(cli, tmp_path):
    run, full = tmp_path / "run", tmp_path / "full"
    args = [*TINY_ADDING, "--model", "AdamLSTM", "--set", "model.beta=0.2", "--lr", "3e-3"]
    assert cli(["train", *args, "--out", full])[0] == 0
    assert cli(["train", *args, "--max-steps", "5", "--out", run])[0] == 0
    code, out, err = cli(["train", "--resume", "--out", run, "--set", "train.max_steps=null"])
    assert code == 0, err
    assert re.search(r"resuming from step [45] ", out), out
    assert [r for r in metric_rows(run) if r["step"] != 5] == metric_rows(full)
    code, out, err = cli(["train", "--resume", "--out", run, "--epochs", "3"])  # extend: config.yaml + epochs
    assert code == 0, err
    assert "resuming from step 8" in out, out
    assert json.loads((run / "summary.json").read_text())["epochs_planned"] == 3
    # a command with other settings is a full specification, checked against config.yaml: refused
    code, _, err = cli(["train", "--resume", "--out", run, "--lr", "0.5"])
    _one_line_error(code, err, "--resume", "repeat the original settings")
    code, _, err = cli(["train", *args, "--lr", "0.5", "--resume", "--out", run])
    _one_line_error(code, err, "--resume", "optim.lr=0.003", "0.5")


# -- PTB without ../shared ------------------------------------------------------------------------


def _readme_ptb_command() -> list[str]:
    line = next(ln for ln in (ROOT / "README.md").read_text().splitlines() if "compare ptb-small" in ln)
    return shlex.split(line.split("#")[0])


def test_the_readme_ptb_command_needs_no_shared_folder(cli, tmp_path, monkeypatch):
    cmd = _readme_ptb_command()
    assert cmd[:3] == ["momentumrnn", "compare", "ptb-small"] and not any("shared" in a for a in cmd)
    if not (SHARED_PTB / "valid.txt").exists():
        pytest.skip("no PTB files in ../shared/data/ptb to serve as the download mirror")
    import dataclasses

    from momentumrnn.toolkit import download as dl

    mirror = tmp_path / "mirror"  # the standard download's files, served from disk (checksums verified)
    mirror.mkdir()
    for split in ("valid", "test"):
        shutil.copy(SHARED_PTB / f"{split}.txt", mirror / f"ptb.{split}.txt")
    monkeypatch.setitem(dl.SOURCES, "ptb", dataclasses.replace(dl.SOURCES["ptb"], mirrors=(mirror.as_uri() + "/",)))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    tiny = [
        "--models",
        "LSTM",
        "--jobs",
        "1",
        "--hidden-size",
        "8",
        "--set",
        "model.emb_size=8",
        "--set",
        "train.epochs=1",
        "--set",
        "train.limit_train_batches=2",
        "--set",
        "train.limit_eval_batches=2",
        "--no-progress",
        "--out",
        tmp_path / "ptb",
    ]
    code, out, err = cli([*cmd[1:], *tiny])
    assert code == 0, err
    assert "### ptb-small: test ppl" in out
    assert (tmp_path / "cache" / "momentumrnn" / "ptb" / "ptb.valid.txt").exists()


def test_ptb_reads_the_extracted_standard_archive(tmp_path):
    from momentumrnn.toolkit.tasks import ptb_data

    data = tmp_path / "simple-examples" / "data"
    data.mkdir(parents=True)
    for split, n in (("train", 40), ("valid", 10), ("test", 10)):
        (data / f"ptb.{split}.txt").write_text("\n".join(f" the cat {i % 3} sat <unk>" for i in range(n)) + "\n")
    c = ptb_data.load_corpus(str(tmp_path / "simple-examples"), "train-valid", "train")
    assert c["files"]["train"].endswith("simple-examples/data/ptb.train.txt") and c["train"].numel() == 40 * 6


def test_make_fixture_is_a_subcommand(cli, tmp_path):
    code, out, err = cli(
        ["make-fixture", tmp_path / "fx", "--train-speakers", "1", "--utterances", "1", "--no-tensors"]
    )
    assert code == 0, err
    assert (
        "momentumrnn train timit-small --set task.data_dir=" in out and (tmp_path / "fx" / "timit" / "TRAIN").is_dir()
    )
    code, _, err = cli(["make-fixture", tmp_path / "fx2", "--train-speakers", "99"])
    _one_line_error(code, err, "train_speakers must be between 1 and")
