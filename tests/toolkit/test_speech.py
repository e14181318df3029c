"""TIMIT next-frame prediction: audio readers, resampling, STFT, corpus layout, the authors' tensor
files, the cache, the masked loss and a tiny training run -- on a generated fixture (TIMIT is licensed)."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest
import torch
from toolkit_helpers import metric_rows

from momentumrnn.toolkit.audio import (
    BINS,
    HOP,
    N_FFT,
    frame_count,
    hann,
    log_magnitude,
    parse_riff,
    parse_sphere,
    preprocess,
    read_audio,
    resample,
    stft,
)
from momentumrnn.toolkit.config import load_recipe, resolve
from momentumrnn.toolkit.errors import ToolkitError
from momentumrnn.toolkit.models import build_model
from momentumrnn.toolkit.tasks import build_task, timit_data, timit_fixture
from momentumrnn.toolkit.tasks.timit import masked_mse
from momentumrnn.toolkit.tasks.timit_data import FrameStore, scan_timit
from momentumrnn.toolkit.tasks.timit_fixture import make_fixture, riff_bytes, sphere_bytes

TRAIN_SPK, UTT = 3, 2


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A small synthetic TIMIT written by the command-line helper (LDC layout + the authors' tensors)."""
    root = tmp_path_factory.mktemp("fixture")
    assert (
        timit_fixture.main(["make-fixture", str(root), "--train-speakers", str(TRAIN_SPK), "--utterances", str(UTT)])
        == 0
    )
    return root


def timit(corpus, tmp_path, **opts):
    cfg = {"name": "timit", "data_dir": str(corpus / "timit"), "cache_dir": str(tmp_path / "cache"), **opts}
    return build_task(cfg)


# ---------------------------------------------------------------------------------------------
# signal processing


def test_stft_matches_a_direct_dft_and_the_log_magnitude_is_db():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(900)
    spec = stft(x)
    assert spec.shape == (frame_count(900), BINS) == (7, 129)
    m = 3
    seg = x[m * HOP : m * HOP + N_FFT] * (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT))
    n = np.arange(N_FFT)
    direct = np.array([np.sum(seg * np.exp(-2j * np.pi * k * n / N_FFT)) for k in range(BINS)])
    np.testing.assert_allclose(spec[m], direct, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(log_magnitude(spec), 10 * np.log10(np.abs(spec) ** 2 + 1e-5), rtol=1e-5)
    assert float(log_magnitude(np.zeros(3))[0]) == pytest.approx(-50.0)  # digital silence: the -50 dB floor


def test_frame_count_hop_and_overlap():
    assert [frame_count(n) for n in (0, 1, 256, 257, 384, 385, 8000)] == [1, 1, 1, 2, 2, 3, 62]
    # an impulse at sample 200 lies in frames 0 (offset 200) and 1 (offset 72): 50 % overlap, hop 128
    x = np.zeros(600)
    x[200] = 1.0
    mag = np.abs(stft(x))
    w = hann()
    assert mag.shape == (4, BINS)
    np.testing.assert_allclose(mag[0], w[200], rtol=1e-12)
    np.testing.assert_allclose(mag[1], w[72], rtol=1e-12)
    assert np.all(mag[2:] == 0)
    # the last frame is zero-padded: 300 samples make 2 frames whose second covers samples 128..383
    y = np.ones(300)
    assert stft(y).shape[0] == 2
    np.testing.assert_allclose(stft(y)[1, 0], np.sum(w[:172]))


def test_resampling_keeps_a_low_tone_and_removes_one_above_4_khz():
    t = np.arange(16000) / 16000
    rms = lambda v: float(np.sqrt(np.mean(v[300:-300] ** 2)))  # noqa: E731 (away from the edges)
    low = resample(np.sin(2 * np.pi * 1000 * t), 16000, 8000)
    assert low.shape == (8000,)
    assert rms(low) == pytest.approx(math.sqrt(0.5), rel=1e-3)
    ref = np.sin(2 * np.pi * 1000 * np.arange(8000) / 8000)
    assert np.max(np.abs(low[300:-300] - ref[300:-300])) < 2e-3  # same phase: no delay
    for f in (4100, 5000, 6000, 7500):
        high = resample(np.sin(2 * np.pi * f * t), 16000, 8000)
        assert rms(high) < 1e-3 * math.sqrt(0.5), f  # below -60 dB: nothing folds back under 4 kHz
    t12 = np.arange(12000) / 12000  # a rational ratio: up 2, down 3
    assert rms(resample(np.sin(2 * np.pi * 1000 * t12), 12000, 8000)) == pytest.approx(math.sqrt(0.5), rel=1e-3)
    assert rms(resample(np.sin(2 * np.pi * 5000 * t12), 12000, 8000)) < 1e-3
    assert resample(np.ones(5), 8000, 8000).tolist() == [1.0] * 5
    assert resample(np.ones(3), 16000, 8000).shape == (2,)


def test_preprocess_puts_a_tone_in_its_bin():
    t = np.arange(16000) / 16000
    frames = preprocess(0.5 * np.sin(2 * np.pi * 1000 * t), 16000)
    assert frames.shape == (62, BINS) and frames.dtype == np.float32
    assert (frames[5:-5].argmax(1) == 32).all()  # 1000 Hz / (8000 Hz / 256) = bin 32
    assert frames[5:-5, 32].min() > 25 and frames[5:-5, 100].max() < -20


# ---------------------------------------------------------------------------------------------
# audio files


def test_sphere_and_riff_files_are_read_exactly(tmp_path):
    pcm = (np.arange(-300, 300) * 50).astype(np.int16)
    for name, data in (
        ("le.WAV", sphere_bytes(pcm, 16000)),
        ("be.WAV", sphere_bytes(pcm, 16000, byte_order="10")),
        ("riff.WAV", riff_bytes(pcm, 16000)),
    ):
        (tmp_path / name).write_bytes(data)
        x, rate = read_audio(tmp_path / name)
        assert rate == 16000
        np.testing.assert_array_equal(x, pcm / 32768.0)
    header = sphere_bytes(pcm, 16000)[:1024]
    assert header.startswith(b"NIST_1A\n   1024\n") and b"sample_n_bytes -i 2" in header


def _sphere(pcm, fields: dict) -> bytes:
    """A SPHERE file with the given header fields (name -> "-type value")."""
    lines = ["NIST_1A", "   1024"] + [f"{k} {v}" for k, v in fields.items()] + ["end_head"]
    return ("\n".join(lines) + "\n").encode().ljust(1024) + np.asarray(pcm, "<i2").tobytes()


def test_bad_audio_files_name_the_file_and_the_fix(tmp_path):
    pcm = np.zeros(400, dtype=np.int16)
    good = sphere_bytes(pcm, 16000)
    base = {"sample_count": "-i 400", "sample_rate": "-i 16000", "channel_count": "-i 1"}
    cases = {
        "trunc_header.WAV": (good[:500], "truncated SPHERE header"),
        "no_end.WAV": (good[:1024].replace(b"end_head", b"xxx_xxxx") + good[1024:], "no end_head"),
        "trunc_data.WAV": (good[: 1024 + 300], "is truncated"),
        "bytes1.WAV": (_sphere(pcm, {**base, "sample_n_bytes": "-i 1"}), "only 16-bit PCM"),
        "ulaw.WAV": (_sphere(pcm, {**base, "sample_coding": "-s4 ulaw"}), "'ulaw' is not supported"),
        "shorten.WAV": (_sphere(pcm, {**base, "sample_coding": "-s26 pcm,embedded-shorten-v2.00"}), "sph2pipe"),
        "norate.WAV": (_sphere(pcm, {"sample_count": "-i 400"}), "no valid sample_rate"),
        "order.WAV": (_sphere(pcm, {**base, "sample_byte_format": "-s4 1032"}), "sample_byte_format"),
        "riff8.WAV": (riff_bytes(pcm, 16000).replace(struct.pack("<HH", 2, 16), struct.pack("<HH", 1, 8)), "8-bit"),
        "rifffloat.WAV": (
            riff_bytes(pcm, 16000).replace(struct.pack("<HHI", 1, 1, 16000), struct.pack("<HHI", 3, 1, 16000)),
            "floating-point",
        ),
        "rifftrunc.WAV": (riff_bytes(pcm, 16000)[:200], "truncated"),
        "text.WAV": (b"hello, this is not audio at all", "neither a NIST SPHERE nor a RIFF WAV"),
        "empty.WAV": (b"", "empty or truncated"),
    }
    for name, (data, msg) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ToolkitError, match=msg) as e:
            read_audio(tmp_path / name)
        assert name in str(e.value), name
        assert any(w in str(e.value) for w in ("restore", "convert", "sph2pipe")), name
    with pytest.raises(ToolkitError, match="cannot read"):
        read_audio(tmp_path / "missing.WAV")
    with pytest.raises(ToolkitError):
        parse_sphere(b"NIST_1A\nabc\n", "x")
    with pytest.raises(ToolkitError):
        parse_riff(b"RIFF\x00\x00\x00\x00WAVE", "x")


# ---------------------------------------------------------------------------------------------
# corpus layout and splits


def test_the_ldc_layout_is_split_like_the_authors(corpus):
    utts = scan_timit(corpus / "timit")
    assert {k: len(v) for k, v in utts.items()} == {"train": TRAIN_SPK * UTT, "val": 2 * UTT, "test": 2 * UTT}
    assert not any(u.name.startswith("SA") for v in utts.values() for u in v)  # SA sentences excluded
    assert {u.speaker for u in utts["val"]} <= timit_data.CORE_TEST_SPEAKERS  # core test (192 in TIMIT)
    assert {u.speaker for u in utts["test"]} <= timit_data.DEV_SPEAKERS  # development set (400)
    assert len(timit_data.DEV_SPEAKERS) == 50 and len(timit_data.CORE_TEST_SPEAKERS) == 24
    names = [u.path.name for u in utts["train"]]
    assert len(names) == len({(u.speaker, u.name) for u in utts["train"]})  # .WAV.wav copy counted once
    filtered = scan_timit(corpus / "timit", authors_train_filter=True)
    assert len(filtered["train"]) == (TRAIN_SPK - 1) * UTT  # FSAH0 dropped, as theirs
    assert scan_timit(corpus)["train"] == utts["train"]  # the parent folder works too


def test_bad_data_dirs_are_explained(corpus, tmp_path):
    with pytest.raises(ToolkitError, match=r"not a directory.*make-fixture"):
        timit(tmp_path / "nowhere", tmp_path).load()
    with pytest.raises(ToolkitError, match=r"licensed.*fixture"):
        build_task({"name": "timit"}).load()
    (tmp_path / "empty" / "TRAIN").mkdir(parents=True)
    (tmp_path / "empty" / "TEST").mkdir()
    with pytest.raises(ToolkitError, match=r"no .WAV files"):
        build_task({"name": "timit", "data_dir": str(tmp_path / "empty")}).load()
    (tmp_path / "other").mkdir()
    with pytest.raises(ToolkitError, match="neither TIMIT's TRAIN/ and TEST/"):
        build_task({"name": "timit", "data_dir": str(tmp_path / "other"), "format": "raw"}).load()
    (tmp_path / "notest" / "TRAIN" / "DR1" / "FCJF0").mkdir(parents=True)
    (tmp_path / "notest" / "TEST" / "DR1" / "MZZZ0").mkdir(parents=True)
    pcm = np.zeros(4000, dtype=np.int16)
    (tmp_path / "notest" / "TRAIN" / "DR1" / "FCJF0" / "SX1.WAV").write_bytes(sphere_bytes(pcm, 16000))
    (tmp_path / "notest" / "TEST" / "DR1" / "MZZZ0" / "SX2.WAV").write_bytes(sphere_bytes(pcm, 16000))
    with pytest.raises(ToolkitError, match=r"val split is empty.*core-test"):
        build_task({"name": "timit", "data_dir": str(tmp_path / "notest")}).load()
    with pytest.raises(ToolkitError, match="pairing=stored applies to the authors"):
        timit(corpus, tmp_path, pairing="stored").load()


def test_a_broken_file_in_the_corpus_names_the_file(corpus, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(corpus / "timit", copy)
    victim = sorted(copy.rglob("SX*.WAV"))[0]
    victim.write_bytes(victim.read_bytes()[:700])
    with pytest.raises(ToolkitError, match=f"{victim.name}: truncated SPHERE header"):
        build_task({"name": "timit", "data_dir": str(copy), "cache_dir": str(tmp_path / "c")}).load()


# ---------------------------------------------------------------------------------------------
# the authors' preprocessed tensors


def test_the_authors_tensor_files_hold_the_same_frames(corpus, tmp_path):
    raw = timit(corpus, tmp_path, normalize=False)
    tr_raw, te_raw = raw.load()
    ten = build_task({"name": "timit", "data_dir": str(corpus / "tensors"), "normalize": False})
    tr, te = ten.load()
    assert "authors' tensors" in ten.source and "raw TIMIT" in raw.source
    assert torch.equal(tr.x.lengths, tr_raw.x.lengths) and torch.equal(te.x.lengths, te_raw.x.lengths)
    torch.testing.assert_close(tr.x.data, tr_raw.x.data)
    # pairing stored: input x (the frames one step ahead, as the files hold them), target y (the frames)
    st = build_task({"name": "timit", "data_dir": str(corpus / "tensors"), "normalize": False, "pairing": "stored"})
    s_tr, _ = st.load()
    rows = torch.arange(len(s_tr))
    xb, yb = s_tr.x[rows], s_tr.y[rows]
    nb = tr.x[rows]
    L = int(tr.x.lengths[0])
    torch.testing.assert_close(st.inputs(xb)[0, : L - 1], nb[0, 1:L, :BINS])  # x[t] = frame t+1
    torch.testing.assert_close(st.targets(xb, yb)[0, :L, :BINS], nb[0, :L, :BINS])  # y[t] = frame t
    assert st.targets(xb, yb)[..., -1].gt(0).sum() == s_tr.x.lengths.sum()  # every stored frame counts
    assert ten.targets(nb, tr.y[rows])[..., -1].gt(0).sum() == (tr.x.lengths - 1).sum()  # next frame: L - 1 pairs


def test_the_npy_layout_and_corrupt_tensor_files(corpus, tmp_path):
    d = tmp_path / "npy"
    d.mkdir()
    for split, (fx, fz, fl) in timit_data.NPY_FILES.items():
        x, y, lens = torch.load(corpus / "tensors" / timit_data.TENSOR_FILES[split], weights_only=True)
        np.save(d / fx, x.numpy())
        np.save(d / fz, y.numpy())
        np.save(d / fl, lens.numpy())
    a, _ = build_task({"name": "timit", "data_dir": str(d)}).load()
    b, _ = build_task({"name": "timit", "data_dir": str(corpus / "tensors")}).load()
    torch.testing.assert_close(a.x.data, b.x.data)
    (d / "lens_eval.npy").write_bytes(b"garbage")
    with pytest.raises(ToolkitError, match=r"lens_eval.npy is corrupt.*re-create"):
        build_task({"name": "timit", "data_dir": str(d), "eval_split": "val"}).load()
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in timit_data.TENSOR_FILES.values():
        (bad / name).write_bytes((corpus / "tensors" / name).read_bytes())
    (bad / "training.pt").write_bytes(b"\x00 not a torch file")
    with pytest.raises(ToolkitError, match=r"training.pt is corrupt.*re-create"):
        build_task({"name": "timit", "data_dir": str(bad)}).load()
    x, y, lens = torch.load(corpus / "tensors" / "test.pt", weights_only=True)
    torch.save((x[..., :100], y[..., :100], lens), bad / "training.pt")
    with pytest.raises(ToolkitError, match=r"training.pt: x and y must both be \(N, T, 129\)"):
        build_task({"name": "timit", "data_dir": str(bad)}).load()
    torch.save((x, y, lens + 1000), bad / "training.pt")
    with pytest.raises(ToolkitError, match="lengths must be between 1 and T"):
        build_task({"name": "timit", "data_dir": str(bad)}).load()
    torch.save({"x": x}, bad / "training.pt")
    with pytest.raises(ToolkitError, match=r"must hold a tuple \(x, y, lengths\)"):
        build_task({"name": "timit", "data_dir": str(bad)}).load()
    (bad / "training.pt").write_bytes((corpus / "tensors" / "training.pt").read_bytes())
    (bad / "val.pt").unlink()
    with pytest.raises(ToolkitError, match=r"val.pt not found"):
        build_task({"name": "timit", "data_dir": str(bad), "eval_split": "val"}).load()


# ---------------------------------------------------------------------------------------------
# cache and normalisation


def test_preprocessing_is_cached_and_rebuilt_when_stale_or_corrupt(corpus, tmp_path, monkeypatch):
    first, _ = timit(corpus, tmp_path).load()
    files = list((tmp_path / "cache" / "timit").glob("timit-*.npz"))
    assert len(files) == 1 and not list((tmp_path / "cache" / "timit").glob(".*tmp*"))  # atomic, no leftovers

    def boom(*a, **k):
        raise AssertionError("preprocessed again")

    monkeypatch.setattr(timit_data, "preprocess", boom)
    again, _ = timit(corpus, tmp_path).load()  # from the cache
    torch.testing.assert_close(again.x.data, first.x.data)
    monkeypatch.undo()
    files[0].write_bytes(b"corrupt")
    rebuilt, _ = timit(corpus, tmp_path).load()
    torch.testing.assert_close(rebuilt.x.data, first.x.data)


def test_normalisation_uses_training_statistics(corpus, tmp_path):
    task = timit(corpus, tmp_path)
    tr, te = task.load()
    frames = tr.x.data
    torch.testing.assert_close(frames.mean(0), torch.zeros(BINS), atol=1e-4, rtol=0)
    torch.testing.assert_close(frames.std(0, unbiased=False), torch.ones(BINS), atol=1e-3, rtol=0)
    raw = timit(corpus, tmp_path, normalize=False)
    _, te_raw = raw.load()
    mean, std = task.stats
    torch.testing.assert_close(te.x.data, (te_raw.x.data - mean) / std)  # test split: the training statistics


# ---------------------------------------------------------------------------------------------
# the masked loss


def test_padding_never_counts_and_the_test_mse_is_the_frame_mean(corpus, tmp_path):
    task = timit(corpus, tmp_path, eval_split="val")
    _tr, te = task.load()
    torch.manual_seed(0)
    model = build_model({"name": "MomentumLSTM", "hidden_size": 8, "mu": 0.3, "epsilon": 0.1}, task).eval()
    rows = torch.arange(len(te))
    x, y = te.x[rows], te.y[rows]
    assert x.shape[1] == int(te.x.lengths.max()) and (x[..., -1].sum(1) == te.x.lengths).all()
    with torch.no_grad():
        loss = task.per_sample_loss(model(task.inputs(x)), task.targets(x, y))
        garbage = x.clone()
        pad = garbage[..., -1] == 0
        assert pad.any()
        garbage[..., :-1][pad] = torch.randn(int(pad.sum()), BINS) * 1e3  # padded values: anything
        garbage[..., 5][pad] = float("nan")
        loss2 = task.per_sample_loss(model(task.inputs(garbage)), task.targets(garbage, y))
        assert torch.equal(loss, loss2)
        # the reported test MSE (mean of the per-utterance values) = the mean over all valid frames and bins
        pred = model(task.inputs(x))
        target = x[:, 1:, :BINS]
        ref = masked_mse(pred, target, te.x.lengths - 1)
        assert float(loss.mean()) == pytest.approx(float(ref), rel=1e-5)


def test_variable_lengths_batch_composition_does_not_matter(corpus, tmp_path):
    task = timit(corpus, tmp_path)
    tr, _ = task.load()
    lengths = tr.x.lengths
    short, long = int(lengths.argmin()), int(lengths.argmax())
    assert lengths[short] < lengths[long]
    torch.manual_seed(1)
    model = build_model({"name": "LSTM", "hidden_size": 6}, task).eval()
    with torch.no_grad():
        alone = tr.x[[short]]
        both = tr.x[[short, long]]
        assert alone.shape[1] == lengths[short] and both.shape[1] == lengths[long]  # padded to the batch's longest
        la = task.per_sample_loss(model(task.inputs(alone)), task.targets(alone, tr.y[[short]]))
        lb = task.per_sample_loss(model(task.inputs(both)), task.targets(both, tr.y[[short, long]]))
    torch.testing.assert_close(la[0], lb[0])


def test_frame_store_indexing():
    data = torch.arange(12, dtype=torch.float32).reshape(6, 2)
    store = FrameStore(data, torch.tensor([1, 3, 2]))
    assert store.shape == (3, 3, 3) and len(store) == 3
    b = store[torch.tensor([2, 0])]
    assert b.shape == (2, 2, 3)
    assert b[0].tolist() == [[8.0, 9.0, 1.0], [10.0, 11.0, 1.0]]
    assert b[1].tolist() == [[0.0, 1.0, 1.0], [0.0, 0.0, 0.0]]
    assert store[1].shape == (3, 3) and store[:2].shape == (2, 3, 3) and store[-1][0, 0] == 8.0
    with pytest.raises(IndexError):
        store[torch.tensor([3])]


# ---------------------------------------------------------------------------------------------
# training through the toolkit, recipes, the fixture option


def test_a_tiny_training_run(cli, corpus, tmp_path):
    out = tmp_path / "run"
    code, _, err = cli(
        [
            "train",
            "--task",
            "timit",
            "--set",
            f"task.data_dir={corpus / 'tensors'}",
            "--model",
            "MomentumLSTM",
            "--set",
            "model.mu=0.3",
            "--set",
            "model.epsilon=0.1",
            "--hidden-size",
            "8",
            "--batch-size",
            "4",
            "--epochs",
            "2",
            "--optimizer",
            "adam",
            "--lr",
            "3e-3",
            "--no-progress",
            "--out",
            out,
        ]
    )
    assert code == 0, err
    rows = metric_rows(out)
    assert len(rows) == 2 and set(rows[0]) == {"epoch", "step", "train_loss", "test_loss", "lr"}
    assert all(math.isfinite(r["test_loss"]) for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metric"] == "test_loss" and summary["status"] == "completed"
    code, _, err = cli(
        [
            "train",
            "--task",
            "timit",
            "--set",
            f"task.data_dir={corpus / 'tensors'}",
            "--model",
            "LSTM",
            "--set",
            "model.bidirectional=true",
            "--no-progress",
            "--out",
            tmp_path / "bi",
        ]
    )
    assert code == 2 and "bidirectional" in err and not (tmp_path / "bi").exists()


def test_the_timit_recipes(corpus, tmp_path, monkeypatch):
    cfg = resolve(load_recipe("timit-table2"), [], command="compare")
    assert [m["name"] for m in cfg["models"]] == ["LSTM", "MomentumLSTM", "AdamLSTM", "RMSPropLSTM", "SRLSTM"]
    assert cfg["seeds"] == [0, 1, 2, 3, 4]
    assert cfg["optim"]["name"] == "adam" and cfg["optim"]["lr"] == 1e-4
    assert cfg["train"]["batch_size"] == 32 and cfg["train"]["epochs"] == 700
    m = cfg["models"][1]
    assert (m["mu"], m["epsilon"], m["hidden_size"], m["init"], m["forget_bias"]) == (0.3, 0.1, 158, "authors", -4.0)
    layer = build_model(m, build_task(cfg["task"])).recurrent
    H = 158
    for name in ("bias_ih_l0", "bias_hh_l0"):
        b = getattr(layer, name).detach()
        assert (b[H : 2 * H] == -4.0).all() and (b[:H] == 0).all()  # the authors' init: forget biases -4
    small = resolve(
        load_recipe("timit-small"), [("task.data_dir", str(corpus / "timit")), ("task.cache_dir", str(tmp_path / "c"))]
    )
    tr, te = build_task(small["task"]).load()
    assert len(tr) == TRAIN_SPK * UTT and len(te) == 2 * UTT
    # task.fixture: the synthetic corpus, generated once into the cache (smaller here)
    monkeypatch.setattr(timit_fixture, "make_fixture", lambda d, **k: make_fixture(d, train_speakers=2, utterances=1))
    fx = build_task({"name": "timit", "fixture": True, "cache_dir": str(tmp_path / "fx")})
    tr, te = fx.load()
    assert len(tr) == 2 and (tmp_path / "fx" / f"timit-fixture-v{timit_fixture.FIXTURE_VERSION}" / "tensors").is_dir()
    assert not [p for p in (tmp_path / "fx").iterdir() if p.name.startswith(".")]
