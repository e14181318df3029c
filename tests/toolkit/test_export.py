"""``momentumrnn export RUN_DIR --onnx FILE``: a trained run to an ONNX file that onnxruntime runs
(dynamic batch and length), the checkpoint choice, what it prints, and its errors (one ``error:``
line, exit code 2, nothing written)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from toolkit_helpers import TINY_ADDING, tree_digest

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny trained run of a modReLU host with a momentum scheme (its B is folded in the export)."""
    from momentumrnn.__main__ import main

    d = tmp_path_factory.mktemp("export") / "run"
    assert main(["train", *TINY_ADDING, "--model", "AdamDTRIV", "--out", str(d)]) == 0
    return d


def _predict(run_dir, checkpoint, x):
    from momentumrnn.toolkit.export import load_model

    _, model, _, _, _ = load_model(run_dir, checkpoint)
    with torch.no_grad():
        return model(x).numpy()


def test_export_runs_in_onnxruntime(cli, run, tmp_path):
    before = tree_digest(run)
    out = tmp_path / "out"
    out.mkdir()
    code, stdout, err = cli(["export", run, "--onnx", out / "model.onnx"])
    assert code == 0, err
    lines = stdout.splitlines()
    assert lines[0].startswith(f"wrote {out / 'model.onnx'} (weights of {run / 'checkpoints' / 'best.ckpt'}, step ")
    assert "  input  x: float32 [batch, time, 2]" in lines
    assert "  output output: float32 [batch, 1]" in lines
    checks = [ln for ln in lines if ln.startswith("  onnxruntime vs torch at (batch, time) = ")]
    assert len(checks) == 2
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx"]  # no temporary left
    assert tree_digest(run) == before  # the run directory is only read
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    for shape in ((1, 12), (4, 3)):  # other batch sizes and lengths than the export's
        x = torch.randn(*shape, 2)
        got = session.run(None, {"x": x.numpy()})[0]
        want = _predict(run, "best", x)
        assert got.shape == want.shape == (shape[0], 1)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_checkpoint_choice_and_overwrite(cli, run, tmp_path, monkeypatch):
    f = tmp_path / "m.onnx"
    code, stdout, err = cli(["export", run, "--onnx", f, "--checkpoint", "last"])
    assert code == 0, err and f"weights of {run / 'checkpoints' / 'last.ckpt'}" in stdout
    data = f.read_bytes()
    code, stdout, err = cli(["export", run, "--onnx", f])  # exists: refused, kept
    assert code == 2 and err.strip() == f"error: {f} exists; add --overwrite to replace it"
    assert f.read_bytes() == data
    from momentumrnn.toolkit import export

    monkeypatch.setattr(export, "CHECK_TOLERANCE", -1.0)  # any difference: the warning shows
    code, _, err = cli(["export", run, "--onnx", f, "--overwrite", "--checkpoint", "last"])
    assert code == 0 and "warning: onnxruntime and torch differ by more than float32 rounding" in err
    session = ort.InferenceSession(str(f), providers=["CPUExecutionProvider"])
    x = torch.randn(2, 7, 2)
    np.testing.assert_allclose(session.run(None, {"x": x.numpy()})[0], _predict(run, "last", x), rtol=1e-5, atol=1e-5)


def test_best_falls_back_to_last_only_by_default(cli, run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    (copy / "checkpoints" / "best.ckpt").unlink()
    code, stdout, err = cli(["export", copy, "--onnx", tmp_path / "a.onnx"])
    assert code == 0, err
    assert stdout.splitlines()[0] == f"note: {copy / 'checkpoints'} has no best.ckpt; using last.ckpt"
    code, _, err = cli(["export", copy, "--onnx", tmp_path / "b.onnx", "--checkpoint", "best"])
    assert code == 2 and "has no best checkpoint" in err and not (tmp_path / "b.onnx").exists()


@pytest.mark.parametrize(
    "case",
    ["no run", "not a run", "no checkpoint", "corrupt checkpoint", "no directory", "a directory", "export fails"],
)
def test_errors(cli, run, tmp_path, monkeypatch, case):
    target, run_dir = tmp_path / "m.onnx", run
    if case == "no run":
        run_dir, needle = tmp_path / "nothing", f"run directory {tmp_path / 'nothing'} not found"
    elif case == "not a run":
        run_dir = tmp_path / "empty"
        run_dir.mkdir()
        needle = "is not a run directory (no config.yaml)"
    elif case in ("no checkpoint", "corrupt checkpoint"):
        run_dir = tmp_path / "copy"
        shutil.copytree(run, run_dir)
        if case == "no checkpoint":
            shutil.rmtree(run_dir / "checkpoints")
            needle = "has no checkpoint"
        else:
            (run_dir / "checkpoints" / "best.ckpt").write_bytes(b"not a checkpoint")
            needle = "is corrupt or not a momentumrnn checkpoint"
    elif case == "no directory":
        target, needle = tmp_path / "missing" / "m.onnx", "does not exist; create it first"
    elif case == "a directory":
        target, needle = tmp_path, "is a directory; give the path of the file to write"
    else:

        def refuse(*args, **kwargs):
            raise RuntimeError("Failed to export\n<class 'ValueError'>: something the exporter cannot do")

        monkeypatch.setattr(torch.onnx, "export", refuse)
        needle = "cannot be exported to ONNX: <class 'ValueError'>: something the exporter cannot do"
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _stdout, err = cli(["export", run_dir, "--onnx", target])
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1 and needle in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_language_model(cli, tmp_path):
    """The PTB task's word model: token ids in, logits over the vocabulary out."""
    from test_language import BASE, _write_corpus

    d = _write_corpus(tmp_path / "ptb")
    run_dir = tmp_path / "lm"
    code, _, err = cli(
        [
            "train",
            *BASE,
            "--model",
            "NesterovGRU",
            "--set",
            f"task.data_dir={d}",
            "--max-steps",
            "2",
            "--epochs",
            "1",
            "--out",
            run_dir,
        ]
    )
    assert code == 0, err
    code, stdout, err = cli(["export", run_dir, "--onnx", tmp_path / "lm.onnx"])
    assert code == 0, err
    assert "  input  x: int64 [batch, time]" in stdout and "  output logits: float32 [batch, time, 24]" in stdout
