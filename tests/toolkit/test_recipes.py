"""Every bundled recipe parses and trains every one of its models for a few batches.

The data comes from small generated files in the recipe's layout (IDX folders, PTB text files, a
synthetic TIMIT) or the bundled MNIST subset, and the sizes are shrunk (hidden 8, batch 4, two
batches, seed 0): what is checked is that the recipe's models, optimizer and task settings fit
together and run end to end, not its numbers.
"""

from __future__ import annotations

import gzip
import json
import warnings

import numpy as np
import pytest

from momentumrnn.toolkit.compare import compare_runs
from momentumrnn.toolkit.config import load_recipe, recipe_names, resolve

SHRINK = [
    ("seeds", [0]),
    ("train.epochs", 1),
    ("train.limit_train_batches", 2),
    ("train.limit_eval_batches", 1),
    ("train.batch_size", 4),
    ("train.eval_batch_size", 4),
    ("train.progress", False),
    ("train.threads", 1),
    ("train.evals_per_epoch", 1),
    ("model.hidden_size", 8),
]


def _idx(arr: np.ndarray) -> bytes:
    head = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    return head + arr.astype(np.uint8).tobytes()


def _idx_dir(d):
    rng = np.random.default_rng(0)
    d.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 40), ("t10k", 20)):
        (d / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(rng.integers(0, 256, (n, 28, 28)))))
        (d / f"{split}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(np.arange(n) % 10)))
    return d


def _ptb_dir(d):
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(30)] + ["<unk>", "N"]
    d.mkdir(parents=True, exist_ok=True)
    for name, lines in (("train.txt", 60), ("valid.txt", 30), ("test.txt", 30)):
        text = "\n".join(" " + " ".join(rng.choice(words, rng.integers(3, 10))) + " " for _ in range(lines))
        (d / name).write_text(text + "\n", encoding="utf-8")
    return d


def _data_overrides(task: str, tmp_path) -> list:
    if task in ("smnist", "psmnist"):
        return [
            ("task.data_dir", None),
            ("task.download", False),
            ("task.train_size", 32),
            ("task.test_size", 8),
            ("task.subset", "first"),
        ]
    if task in ("fmnist", "pfmnist"):
        return [
            ("task.data_dir", str(_idx_dir(tmp_path / "idx"))),
            ("task.download", False),
            ("task.train_size", 32),
            ("task.test_size", 8),
            ("task.subset", "first"),
        ]
    if task == "ptb":
        return [("task.data_dir", str(_ptb_dir(tmp_path / "ptb"))), ("task.bptt", 6), ("model.emb_size", 8)]
    if task == "timit":
        from momentumrnn.toolkit.tasks.timit_fixture import make_fixture

        make_fixture(tmp_path / "timit-fixture", train_speakers=2, utterances=2, tensors=False)
        return [
            ("task.data_dir", str(tmp_path / "timit-fixture" / "timit")),
            ("task.fixture", False),
            ("task.cache_dir", str(tmp_path / "cache")),
            ("task.train_size", None),
        ]
    if task == "copy":
        return [("task.seq_len", 12), ("task.train_size", 64), ("task.test_size", 8)]
    if task == "adding":
        return [("task.seq_len", 12), ("task.train_size", 32), ("task.test_size", 8)]
    raise AssertionError(f"no test data for task {task!r}: add it to test_recipes.py")


def _shrunk(name: str, tmp_path) -> dict:
    recipe = load_recipe(name)
    full = resolve(recipe, [], command="compare")
    assert full["models"] and full["seeds"]
    cfg = resolve(recipe, SHRINK + _data_overrides(full["task"]["name"], tmp_path), command="compare")
    for model in cfg["models"]:  # ENRNN's split of the (shrunk) hidden state
        if "short_size" in model:
            model.update(short_size=2, num_negative=min(model.get("num_negative", 1), 1))
    assert [m.get("label") or m.get("name") for m in cfg["models"]] == [
        m.get("label") or m.get("name") for m in full["models"]
    ]
    return cfg


@pytest.mark.parametrize("name", recipe_names())
def test_recipe_runs_a_few_batches_of_every_model(name, tmp_path, capsys):
    """... and warns about none of its own settings (each applies to the models that use it)."""
    cfg = _shrunk(name, tmp_path)
    out = tmp_path / "out"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compare_runs(cfg, out, progress=False)
    printed = capsys.readouterr()
    assert "note:" not in printed.out + printed.err
    assert not [str(w.message) for w in caught if "unused" in str(w.message) or "ignored" in str(w.message)]
    summaries = [json.loads(p.read_text()) for p in sorted(out.rglob("summary.json"))]
    assert len(summaries) == len(cfg["models"])
    for s in summaries:
        assert s["status"] == "completed", s["label"]
        assert s["notes"] == [], (s["label"], s["notes"])
        value = (s.get("final") or {}).get(s["metric"])
        assert value is not None and np.isfinite(value), s["label"]
    assert (out / "report.md").is_file()


def test_table_recipes_use_seeds_0_to_4():
    tables = [n for n in recipe_names() if "-table" in n]
    assert len(tables) >= 10
    for n in tables:
        assert resolve(load_recipe(n), [], command="compare")["seeds"] == [0, 1, 2, 3, 4], n


def test_a_shared_setting_goes_only_to_the_models_that_use_it(tmp_path, capsys):
    """copy-small's lr_orth (orthogonal parameters) reaches DTRIV and ENRNN runs only: the LSTM runs'
    configs hold null and warn about nothing; nothing is trained (job list)."""
    cfg = _shrunk("copy-small", tmp_path)
    out, jobs = tmp_path / "cmp", tmp_path / "jobs.txt"
    compare_runs(cfg, out, job_list=jobs)
    lines = [ln for ln in jobs.read_text().splitlines() if ln and not ln.startswith("#")]
    lr_orth = {}
    for line in lines:
        label = next(a for a in line.split() if a.startswith("model.name="))
        lr_orth[label.split("=", 1)[1]] = next(a for a in line.split() if a.startswith("optim.lr_orth="))
    assert lr_orth == {
        "LSTM": "optim.lr_orth=null",
        "MomentumLSTM": "optim.lr_orth=null",
        "DTRIV": "optim.lr_orth=0.0003",
        "MomentumDTRIV": "optim.lr_orth=0.0003",
        "ENRNN": "optim.lr_orth=0.0003",
        "MomentumENRNN": "optim.lr_orth=0.0003",
    }
    assert "note:" not in capsys.readouterr().out
    only_lstm = dict(cfg, models=[m for m in cfg["models"] if m["name"] == "LSTM"])  # nothing uses it
    compare_runs(only_lstm, tmp_path / "lstm", job_list=tmp_path / "jobs2.txt")
    assert "note: optim.lr_orth is set but none of the models has orthogonal parameters" in capsys.readouterr().out
