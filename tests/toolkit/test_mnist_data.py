"""MNIST-family data: IDX loaders (raw / gzipped), downloads (local HTTP server, never the network),
bad input, permutations, Fashion-MNIST defaults, class-balanced subsets, CSV files."""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import http.server
import socket
import threading
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from toolkit_helpers import TINY_SMNIST

from momentumrnn.toolkit import download as dl
from momentumrnn.toolkit.errors import ToolkitError
from momentumrnn.toolkit.tasks import build_task
from momentumrnn.toolkit.tasks import mnist as tasks
from momentumrnn.toolkit.tasks.mnist import (
    IDX_FILES,
    load_csv,
    load_idx_dir,
    load_npz,
    read_idx,
    read_mnist_csv,
)

STEMS = list(IDX_FILES.values())


# ---------------------------------------------------------------------------------------------
# helpers


def idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def make_arrays(n_train=40, n_test=12, seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (n_train, 28, 28)),
        "y_train": np.arange(n_train) % 10,
        "x_test": rng.integers(0, 256, (n_test, 28, 28)),
        "y_test": rng.integers(0, 10, n_test),
    }


def write_idx_dir(d: Path, gz: bool = True, arrays=None, skip=()) -> dict[str, np.ndarray]:
    """The four IDX files (gzipped or raw) in ``d``; returns the arrays."""
    arrays = arrays or make_arrays()
    d.mkdir(parents=True, exist_ok=True)
    for key, stem in IDX_FILES.items():
        if key in skip:
            continue
        data = idx_bytes(arrays[key])
        if gz:
            (d / f"{stem}.gz").write_bytes(gzip.compress(data, mtime=0))
        else:
            (d / stem).write_bytes(data)
    return arrays


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


def dead_url() -> str:
    """A local URL nobody listens on (connection refused at once)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    requests: ClassVar[list] = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        type(self).requests.append(self.path)
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    """``(base_url, served_dir, requests)``: a local HTTP server in a thread."""
    root = tmp_path / "served"
    root.mkdir()
    handler = type("Handler", (_Quiet,), {"requests": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", root, handler.requests
    finally:
        httpd.shutdown()
        httpd.server_close()


def serve_mnist(root: Path, sub: str = "mnist", arrays=None) -> tuple[dict, tuple]:
    """Gzipped IDX files under ``root/sub``; returns (arrays, files-with-md5 for a Source)."""
    arrays = arrays or make_arrays(seed=5)
    write_idx_dir(root / sub, gz=True, arrays=arrays)
    files = tuple((f"{stem}.gz", md5((root / sub / f"{stem}.gz").read_bytes())) for stem in STEMS)
    return arrays, files


def patch_source(monkeypatch, key: str, files, mirrors) -> dl.Source:
    src = dataclasses.replace(dl.SOURCES[key], files=tuple(files), mirrors=tuple(mirrors))
    monkeypatch.setitem(dl.SOURCES, key, src)
    return src


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


# ---------------------------------------------------------------------------------------------
# loaders on generated IDX files


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("name", ["smnist", "psmnist", "fmnist", "pfmnist"])
def test_every_loader_reads_idx_files(tmp_path, gz, name):
    arrays = write_idx_dir(tmp_path / "idx", gz=gz)
    task = build_task({"name": name, "data_dir": str(tmp_path / "idx")}, seed=0)
    train, test = task.load()
    assert torch.equal(train.x, torch.from_numpy(arrays["x_train"].reshape(40, 784).astype(np.uint8)))
    assert train.y.tolist() == arrays["y_train"].tolist() and test.y.tolist() == arrays["y_test"].tolist()
    assert train.x.dtype == torch.uint8 and train.y.dtype == torch.int64 and len(test) == 12
    inp = task.inputs(train.x[:3])
    assert inp.shape == (3, 784, 1) and task.input_size == 1 and task.num_outputs == 10
    raw = train.x[:3].float() / 255
    if name.startswith("p"):
        assert torch.equal(inp[..., 0], raw[:, task.permutation])
        assert not torch.equal(inp[..., 0], raw)
    else:
        assert torch.equal(inp[..., 0], raw)


def test_idx_names_and_gzip_sniffing(tmp_path):
    arrays = make_arrays()
    d = tmp_path / "idx"
    d.mkdir()
    for key, stem in IDX_FILES.items():
        data = idx_bytes(arrays[key])
        if key == "x_train":  # the ".idx" spelling of some mirrors
            (d / stem.replace("-idx", ".idx")).write_bytes(data)
        elif key == "y_train":  # gunzipped but kept its .gz name
            (d / f"{stem}.gz").write_bytes(data)
        elif key == "x_test":  # gzipped without the .gz suffix
            (d / stem).write_bytes(gzip.compress(data))
        else:
            (d / f"{stem.replace('-idx', '.idx')}.gz").write_bytes(gzip.compress(data))
    train, test = load_idx_dir(d)
    assert train.y.tolist() == arrays["y_train"].tolist() and len(test) == 12


# ---------------------------------------------------------------------------------------------
# bad input: every message names the file and the fix


def _corrupt(d: Path, case: str) -> Path:
    """Break one file of a good gzipped IDX folder; return the file the message must name."""
    arrays = make_arrays()
    write_idx_dir(d, gz=True, arrays=arrays)
    p = d / "train-images-idx3-ubyte.gz"
    lp = d / "train-labels-idx1-ubyte.gz"
    if case == "truncated":
        p.write_bytes(gzip.compress(idx_bytes(arrays["x_train"])[:-100]))
    elif case == "magic":
        p.write_bytes(gzip.compress(b"\x00\x00\x0d\x03" + idx_bytes(arrays["x_train"])[4:]))
    elif case == "count":
        lp.write_bytes(gzip.compress(idx_bytes(arrays["y_train"][:-1])))
        return lp
    elif case == "labels":
        y = arrays["y_train"].copy()
        y[3] = 12
        lp.write_bytes(gzip.compress(idx_bytes(y)))
        return lp
    elif case == "gzip":
        p.write_bytes(p.read_bytes()[:200])
    elif case == "gzip-garbage":
        p.write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    elif case == "empty":
        p.write_bytes(b"")
    elif case == "swapped":
        p.write_bytes(gzip.compress(idx_bytes(arrays["y_train"])))
    elif case == "size":
        p.write_bytes(gzip.compress(idx_bytes(arrays["x_train"][:, :14, :])))
    elif case == "extra":
        p.write_bytes(gzip.compress(idx_bytes(arrays["x_train"]) + b"\x00"))
    elif case == "header":
        p.write_bytes(gzip.compress(b"\x00\x00\x08\x03\x00\x00"))
    return p


@pytest.mark.parametrize(
    "case, needle",
    [
        ("truncated", "truncated or corrupt"),
        ("magic", "bad magic number"),
        ("count", "holds 39 labels"),
        ("labels", "labels up to 12"),
        ("gzip", "corrupt or truncated gzip"),
        ("gzip-garbage", "corrupt or truncated gzip"),
        ("empty", "is empty"),
        ("swapped", "are the image and label files swapped"),
        ("size", "not 28x28"),
        ("extra", "truncated or corrupt"),
        ("header", "incomplete header"),
    ],
)
def test_corrupt_idx_files_are_named_with_the_fix(tmp_path, case, needle):
    bad = _corrupt(tmp_path / "idx", case)
    with pytest.raises(ToolkitError) as e:
        build_task({"name": "smnist", "data_dir": str(tmp_path / "idx")}).load()
    msg = str(e.value)
    assert needle in msg and str(bad) in msg, msg
    assert "--set task.download=true" in msg and ("delete it" in msg or "delete both" in msg), msg


def test_missing_partial_and_empty_directories(tmp_path):
    for d, needle in [
        (tmp_path / "nope", "is not a directory (it does not exist)"),
        (tmp_path / "empty", "0 of the 4"),
        (tmp_path / "partial", "3 of the 4"),
    ]:
        if d.name == "empty":
            d.mkdir()
        if d.name == "partial":
            write_idx_dir(d, skip=("y_test",))
        with pytest.raises(ToolkitError) as e:
            build_task({"name": "smnist", "data_dir": str(d)}).load()
        msg = str(e.value)
        assert needle in msg and str(d) in msg and "--set task.download=true" in msg, msg
        if d.name == "partial":
            assert "t10k-labels-idx1-ubyte[.gz]" in msg and "train-images" not in msg
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(ToolkitError, match="is a file, not a directory"):
        build_task({"name": "fmnist", "data_dir": str(f)}).load()


def test_unreadable_npz_and_data_file_kinds(tmp_path):
    with pytest.raises(ToolkitError, match=r"expected an .npz"):
        build_task({"name": "smnist", "data_file": str(tmp_path / "x.txt")}).load()
    with pytest.raises(ToolkitError, match="not found"):
        build_task({"name": "smnist", "data_file": str(tmp_path / "x.csv.gz")}).load()
    with pytest.raises(ToolkitError, match=r"does not apply to task.data_file"):
        build_task({"name": "smnist", "data_file": str(tmp_path / "x.csv"), "download": True}).load()
    bad = tmp_path / "bad.npz"
    np.savez(
        bad,
        x_train=np.zeros((2, 784), np.uint8),
        y_train=np.array([1, 11]),
        x_test=np.zeros((2, 784), np.uint8),
        y_test=np.array([0, 1]),
    )
    with pytest.raises(ToolkitError, match=r"y_train must hold integer labels 0..9 .*range 1..11"):
        load_npz(bad)


def test_cli_error_names_the_missing_file(cli, tmp_path):
    d = tmp_path / "partial"
    write_idx_dir(d, skip=("x_test",))
    code, _out, err = cli(["train", *TINY_SMNIST, "--set", f"task.data_dir={d}", "--out", tmp_path / "run"])
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert "t10k-images-idx3-ubyte[.gz]" in err and "--set task.download=true" in err
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------
# downloads (a local HTTP server; never the network)


def test_download_verifies_and_writes_atomically(server, tmp_path):
    base, root, _requests = server
    _, files = serve_mnist(root)
    src = dataclasses.replace(dl.SOURCES["mnist"], files=files, mirrors=(base + "mnist/",))
    logs = []
    dest = tmp_path / "data" / "new"
    p = dl.download_file(src, "t10k-labels-idx1-ubyte.gz", dest, log=logs.append)
    assert p == dest / "t10k-labels-idx1-ubyte.gz"
    assert p.read_bytes() == (root / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes()
    assert sorted(x.name for x in dest.iterdir()) == ["t10k-labels-idx1-ubyte.gz"]
    assert any("md5 verified" in m for m in logs)


def test_download_rejects_a_checksum_mismatch(server, tmp_path):
    base, root, _ = server
    _, files = serve_mnist(root)
    files = tuple((n, "0" * 32) for n, _ in files)
    src = dataclasses.replace(dl.SOURCES["mnist"], files=files, mirrors=(base + "mnist/",))
    dest = tmp_path / "dest"
    dest.mkdir()  # an existing folder stays (empty); one the download created would be removed
    logs = []
    with pytest.raises(ToolkitError) as e:
        dl.download_file(src, "train-labels-idx1-ubyte.gz", dest, log=logs.append)
    msg = str(e.value)
    assert "checksum mismatch" in msg and "train-labels-idx1-ubyte.gz" in msg and "no network" not in msg
    assert list(dest.iterdir()) == []  # nothing left behind, not even the temporary file
    assert any("failed" in m and "checksum mismatch" in m for m in logs)


def test_dead_and_missing_mirrors_fall_back(server, tmp_path):
    base, root, requests = server
    _, files = serve_mnist(root)
    dead = dead_url()
    src = dataclasses.replace(dl.SOURCES["mnist"], files=files, mirrors=(dead, base + "elsewhere/", base + "mnist/"))
    logs = []
    p = dl.download_file(src, "train-images-idx3-ubyte.gz", tmp_path / "d", log=logs.append)
    assert md5(p.read_bytes()) == dict(files)["train-images-idx3-ubyte.gz"]
    failed = [m for m in logs if "failed" in m]
    assert len(failed) == 2 and "cannot connect" in failed[0] and "HTTP 404" in failed[1]
    assert all("trying the next mirror" in m for m in failed)
    assert requests == ["/elsewhere/train-images-idx3-ubyte.gz", "/mnist/train-images-idx3-ubyte.gz"]


def test_file_urls_work(tmp_path):
    arrays, files = serve_mnist(tmp_path / "mirror")
    src = dataclasses.replace(dl.SOURCES["mnist"], files=files, mirrors=((tmp_path / "mirror").as_uri() + "/mnist/",))
    got = dl.download_missing(src, tmp_path / "d", [n for n, _ in files], log=lambda m: None)
    assert len(got) == 4
    train, _ = load_idx_dir(tmp_path / "d")
    assert train.y.tolist() == arrays["y_train"].tolist()


@pytest.mark.parametrize(
    "key, hint",
    [("mnist", "bundled 4000/1000 real-MNIST subset"), ("fashion-mnist", "apt-get install dataset-fashion-mnist")],
)
def test_offline_says_no_network_and_what_to_do(tmp_path, key, hint):
    src = dataclasses.replace(dl.SOURCES[key], mirrors=(dead_url(), dead_url()))
    with pytest.raises(ToolkitError) as e:
        dl.download_file(src, "train-labels-idx1-ubyte.gz", tmp_path / "d", log=lambda m: None)
    msg = str(e.value)
    assert msg.startswith("no network") and hint in msg and "by hand" in msg and str(tmp_path / "d") in msg
    assert not (tmp_path / "d").exists()  # the folder it created is removed again


def test_task_download_into_data_dir_only_fetches_missing_files(server, tmp_path, monkeypatch, capsys):
    base, root, requests = server
    arrays, files = serve_mnist(root)
    patch_source(monkeypatch, "mnist", files, (dead_url(), base + "mnist/"))
    d = tmp_path / "mine"
    write_idx_dir(d, gz=False, arrays=arrays, skip=("x_test", "y_test"))
    train, test = build_task({"name": "smnist", "data_dir": str(d), "download": True}).load()
    assert test.y.tolist() == arrays["y_test"].tolist() and len(train) == 40
    assert sorted(requests) == ["/mnist/t10k-images-idx3-ubyte.gz", "/mnist/t10k-labels-idx1-ubyte.gz"]
    err = capsys.readouterr().err
    assert "downloading MNIST t10k-images-idx3-ubyte.gz" in err and "trying the next mirror" in err
    # complete now: no request at all
    build_task({"name": "smnist", "data_dir": str(d), "download": True}).load()
    assert len(requests) == 2


def test_task_download_without_data_dir_uses_the_cache(server, tmp_path, monkeypatch):
    base, root, _ = server
    _arrays, files = serve_mnist(root)
    patch_source(monkeypatch, "mnist", files, (base + "mnist/",))
    train, test = build_task({"name": "psmnist", "download": True}).load()
    assert len(train) == 40 and len(test) == 12
    cache = tmp_path / "cache" / "momentumrnn" / "mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(n for n, _ in files)
    # without download: the bundled subset, not the cache
    assert len(build_task({"name": "smnist"}).load()[0]) == 4000


def test_task_download_offline(tmp_path, monkeypatch):
    patch_source(monkeypatch, "mnist", dl.SOURCES["mnist"].files, (dead_url(),))
    with pytest.raises(ToolkitError) as e:
        build_task({"name": "smnist", "data_dir": str(tmp_path / "x"), "download": True}).load()
    assert "no network" in str(e.value) and "task.data_dir: null" in str(e.value)


def test_pfmnist_downloads_fashion(server, tmp_path, monkeypatch):
    base, root, _requests = server
    arrays, files = serve_mnist(root, "fashion", make_arrays(seed=9))
    patch_source(monkeypatch, "fashion-mnist", files, (base + "fashion/",))
    monkeypatch.setattr(tasks, "FASHION_DIR", str(tmp_path / "nosuch"))
    train, _ = build_task({"name": "pfmnist", "download": True}, seed=0).load()
    assert train.y.tolist() == arrays["y_train"].tolist()
    assert (tmp_path / "cache" / "momentumrnn" / "fashion-mnist" / "t10k-images-idx3-ubyte.gz").exists()
    # the cache is used afterwards without download
    assert len(build_task({"name": "fmnist"}).load()[1]) == 12


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST default location


def test_fashion_default_dir(tmp_path, monkeypatch):
    sysdir = tmp_path / "usr-share"
    monkeypatch.setattr(tasks, "FASHION_DIR", str(sysdir))
    with pytest.raises(ToolkitError) as e:
        build_task({"name": "fmnist"}).load()
    msg = str(e.value)
    assert "does not exist" in msg and "apt-get install dataset-fashion-mnist" in msg
    assert "--set task.download=true" in msg and "task.data_dir" in msg
    arrays = write_idx_dir(sysdir, skip=("y_test",))
    with pytest.raises(ToolkitError, match="holds 3 of the 4 IDX files"):
        build_task({"name": "pfmnist"}).load()
    write_idx_dir(sysdir, arrays=arrays)
    train, _test = build_task({"name": "fmnist"}).load()
    assert train.y.tolist() == arrays["y_train"].tolist()
    (sysdir / "t10k-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(ToolkitError, match="apt-get install --reinstall dataset-fashion-mnist"):
        build_task({"name": "fmnist"}).load()


@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz").exists(),
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_real_fashion_mnist_balanced_subset():
    task = build_task({"name": "fmnist", "train_size": 1000, "test_size": 500, "subset": "balanced"})
    train, test = task.load()
    assert train.y.bincount().tolist() == [100] * 10 and test.y.bincount().tolist() == [50] * 10


# ---------------------------------------------------------------------------------------------
# permutations


def test_permutation_saved_reloaded_and_per_seed(tmp_path):
    for name in ("psmnist", "pfmnist"):
        run = tmp_path / name
        run.mkdir()
        t = build_task({"name": name, "perm_seed": 4}, seed=1)
        t.attach(run, writer=True)
        saved = np.load(run / "permutation.npy")
        assert saved.tolist() == t.permutation.tolist() and sorted(saved.tolist()) == list(range(784))
        # the same permutation whatever the run's seed, and a resumed run keeps the saved one
        assert build_task({"name": name, "perm_seed": 4}, seed=7).permutation.tolist() == saved.tolist()
        other = build_task({"name": name, "perm_seed": 5}, seed=1)
        assert other.permutation.tolist() != saved.tolist()
        other.attach(run, writer=False)
        assert other.permutation.tolist() == saved.tolist()
    # unchanged permutation of perm_seed (compatible with earlier runs)
    assert (
        build_task({"name": "psmnist"}).permutation.tolist()
        == np.random.Generator(np.random.PCG64(0)).permutation(784).tolist()
    )
    # per seed, only when asked
    a, b, c = (build_task({"name": "pfmnist", "perm_per_seed": True}, seed=s).permutation for s in (0, 1, 0))
    assert a.tolist() != b.tolist() and a.tolist() == c.tolist()
    with pytest.raises(ToolkitError, match="perm_per_seed needs the run's seed"):
        _ = build_task({"name": "psmnist", "perm_per_seed": True}).permutation
    bad = tmp_path / "bad"
    bad.mkdir()
    np.save(bad / "permutation.npy", np.zeros(784, np.int64))
    with pytest.raises(ToolkitError, match="not a permutation"):
        build_task({"name": "pfmnist"}).attach(bad, writer=True)


def test_pfmnist_run_saves_its_per_seed_permutation(cli, tmp_path, monkeypatch):
    d = tmp_path / "fashion"
    write_idx_dir(d)
    out = tmp_path / "run"
    code, _text, err = cli(
        [
            "train",
            "--task",
            "pfmnist",
            "--set",
            f"task.data_dir={d}",
            "--set",
            "task.perm_per_seed=true",
            "--seed",
            "3",
            "--model",
            "LSTM",
            "--hidden-size",
            "4",
            "--batch-size",
            "20",
            "--epochs",
            "1",
            "--limit-train-batches",
            "1",
            "--no-progress",
            "--out",
            out,
        ]
    )
    assert code == 0, err
    perm = np.load(out / "permutation.npy")
    assert perm.tolist() == tasks.draw_permutation(0, 3).tolist()


def test_old_configs_without_new_task_keys_still_resume():
    from momentumrnn.toolkit.config import config_changes, resolve

    new = resolve({"task": {"name": "psmnist"}}, [])
    old = {**new, "task": {k: v for k, v in new["task"].items() if k not in ("download", "subset", "perm_per_seed")}}
    assert config_changes(old, new) == []
    changed = resolve({"task": {"name": "psmnist", "perm_per_seed": True}}, [])
    assert config_changes(old, changed) == ["task.perm_per_seed"]


# ---------------------------------------------------------------------------------------------
# subsets


def test_balanced_subset_is_deterministic_and_balanced(tmp_path):
    arrays = make_arrays(n_train=200, n_test=60)
    arrays["y_train"] = np.where(np.arange(200) < 120, 1, np.arange(200) % 10)  # class 1 dominates the start
    write_idx_dir(tmp_path / "idx", arrays=arrays)
    opts = {"name": "smnist", "data_dir": str(tmp_path / "idx"), "train_size": 50}
    first, _ = build_task(opts).load()
    assert first.y.bincount(minlength=10)[1] == 50
    bal, _ = build_task({**opts, "subset": "balanced"}).load()
    assert bal.y.bincount(minlength=10).tolist() == [5] * 10
    again, _ = build_task({**opts, "subset": "balanced"}).load()
    assert torch.equal(bal.x, again.x) and torch.equal(bal.y, again.y)
    y = np.array([0] * 3 + [1] * 50 + [2] * 50)
    idx = tasks.balanced_indices(y, 31)
    assert np.bincount(y[idx]).tolist() == [3, 14, 14] and list(idx) == sorted(idx)
    with pytest.raises(ToolkitError, match="larger than the training set"):
        build_task({**opts, "subset": "balanced", "train_size": 201}).load()


def test_bundled_subset_balanced_option():
    train, test = build_task({"name": "smnist", "train_size": 2000, "test_size": 500, "subset": "balanced"}).load()
    assert train.y.bincount().tolist() == [200] * 10 and test.y.bincount().tolist() == [50] * 10


# ---------------------------------------------------------------------------------------------
# CSV files


def _csv_rows(n_per_class=10, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(10), n_per_class)
    rng.shuffle(y)
    return np.concatenate([rng.integers(0, 256, (len(y), 784)), y[:, None]], axis=1)


def _write_csv(path: Path, rows: np.ndarray, header: str = "") -> Path:
    text = header + "\n".join(",".join(str(v) for v in r) for r in rows) + "\n"
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize("fname", ["m.csv", "m.csv.gz"])
def test_csv_loader_splits_per_class(tmp_path, fname):
    rows = _csv_rows()
    p = _write_csv(tmp_path / fname, rows)
    train, test = build_task({"name": "psmnist", "data_file": str(p)}).load()
    assert len(train) == 80 and len(test) == 20
    assert test.y.bincount().tolist() == [2] * 10
    got = {(*tuple(x.tolist()), int(y)) for s in (train, test) for x, y in zip(s.x, s.y)}
    assert got == {tuple(int(v) for v in r) for r in rows}
    train2, _ = load_csv(p)
    assert torch.equal(train.x, train2.x)  # deterministic
    # a header naming the label column first (the Kaggle layout)
    kag = np.concatenate([rows[:, 784:], rows[:, :784]], axis=1)
    p2 = _write_csv(tmp_path / "k.csv", kag, "label," + ",".join(f"pixel{i}" for i in range(784)) + "\n")
    x, y = read_mnist_csv(p2)
    assert y.tolist() == rows[:, 784].tolist() and x.tolist() == rows[:, :784].tolist()


@pytest.mark.parametrize(
    "case, needle",
    [
        ("columns", "line 3: 784 columns, expected 785"),
        ("float", "line 2, column 5: '1.5' is not an integer"),
        ("word", "line 4, column 785: 'x' is not an integer"),
        ("pixel", "line 2: pixel 7 is 256, outside 0..255"),
        ("negative", "line 3: pixel 1 is -1, outside 0..255"),
        ("label", "line 5: label 10 is outside 0..9"),
        ("header", "a header row without a 'label' column"),
        ("empty", "is empty"),
        ("few", "too few rows"),
        ("gzip", "corrupt or truncated gzip"),
    ],
)
def test_bad_csv_files(tmp_path, case, needle):
    rows = _csv_rows().astype(object)
    p = tmp_path / ("bad.csv.gz" if case == "gzip" else "bad.csv")
    if case == "columns":
        lines = [",".join(map(str, r)) for r in rows]
        lines[2] = lines[2].rsplit(",", 1)[0]
        p.write_text("\n".join(lines))
    elif case in ("float", "word"):
        r, c = (1, 4) if case == "float" else (3, 784)
        rows[r, c] = "1.5" if case == "float" else "x"
        _write_csv(p, rows)
    elif case in ("pixel", "negative", "label"):
        r, c, v = {"pixel": (1, 6, 256), "negative": (2, 0, -1), "label": (4, 784, 10)}[case]
        rows[r, c] = v
        _write_csv(p, rows)
    elif case == "header":
        _write_csv(p, rows, "a,b,c\n")
    elif case == "empty":
        p.write_text("\n\n")
    elif case == "few":
        _write_csv(p, rows[:2])
    elif case == "gzip":
        _write_csv(p, rows)
        p.write_bytes(p.read_bytes()[:300])
    with pytest.raises(ToolkitError) as e:
        build_task({"name": "smnist", "data_file": str(p)}).load()
    assert needle in str(e.value) and str(p) in str(e.value), str(e.value)


SHARED_CSV = Path("/work/shared/data/mnist-5k/mnist_5k.csv.gz")


@pytest.mark.skipif(not SHARED_CSV.exists(), reason="the shared mnist_5k.csv.gz is not on this machine")
def test_shared_mnist_5k_csv_is_the_bundled_subset():
    train, test = build_task({"name": "smnist", "data_file": str(SHARED_CSV)}).load()
    btrain, btest = load_npz(tasks.BUNDLED_MNIST)
    assert torch.equal(train.x, btrain.x) and torch.equal(train.y, btrain.y)
    assert torch.equal(test.x, btest.x) and torch.equal(test.y, btest.y)


def test_read_idx_direct(tmp_path):
    p = tmp_path / "a-idx1-ubyte"
    p.write_bytes(idx_bytes(np.arange(5)))
    assert read_idx(p).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ToolkitError, match="need 3 dimensions"):
        read_idx(p, 3)
