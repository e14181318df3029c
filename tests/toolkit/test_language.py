"""Task ``ptb`` (toolkit/language.py): PTB files, AWD-LSTM with any momentum layer, weight drop,
carried state, training through the toolkit, exact resume, recipes."""

from __future__ import annotations

import json
import math
import signal

import pytest
import torch
import yaml
from toolkit_helpers import metric_rows, run_subprocess

from momentumrnn.toolkit import wordlm
from momentumrnn.toolkit.errors import ToolkitError
from momentumrnn.toolkit.tasks import ptb as lang
from momentumrnn.toolkit.tasks import ptb_data

WORDS = [f"w{i}" for i in range(23)] + ["<unk>"]


def _write_corpus(d, lines=(90, 30, 34), seed=0, names=("train.txt", "valid.txt", "test.txt")):
    """Three small PTB-like files (one sentence a line, leading / trailing spaces as in PTB)."""
    g = torch.Generator().manual_seed(seed)
    d.mkdir(parents=True, exist_ok=True)
    for name, n in zip(names, lines):
        out = []
        for _ in range(n):
            k = int(torch.randint(3, 12, (1,), generator=g))
            # a Markov-ish stream: learnable, so that a few steps lower the loss
            idx = torch.randint(0, len(WORDS) - 1, (1,), generator=g).item()
            ws = []
            for _ in range(k):
                ws.append(WORDS[idx])
                idx = (idx * 3 + 1 + int(torch.randint(0, 2, (1,), generator=g))) % (len(WORDS) - 1)
            out.append(" " + " ".join(ws) + " ")
        (d / name).write_text("\n".join(out) + "\n", encoding="utf-8")
    return d


BASE = [
    "--task",
    "ptb",
    "--hidden-size",
    "12",
    "--set",
    "model.emb_size=8",
    "--set",
    "task.bptt=6",
    "--optimizer",
    "sgd_asgd",
    "--lr",
    "5",
    "--clip",
    "0.25",
    "--batch-size",
    "4",
    "--set",
    "train.eval_batch_size=2",
    "--no-progress",
]
TINY = [*BASE, "--model", "MomentumLSTM", "--set", "model.mu=0.3", "--set", "model.epsilon=0.6"]


# ---------------------------------------------------------------------------------------------
# data


def test_loader_vocab_eos_and_batchify(tmp_path):
    d = tmp_path / "ptb"
    d.mkdir()
    (d / "train.txt").write_text(" a b c \n b a \n\n", encoding="utf-8")
    (d / "valid.txt").write_text(" a z \n", encoding="utf-8")
    (d / "test.txt").write_text(" c \n", encoding="utf-8")
    with pytest.raises(ToolkitError, match=r"valid.txt: 1 word\(s\) not in the training vocabulary.*'z'.*vocab=all"):
        ptb_data.load_corpus(str(d), "train-valid", "train")
    (d / "train.txt").write_text(" a b c \n b a <unk> \n\n", encoding="utf-8")
    c = ptb_data.load_corpus(str(d), "train-valid", "train")
    v = c["vocab"]
    assert v.words == ["a", "b", "c", "<eos>", "<unk>"]  # order of first appearance, <eos> per line
    assert c["train"].tolist() == [0, 1, 2, 3, 1, 0, 4, 3, 3]  # the blank line is one <eos>
    assert c["test"].tolist() == [0, 4, 3] and c["unk_test"] == 1  # unseen 'z' -> <unk>
    c = ptb_data.load_corpus(str(d), "train-valid", "all")  # AWD's Corpus: every file of the layout
    assert "z" in c["vocab"].words and c["unk_test"] == 0
    (d / "test.txt").write_text(" z a \n", encoding="utf-8")
    c = ptb_data.load_corpus(str(d), "valid-test", "train")  # PTB-small: train on valid, test on test
    assert c["vocab"].words == ["a", "z", "<eos>"] and c["train"].tolist() == [0, 1, 2]
    assert c["test"].tolist() == [1, 0, 2]
    ids = torch.arange(11)
    b = ptb_data.batchify(ids, 3)  # 3 contiguous columns, the tail dropped
    assert b.tolist() == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]


def test_ptb_names_and_the_real_offline_files(tmp_path):
    d = _write_corpus(tmp_path / "p", names=("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"))
    c = ptb_data.load_corpus(str(d), "train-test", "train")
    assert c["files"]["train"].endswith("ptb.train.txt") and c["train"].numel() > 100
    real = "/work/shared/data/ptb"
    if ptb_data.find_file(__import__("pathlib").Path(real), "valid") is not None:
        c = ptb_data.load_corpus(real, "valid-test", "train")
        assert c["train"].numel() == 73760 and c["test"].numel() == 82430  # words + one <eos> a line


@pytest.mark.parametrize(
    "case", ["no_dir_set", "missing_dir", "missing_file", "missing_train", "empty", "binary", "not_utf8", "gzip"]
)
def test_bad_inputs_name_the_file_and_the_fix(tmp_path, monkeypatch, case):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    d = _write_corpus(tmp_path / "ptb")
    split, where, match = "train-valid", str(d), None
    if case == "no_dir_set":
        where, match = (
            None,
            r"task.data_dir is not set: give the folder holding train.txt and valid.txt.*task.download=true",
        )
    elif case == "missing_dir":
        where, match = str(tmp_path / "nope"), r"is not a directory; give the folder holding train.txt and valid.txt"
    elif case == "missing_file":
        (d / "valid.txt").unlink()
        match = r"valid.txt not found in .*ptb \(task.split=train-valid needs train.txt and valid.txt\)"
    elif case == "missing_train":
        (d / "train.txt").unlink()
        match = r"train.txt not found.*task.split=valid-test trains on valid.txt.*PTB-small"
    elif case == "empty":
        (d / "train.txt").write_text("\n\n  \n")
        match = r"train.txt holds no words \(empty file\); replace it"
    elif case == "binary":
        (d / "valid.txt").write_bytes(b"abc\x00\x01\x02def")
        match = r"valid.txt is a binary file, not text"
    elif case == "not_utf8":
        (d / "valid.txt").write_bytes(b" a b \xff\xfe c \n")
        match = r"valid.txt is not UTF-8 text \(bad byte at offset 5\)"
    elif case == "gzip":
        (d / "train.txt").write_bytes(b"\x1f\x8b\x08\x00rest")
        match = r"train.txt is gzip-compressed; decompress it"
    with pytest.raises(ToolkitError, match=match):
        ptb_data.load_corpus(where, split, "train")


def test_download_checks_the_md5_and_reports_no_network(tmp_path, monkeypatch):
    src = _write_corpus(tmp_path / "mirror", names=("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"))
    import dataclasses
    import hashlib

    from momentumrnn.toolkit import download as dl

    ptb = dl.SOURCES["ptb"]
    md5 = {n: hashlib.md5((src / n).read_bytes()).hexdigest() for n, _ in ptb.files}
    md5["ptb.test.txt"] = "0" * 32
    monkeypatch.setitem(
        dl.SOURCES, "ptb", dataclasses.replace(ptb, files=tuple(md5.items()), mirrors=(src.as_uri() + "/",))
    )
    dest = tmp_path / "dl"
    c = ptb_data.load_corpus(str(dest), "train-valid", "train", download=True)  # fetched, verified
    assert (dest / "ptb.train.txt").read_bytes() == (src / "ptb.train.txt").read_bytes()
    assert c["train"].numel() > 100
    with pytest.raises(ToolkitError, match="checksum mismatch"):
        ptb_data.load_corpus(str(dest), "train-test", "train", download=True)
    assert not (dest / "ptb.test.txt").exists() and not list(dest.glob(".*part"))  # nothing half-written
    # nothing listens on port 9
    monkeypatch.setitem(dl.SOURCES, "ptb", dataclasses.replace(dl.SOURCES["ptb"], mirrors=("http://127.0.0.1:9/",)))
    with pytest.raises(
        ToolkitError, match=r"no network: cannot download Penn Treebank ptb.test.txt.*task.split=valid-test"
    ):
        ptb_data.load_corpus(str(dest), "train-test", "train", download=True)


def test_window_plan_is_awd_like_and_deterministic():
    plan = ptb_data.window_plan(2000, 70, variable=True, seed=3, epoch=1)
    assert plan == ptb_data.window_plan(2000, 70, variable=True, seed=3, epoch=1)
    assert plan != ptb_data.window_plan(2000, 70, variable=True, seed=3, epoch=2)
    starts = [s for s, _ in plan]
    lens = [n for _, n in plan]
    assert starts[0] == 0 and all(a + n == b for a, n, b in zip(starts, lens, starts[1:]))
    assert starts[-1] + lens[-1] == 1999 and min(lens[:-1]) >= 5  # the whole stream, once
    assert 60 < sum(lens) / len(lens) < 72
    assert ptb_data.window_plan(20, 6, variable=False) == [(0, 6), (6, 6), (12, 6), (18, 1)]


def test_stream_loader_covers_the_stream_in_order_and_resumes():
    stream = ptb_data.batchify(torch.arange(403), 4)  # (100, 4)
    for variable in (False, True):
        ld = ptb_data.StreamLoader(stream, 7, variable=variable, seed=1, epoch_fn=lambda: 2)
        batches = list(ld)
        assert len(batches) == len(ld)
        x = torch.cat([b[0] for b in batches], 1)
        y = torch.cat([b[1] for b in batches], 1)
        assert torch.equal(x, stream[:-1].t()) and torch.equal(y, stream[1:].t())
        assert [int(b[2][1]) for b in batches] == list(range(len(batches)))  # window index
        assert all(int(b[2][0]) == 2 and int(b[2][3]) == len(batches) for b in batches)
    fixed = ptb_data.StreamLoader(stream, 7, variable=False, seed=1, epoch_fn=lambda: 0)
    task = lang.PennTreebank({"bptt": 7})
    assert task.steps_per_epoch(403, 4) == len(fixed)  # what progress bars count
    part = ptb_data.StreamLoader(
        stream, 7, variable=True, seed=1, columns=(2, 4), epoch_fn=lambda: 2, skip_fn=lambda: 3
    )
    assert torch.equal(next(iter(part))[0], batches[0][0][2:4])  # a process's columns
    part.load_state_dict(part.state_dict())  # Lightning's resume protocol: skip the done windows
    assert torch.equal(next(iter(part))[0], batches[3][0][2:4])


# ---------------------------------------------------------------------------------------------
# model

MODELS = [
    {"name": "LSTM"},
    {"name": "MomentumLSTM", "mu": 0.3, "epsilon": 0.6},
    {"name": "AdamLSTM"},
    {"name": "RMSPropLSTM"},
    {"name": "SRLSTM", "restart": 3},
    {"name": "RestartMomentumLSTM", "restart": 3},
    {"host": "gru", "scheme": "heavy_ball"},
    {"name": "RNN"},
    {"name": "MomentumExpRNN", "wdrop": 0.0},
]


def _leaves(state):
    if isinstance(state, torch.Tensor):
        yield state
    elif isinstance(state, (tuple, list)):
        for s in state:
            yield from _leaves(s)


def _model(spec, **kw):
    torch.manual_seed(0)
    cfg = dict(spec, hidden_size=12, emb_size=8, num_layers=3, **kw)
    return wordlm.build_word_lm(cfg, 30)


@pytest.mark.parametrize("spec", MODELS, ids=lambda s: s.get("name") or f"{s['host']}/{s['scheme']}")
def test_model_shapes_tied_weights_and_carried_state(spec):
    m = _model(spec)
    assert m.decoder.weight is m.encoder.weight and [r.hidden_size for r in m.rnns] == [12, 12, 8]
    assert [r.input_size for r in m.rnns] == [8, 12, 12]
    tokens = torch.randint(0, 30, (3, 11))
    m.eval()
    with torch.no_grad():
        full, state, out = m(tokens)
        a, s1, _ = m(tokens[:, :5])
        b, s2, _ = m(tokens[:, 5:], s1)  # the returned state (momentum included) carried over
    assert full.shape == (3, 11, 30) and out["raw"].shape == (3, 11, 8) and len(state) == 3
    assert torch.allclose(torch.cat([a, b], 1), full, atol=1e-5, rtol=0)
    flat = lambda s: list(_leaves(s))  # noqa: E731
    assert len(flat(state)) == len(flat(s2))
    assert all(torch.allclose(u, v, atol=1e-5) for u, v in zip(flat(state), flat(s2)))
    for layer, s in zip(m.rnns, state):  # each layer's state: (h, [c,] *momentum fields), the momentum carried
        assert layer.carry_momentum
        names = (("h", "c") if layer.host == "lstm" else ("h",)) + tuple(layer.scheme.state_fields)
        assert layer.state_names == names
        if len(names) == 1:
            assert isinstance(s, torch.Tensor)
        else:
            assert type(s) is tuple and len(s) == len(names) and all(isinstance(t, torch.Tensor) for t in s)
        if spec.get("name") not in ("LSTM", "RNN"):  # a momentum layer carries momentum state
            assert len(names) > (2 if layer.host == "lstm" else 1)
    # the state survives the checkpoint format (plain lists) and goes back into the layers
    plain = wordlm.state_to_plain(wordlm.map_state(s1, lambda t: t.clone()))
    back = wordlm.map_state(plain, lambda t: t)
    with torch.no_grad():
        b2, _, _ = m(tokens[:, 5:], back)
    assert torch.equal(b2, b)
    m.train()
    loss = m(tokens)[0].logsumexp(-1).mean()
    loss.backward()
    assert all(p.grad is not None for p in m.parameters())


def test_untied_model_and_bad_model_keys():
    m = _model({"name": "LSTM"}, tie_weights=False)
    assert m.decoder.weight is not m.encoder.weight and m.rnns[-1].hidden_size == 12
    with pytest.raises(ToolkitError, match=r"model.wdrop: 1.0 is out of range"):
        _model({"name": "LSTM"}, wdrop=1.0)
    with pytest.raises(ToolkitError, match=r"model.bidirectional"):
        _model({"name": "LSTM"}, bidirectional=True)
    with pytest.raises(ToolkitError, match=r"model.foo is not a parameter"):
        _model({"name": "LSTM"}, foo=1)
    with pytest.raises(ToolkitError, match=r"unknown model 'MomentumLSMT'"):
        _model({"name": "MomentumLSMT"})


def test_weight_drop_zeroes_entries_in_training_only_and_trains_the_raw_weight():
    m = _model(
        {"name": "MomentumLSTM", "mu": 0.3, "epsilon": 0.6}, wdrop=0.5, dropout=0, dropouth=0, dropouti=0, dropoute=0
    )
    layer = m.rnns[0]
    raw = layer.parametrizations.weight_hh_l0.original
    assert isinstance(raw, torch.nn.Parameter) and "weight_hh_l0" not in dict(layer.named_parameters())
    m.train()
    w = layer.weight_hh_l0
    zero = w == 0
    assert 0.35 < zero.float().mean() < 0.65  # about half the entries dropped...
    assert torch.allclose(w[~zero], raw[~zero] * 2)  # ...the others scaled by 1 / (1 - p)
    with torch.nn.utils.parametrize.cached():  # one mask per forward: the model evaluates under cached()
        assert torch.equal(layer.weight_hh_l0, layer.weight_hh_l0)
    m.eval()
    assert torch.equal(layer.weight_hh_l0, raw)  # identity in eval mode
    tokens = torch.randint(0, 30, (2, 7))
    with torch.no_grad():
        assert torch.equal(m(tokens)[0], m(tokens)[0])  # deterministic in eval
    m.train()
    torch.manual_seed(1)
    m(tokens)[0].square().mean().backward()
    assert raw.grad is not None and raw.grad.abs().sum() > 0
    g = raw.grad.clone()
    raw.grad = None
    torch.manual_seed(1)
    m(tokens)[0].square().mean().backward()
    assert torch.equal(raw.grad, g)  # same seed, same masks
    raw.grad = None
    w = layer.weight_hh_l0
    w.sum().backward()  # d/draw of sum(mask * raw / (1 - p)): 2 where kept, 0 where dropped
    assert torch.equal(raw.grad, (w != 0).float() * 2)
    with pytest.raises(ToolkitError, match="wdrop needs a plain recurrent weight"):
        wordlm.weight_drop_(layer, 0.5)  # already parametrized


def test_locked_and_embedding_dropout():
    x = torch.ones(4, 6, 5)
    torch.manual_seed(0)
    y = wordlm.locked_dropout(x, 0.5, True)
    assert torch.equal(y, y[:, :1].expand_as(y))  # one mask per sequence, the same at every step
    assert set(y.unique().tolist()) <= {0.0, 2.0}
    torch.manual_seed(0)
    part = wordlm.locked_dropout(x[2:], 0.5, True, columns=(2, 4))  # a process's share of the batch
    assert torch.equal(part, y[2:])
    assert wordlm.locked_dropout(x, 0.5, False) is x
    w = torch.randn(10, 3)
    torch.manual_seed(0)
    e = wordlm.embedded_dropout(w, torch.tensor([[1, 1, 2]]), 0.5, True)
    assert torch.equal(e[0, 0], e[0, 1])  # a word is dropped everywhere or nowhere
    assert torch.equal(wordlm.embedded_dropout(w, torch.tensor([[1, 2]]), 0.5, False)[0], w[[1, 2]])


# ---------------------------------------------------------------------------------------------
# training through the toolkit


def test_tiny_ptb_run_through_the_toolkit(cli, tmp_path):
    d = _write_corpus(tmp_path / "ptb")
    out = tmp_path / "run"
    code, _stdout, err = cli(
        ["train", *TINY, "--set", f"task.data_dir={d}", "--epochs", "2", "--evals-per-epoch", "2", "--out", out]
    )
    assert code == 0, err
    rows = metric_rows(out)
    assert set(rows[0]) == {"epoch", "step", "train_loss", "train_ppl", "test_loss", "test_ppl", "lr"}
    for r in rows:
        assert r["test_ppl"] == pytest.approx(math.exp(r["test_loss"]))
        assert r["train_ppl"] == pytest.approx(math.exp(r["train_loss"]))
    assert rows[-1]["epoch"] == 2.0 and rows[-1]["test_loss"] < rows[0]["test_loss"] < math.log(25)
    assert rows[-1]["lr"] == 5.0  # the seq_len / bptt scaling is undone after every step
    s = json.loads((out / "summary.json").read_text())
    assert s["metric"] == "test_ppl" and s["mode"] == "min" and s["task"] == "ptb"
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    st = ckpt["momentumrnn"]["task"]
    assert st["position"][1] > 0 and len(st["state"]) == 3  # the carried state of the 3 layers
    assert st["state"][0][0].shape == (1, 4, 12)  # h of layer 0: all 4 columns
    assert any(k.endswith("parametrizations.weight_hh_l0.original") for k in ckpt["state_dict"])
    code, md, err = cli(["report", out])
    assert code == 0 and "test ppl (lower is better)" in md


def test_each_step_uses_lr_times_seq_len_over_bptt(cli, tmp_path, monkeypatch):
    d = _write_corpus(tmp_path / "ptb")
    lens, lrs = [], []
    original = lang.PennTreebank.train_step

    def training_step(self, model, batch, ctx):
        lens.append(int(batch[2][2]))
        return original(self, model, batch, ctx)

    sgd_step = torch.optim.SGD.step

    def step(self, closure=None):  # the lr the update uses is the one after the closure ran
        loss = closure()
        lrs.append(self.param_groups[0]["lr"])
        sgd_step(self)
        return loss

    monkeypatch.setattr(lang.PennTreebank, "train_step", training_step)
    monkeypatch.setattr(torch.optim.SGD, "step", step)
    code, _, err = cli(["train", *TINY, "--set", f"task.data_dir={d}", "--epochs", "1", "--out", tmp_path / "r"])
    assert code == 0, err
    assert len(lens) == len(lrs) > 10 and len(set(lens)) > 2  # random window lengths
    assert lrs == [pytest.approx(5.0 * n / 6) for n in lens]


def test_ptb_small_names_the_setting_and_lstm_trains(cli, tmp_path):
    d = _write_corpus(tmp_path / "ptb")
    out = tmp_path / "small"
    code, _, err = cli(
        [
            "train",
            *BASE,
            "--model",
            "LSTM",
            "--set",
            "task.split=valid-test",
            "--set",
            f"task.data_dir={d}",
            "--set",
            "task.variable_bptt=false",
            "--epochs",
            "1",
            "--out",
            out,
        ]
    )
    assert code == 0, err
    assert json.loads((out / "summary.json").read_text())["task"] == "ptb-small"
    code, md, _ = cli(["report", out])
    assert "### ptb-small: test ppl" in md


def test_cli_errors_for_ptb(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    code, _, err = cli(["train", *TINY, "--out", tmp_path / "x"])
    assert code == 2 and "task.data_dir is not set" in err and not (tmp_path / "x").exists()
    d = _write_corpus(tmp_path / "ptb")
    code, _, err = cli(
        ["train", *TINY, "--set", f"task.data_dir={d}", "--batch-size", "5", "--devices", "2", "--out", tmp_path / "y"]
    )
    assert code == 2 and "make it a multiple of 2" in err
    code, _, err = cli(
        ["train", *BASE, "--set", f"task.data_dir={d}", "--model", "MomentumExpRNN", "--out", tmp_path / "z"]
    )
    assert code == 2 and "set model.wdrop=0" in err  # orthogonal hosts parametrize weight_hh
    assert not (tmp_path / "z").exists()


def test_resume_mid_epoch_is_exact(cli, tmp_path, monkeypatch):
    d = _write_corpus(tmp_path / "ptb", lines=(120, 30, 30))
    args = [
        "train",
        *TINY,
        "--set",
        f"task.data_dir={d}",
        "--epochs",
        "2",
        "--set",
        "model.dropout=0.2",
        "--set",
        "optim.asgd_nonmono=1",
        "--checkpoint-every",
        "5",
    ]
    part = tmp_path / "part"
    original = lang.PennTreebank.train_step

    def interrupted(self, model, batch, ctx):  # Ctrl-C during step 13 (a kill, in-process)
        if ctx.global_step == 12:
            raise KeyboardInterrupt
        return original(self, model, batch, ctx)

    monkeypatch.setattr(lang.PennTreebank, "train_step", interrupted)
    sigint = signal.getsignal(signal.SIGINT)
    try:  # Lightning's answer to Ctrl-C (it also ignores SIGINT from then on): exit 128 + SIGINT
        code, _, err = cli([*args, "--out", part])
    finally:
        signal.signal(signal.SIGINT, sigint)
    assert code == 130 and "the last checkpoint is at step 10" in err, err
    monkeypatch.setattr(lang.PennTreebank, "train_step", original)
    ck = torch.load(part / "checkpoints" / "last.ckpt", weights_only=True)
    assert ck["global_step"] == 10 and ck["momentumrnn"]["task"]["position"] == [0, 10]  # mid-epoch
    assert ck["momentumrnn"]["task"]["state"][0][0].shape == (1, 4, 12)
    code, out, err = cli([*args, "--out", part, "--resume"])
    assert code == 0, err
    assert "resuming from step 10" in out
    full = tmp_path / "full"
    code, _, err = cli([*args, "--out", full])
    assert code == 0, err
    assert metric_rows(part) == metric_rows(full)
    a = torch.load(part / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(full / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] > 60
    for k in b["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    sa, sb = a["momentumrnn"]["task"], b["momentumrnn"]["task"]
    assert sa["position"] == sb["position"]
    assert all(torch.equal(u, v) for u, v in zip(_leaves(sa["state"]), _leaves(sb["state"])))


@pytest.mark.ddp
@pytest.mark.subprocess
def test_two_processes_match_one(cli, tmp_path):
    d = _write_corpus(tmp_path / "ptb")
    args = ["train", *TINY, "--set", f"task.data_dir={d}", "--epochs", "1", "--evals-per-epoch", "2"]
    r = run_subprocess([*args, "--devices", "2", "--out", str(tmp_path / "ddp")], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    code, _, err = cli([*args, "--out", tmp_path / "one"])
    assert code == 0, err
    a, b = metric_rows(tmp_path / "ddp"), metric_rows(tmp_path / "one")
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        for k in ("train_loss", "test_loss"):
            assert ra[k] == pytest.approx(rb[k], rel=1e-5), (k, ra, rb)
    # the checkpoint holds the carried state of all columns, gathered from both processes
    sa = torch.load(tmp_path / "ddp" / "checkpoints" / "last.ckpt", weights_only=True)["momentumrnn"]["task"]
    sb = torch.load(tmp_path / "one" / "checkpoints" / "last.ckpt", weights_only=True)["momentumrnn"]["task"]
    assert sa["position"] == sb["position"] and sa["state"][0][0].shape == (1, 4, 12)
    assert all(
        torch.allclose(u.float(), v.float(), atol=1e-4) for u, v in zip(_leaves(sa["state"]), _leaves(sb["state"]))
    )


# ---------------------------------------------------------------------------------------------
# recipes


@pytest.mark.parametrize("recipe", ["ptb-table3", "ptb-small"])
def test_recipes_parse(recipe):
    from momentumrnn.toolkit.config import RECIPE_DIR, load_recipe, resolve

    text = (RECIPE_DIR / f"{recipe}.yaml").read_text()
    assert text.startswith("# ")
    cfg = resolve(load_recipe(recipe), [], command="compare")
    assert cfg["task"]["name"] == "ptb" and cfg["optim"]["name"] == "sgd_asgd"
    assert cfg["train"]["grad_clip"] == 0.25 and cfg["train"]["batch_size"] == 20
    labels = [m.get("label") or m["name"] for m in cfg["models"]]
    assert labels[:2] == ["LSTM", "MomentumLSTM"]
    mlstm = cfg["models"][1]
    assert (mlstm["mu"], mlstm["epsilon"]) == (0.0, 0.6)  # the authors' PTB run
    if recipe == "ptb-table3":
        assert cfg["seeds"] == [0, 1, 2, 3, 4] and cfg["task"]["bptt"] == 70 and cfg["train"]["epochs"] == 500
        assert (mlstm["hidden_size"], mlstm["emb_size"], mlstm["num_layers"]) == (1150, 400, 3)
        assert cfg["task"]["split"] == "train-valid"
    else:
        assert cfg["task"]["split"] == "valid-test" and cfg["task"]["bptt"] == 35
        assert len(labels) >= 4
    single = resolve(load_recipe(recipe), [("task.data_dir", "/x")])
    assert single["model"]["name"] == "MomentumLSTM" and yaml.safe_dump(single)
