"""Task registry: data, input transform, head, loss and metrics of each benchmark.

A task is a subclass of :class:`Task` registered with :func:`register`; its ``options`` (a dict of
:class:`~momentumrnn.toolkit.config.Opt`) are the keys allowed in the recipe's ``task`` section.
Data sets are held in memory as tensors (``Split``); the loader (:mod:`.loaders`) slices them
into batches and the task turns a raw batch into model inputs (:meth:`Task.inputs`), so the same
machinery serves images, synthetic sequences and, later, text or speech.

Tasks here: ``smnist`` (sequential MNIST, pixel by pixel; bundled real subset, an IDX directory
(downloaded on request, :mod:`.download`) or an MNIST CSV), ``psmnist`` (the same with one fixed
pixel permutation, saved in the run), ``fmnist`` / ``pfmnist`` (sequential / permuted
Fashion-MNIST from an IDX directory), ``adding`` (the adding problem, synthetic, for quick checks).
"""

from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import Opt, suggest
from .errors import ToolkitError

BUNDLED_MNIST = Path(__file__).resolve().parent / "data" / "mnist_demo.npz"
FASHION_DIR = "/usr/share/datasets/fashion-mnist"

TASKS: dict[str, type["Task"]] = {}


def register(cls: type["Task"]) -> type["Task"]:
    TASKS[cls.name] = cls
    return cls


def get_task_class(name: str) -> type["Task"]:
    key = name.lower()
    if key not in TASKS:
        raise ToolkitError(
            f"unknown task {name!r}{suggest(key, TASKS)}; choose one of {', '.join(sorted(TASKS))}"
        )
    return TASKS[key]


@dataclass
class Split:
    """One data split held in memory: raw inputs ``x`` (first dim = examples) and targets ``y``."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.x.shape[0])


class Task:
    name = ""
    summary = ""
    options: dict[str, Opt] = {}
    #: "classification" (cross-entropy on the last step, metric acc) or "regression" (MSE, metric loss)
    kind = "classification"
    input_size = 1
    num_outputs = 10
    #: the metric that picks the best checkpoint and the convergence target: "acc" or "loss"
    metric = "acc"
    default_target: Optional[float] = None
    #: the run's seed (train.seed), set by :func:`build_task` when known
    run_seed: Optional[int] = None

    def __init__(self, opts: dict):
        self.opts = dict(opts)

    def attach(self, run_dir: Path, *, writer: bool) -> None:
        """Called once the run directory exists: save (``writer``) or reload run-specific data."""

    # -- data ------------------------------------------------------------------------------------
    def load(self) -> tuple[Split, Split]:
        raise NotImplementedError

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Raw batch -> float model input ``(B, T, input_size)``."""
        return x.float()

    def targets(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Raw batch -> what :meth:`per_sample_loss` compares the prediction with (e.g. the next
        frames of ``x`` for next-frame prediction); ``y`` by default."""
        return y

    # -- model head and loss -----------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return "max" if self.metric == "acc" else "min"

    @property
    def metric_names(self) -> list[str]:
        return ["loss", "acc"] if self.kind == "classification" else ["loss"]

    def make_head(self, features: int) -> nn.Module:
        return nn.Linear(features, self.num_outputs)

    def head_input(self, output: torch.Tensor) -> torch.Tensor:
        """Recurrent output ``(B, T, F)`` -> what the head reads (the last step)."""
        return output[:, -1]

    def per_sample_loss(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.kind == "classification":
            return F.cross_entropy(pred.float(), y.long(), reduction="none")
        return (pred.float().squeeze(-1) - y.float()) ** 2

    def per_sample_stats(self, pred: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> dict:
        out = {"loss": loss.detach()}
        if self.kind == "classification":
            out["acc"] = (pred.detach().argmax(-1) == y.long()).float()
        return out

    def describe(self) -> str:
        return self.summary

    # -- hooks of tasks that own their model, loaders and steps (e.g. ``ptb`` in language.py) ----
    # The defaults are the toolkit's standard behaviour (a layer + head on in-memory examples).

    #: rebuild the loaders every epoch (epochs of different lengths, e.g. random BPTT windows)
    reload_loaders_every_epoch = False

    @property
    def display_name(self) -> str:
        """The task's name in summaries and reports (may name a non-standard setting)."""
        return self.name

    def steps_per_epoch(self, n_train: int, batch_size: int) -> int:
        """Optimizer steps in one epoch over ``n_train`` training examples (for progress bars)."""
        return max(1, -(-int(n_train) // int(batch_size)))

    def check_run(self, cfg: dict) -> None:
        """Refuse settings of the resolved run config that this task cannot honour (ToolkitError)."""

    def build_model(self, model_cfg: dict) -> nn.Module:
        """The model of a run (default: the named recurrent layer followed by :meth:`make_head`)."""
        from .models import build_model

        return build_model(model_cfg, self)

    def train_loader(self, module):
        return module.standard_train_loader()

    def eval_loader(self, module):
        return module.standard_eval_loader()

    def training_step(self, module, batch, batch_idx):
        """The loss of one training batch (``module``: the RunModule)."""
        return module.standard_training_step(batch, batch_idx)

    def validation_step(self, module, batch, batch_idx) -> None:
        module.standard_validation_step(batch, batch_idx)

    def finish_row(self, module, row: dict) -> None:
        """Adjust an evaluation's metrics row in place before it is recorded (derived metrics...)."""

    def run_state(self, module) -> dict:
        """Task state saved in checkpoints (tensors and primitive containers only)."""
        return {}

    def load_run_state(self, module, state: dict) -> None:
        """Restore what :meth:`run_state` saved (``{}`` for checkpoints without task state)."""


def _check_size(split: Split, n: Optional[int], what: str, key: str) -> Split:
    if n is None:
        return split
    if n > len(split):
        raise ToolkitError(f"task.{key}={n} is larger than the {what} set ({len(split)} examples); lower it")
    return Split(split.x[:n], split.y[:n])


# ---------------------------------------------------------------------------------------------
# MNIST-like data: bundled npz subset, IDX files (downloaded on request) or a CSV file

def load_npz(path: Path) -> tuple[Split, Split]:
    path = Path(path)
    if not path.exists():
        raise ToolkitError(f"data file {str(path)!r} not found; reinstall momentumrnn or set task.data_file")
    try:
        with np.load(path, allow_pickle=False) as d:
            arrays = {k: np.asarray(d[k]) for k in ("x_train", "y_train", "x_test", "y_test")}
    except KeyError as e:
        raise ToolkitError(f"data file {str(path)!r} lacks array {e}; expected x_train, y_train, x_test, y_test") from None
    except Exception as e:
        raise ToolkitError(f"data file {str(path)!r} is corrupt or not an .npz archive ({type(e).__name__}); "
                           "restore it (make_demo_subset.py rebuilds the bundled one)") from None
    return _mnist_splits(arrays, str(path))


def _mnist_splits(a: dict, origin: str) -> tuple[Split, Split]:
    out = []
    for s in ("train", "test"):
        x, y = a[f"x_{s}"], a[f"y_{s}"]
        if x.ndim == 3:
            x = x.reshape(x.shape[0], -1)
        if x.ndim != 2 or x.shape[1] != 784 or y.shape != (x.shape[0],) or x.shape[0] == 0:
            raise ToolkitError(f"{origin}: {s} images must be (N, 784) or (N, 28, 28) with N labels, "
                               f"got {x.shape} and {y.shape}")
        if x.dtype != np.uint8:
            raise ToolkitError(f"{origin}: x_{s} must be uint8 pixels 0..255, got {x.dtype}")
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() > 9:
            raise ToolkitError(f"{origin}: y_{s} must hold integer labels 0..9 (got {y.dtype}, "
                               f"range {y.min()}..{y.max()})")
        out.append(Split(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y.astype(np.int64))))
    return out[0], out[1]


IDX_FILES = {
    "x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte",
}
IDX_FIX = "delete it and run again with `--set task.download=true` to download it again"


def idx_candidates(directory: Path, stem: str) -> list[Path]:
    """The names a file may have: raw or gzipped, ``-idx`` or ``.idx`` (as some mirrors spell it)."""
    alt = stem.replace("-idx", ".idx")
    return [directory / stem, directory / f"{stem}.gz", directory / alt, directory / f"{alt}.gz"]


def find_idx_files(directory: Path) -> dict[str, Optional[Path]]:
    """Key (x_train, ...) -> the file present in ``directory``, or None."""
    return {key: next((p for p in idx_candidates(Path(directory), stem) if p.is_file()), None)
            for key, stem in IDX_FILES.items()}


def _read_bytes(path: Path, fix: str) -> bytes:
    """The content of a file, gunzipped when it starts with the gzip magic (whatever its name)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ToolkitError(f"cannot read {path} ({e.strerror or e}); check that it exists and is readable") from None
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise ToolkitError(f"{path} is a corrupt or truncated gzip file ({e}); {fix}") from None
    return data


def read_idx(path: Path, ndim: Optional[int] = None, fix: str = IDX_FIX) -> np.ndarray:
    """An IDX file (MNIST format, optionally gzipped) as a uint8 array; ``ndim``: the expected number
    of dimensions (3 for images, 1 for labels). Every error names the file and ``fix``."""
    path = Path(path)
    data = _read_bytes(path, fix)
    if not data:
        raise ToolkitError(f"{path} is empty; {fix}")
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ToolkitError(f"{path} is not an unsigned-byte IDX file (bad magic number "
                           f"{data[:4].hex()}, expected 0000080{ndim or 'N'}); {fix}")
    nd = data[3]
    if ndim is not None and nd != ndim:
        what = "images" if ndim == 3 else "labels"
        raise ToolkitError(f"{path} holds {nd}-dimensional data but {what} need {ndim} dimensions (are the "
                           f"image and label files swapped?); {fix}")
    header = 4 + 4 * nd
    if len(data) < header:
        raise ToolkitError(f"{path} is truncated (incomplete header); {fix}")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(nd)]
    size = int(np.prod(dims)) if dims else 0
    if len(data) != header + size:
        how = "too short" if len(data) < header + size else "too long"
        raise ToolkitError(f"{path} is truncated or corrupt: {len(data) - header} bytes of data for shape "
                           f"{tuple(dims)} ({how}); {fix}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def load_idx_dir(directory, *, missing_fix: Optional[str] = None, fix: Optional[str] = None
                 ) -> tuple[Split, Split]:
    """The four MNIST-format IDX files of ``directory`` as (train, test). ``missing_fix`` / ``fix``:
    what the error messages tell the user to do about missing / corrupt files."""
    d = Path(os.path.expanduser(str(directory)))
    missing_fix = missing_fix or (f"copy them into {d}, or add `--set task.download=true` to download "
                                  "them there")
    fix = fix or f"{IDX_FIX} (or copy a good copy into {d})"
    if not d.exists():
        raise ToolkitError(f"task.data_dir {str(directory)!r} is not a directory (it does not exist); it must hold "
                           f"the four MNIST-format IDX files (train-images-idx3-ubyte[.gz], ...): {missing_fix}")
    if not d.is_dir():
        raise ToolkitError(f"task.data_dir {str(directory)!r} is a file, not a directory; give the folder holding "
                           "the four MNIST-format IDX files (train-images-idx3-ubyte[.gz], ...)")
    paths = find_idx_files(d)
    missing = [IDX_FILES[k] for k, p in paths.items() if p is None]
    if missing:
        names = ", ".join(f"{s}[.gz]" for s in missing)
        raise ToolkitError(f"{d} lacks {names} ({4 - len(missing)} of the 4 MNIST-format IDX files are "
                           f"there); {missing_fix}")
    arrays = {k: read_idx(p, 3 if k.startswith("x") else 1, fix) for k, p in paths.items()}
    for s in ("train", "test"):
        x, y = arrays[f"x_{s}"], arrays[f"y_{s}"]
        px, py = paths[f"x_{s}"], paths[f"y_{s}"]
        if x.shape[1:] != (28, 28):
            raise ToolkitError(f"{px} holds images of {x.shape[1]}x{x.shape[2]} pixels, not 28x28; {fix}")
        if len(x) != len(y):
            both = fix.replace("delete it and", "delete both and").replace("download it again", "download them again")
            raise ToolkitError(f"{px} holds {len(x)} images but {py} holds {len(y)} labels; one of them is "
                               f"truncated or from another data set: {both}")
        if len(x) == 0:
            raise ToolkitError(f"{px} holds no images; {fix}")
        if y.max() > 9:
            raise ToolkitError(f"{py} holds labels up to {int(y.max())} ({int((y > 9).sum())} above 9), "
                               f"not a 10-class MNIST-format label file; {fix}")
    return _mnist_splits(arrays, str(d))


# -- CSV: one image a row, 784 pixels then the label ----------------------------------------------

CSV_SPLIT_SEED = 20200617  # the split of make_demo_subset.py: the bundled subset of mnist_5k.csv.gz
CSV_TEST_FRACTION = 0.2
CSV_FIX = "fix the file (784 integer pixels 0..255, then an integer label 0..9, per row)"


def _csv_where(path: Path, line: int) -> str:
    return f"{path}, line {line}"


def read_mnist_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """An MNIST CSV (optionally gzipped): 785 integer columns per row, the 784 pixels (0..255,
    row-major 28x28) then the label (0..9). An optional header row is skipped; a header naming its
    first column ``label`` puts the label first (the Kaggle layout). Returns uint8 (N, 784), (N,)."""
    path = Path(path)
    raw = _read_bytes(path, CSV_FIX)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ToolkitError(f"{path} is not a text CSV file; give a CSV of 785 integer columns "
                           "(784 pixels then the label)") from None
    lines = text.splitlines()
    numbers = [i for i, ln in enumerate(lines, 1) if ln.strip()]
    if not numbers:
        raise ToolkitError(f"{path} is empty; give a CSV of 785 integer columns (784 pixels then the label)")
    label_first = False
    first = [t.strip().lower() for t in lines[numbers[0] - 1].split(",")]
    if not all(t.lstrip("+-").isdigit() for t in first):  # a header row
        if first[0] == "label":
            label_first = True
        elif first[-1] != "label":
            raise ToolkitError(f"{_csv_where(path, numbers[0])}: a header row without a 'label' column as first "
                               f"or last column ({', '.join(first[:3])}, ...); remove it or name the label "
                               "column 'label'")
        numbers = numbers[1:]
        if not numbers:
            raise ToolkitError(f"{path} has a header row but no data rows")
    body = [lines[i - 1] for i in numbers]
    try:
        rows = np.loadtxt(body, delimiter=",", dtype=np.int64, ndmin=2, comments=None)
        bad = None if rows.shape[1] == 785 else 0
    except ValueError:
        rows, bad = None, 0
    if bad is not None:  # find the first bad row to name it
        for ln, row in zip(numbers, body):
            toks = row.split(",")
            if len(toks) != 785:
                raise ToolkitError(f"{_csv_where(path, ln)}: {len(toks)} columns, expected 785 (784 pixels "
                                   f"then the label); {CSV_FIX}")
            for j, t in enumerate(toks, 1):
                try:
                    int(t.strip())
                except ValueError:
                    raise ToolkitError(f"{_csv_where(path, ln)}, column {j}: {t.strip()!r} is not an integer; "
                                       f"{CSV_FIX}") from None
        raise ToolkitError(f"{path} cannot be read as a CSV of integers; {CSV_FIX}")
    if label_first:
        labels, pixels = rows[:, 0], rows[:, 1:]
    else:
        pixels, labels = rows[:, :784], rows[:, 784]
    out = (pixels < 0) | (pixels > 255)
    if out.any():
        r, c = np.argwhere(out)[0]
        raise ToolkitError(f"{_csv_where(path, numbers[r])}: pixel {c + 1} is {int(pixels[r, c])}, outside 0..255; "
                           f"{CSV_FIX}")
    out = (labels < 0) | (labels > 9)
    if out.any():
        r = int(np.flatnonzero(out)[0])
        raise ToolkitError(f"{_csv_where(path, numbers[r])}: label {int(labels[r])} is outside 0..9; {CSV_FIX}")
    return pixels.astype(np.uint8), labels.astype(np.uint8)


def split_per_class(labels: np.ndarray, test_fraction: float = CSV_TEST_FRACTION,
                    seed: int = CSV_SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic class-stratified split (the procedure of ``make_demo_subset.py``): per class,
    a fixed pseudo-random order, the first ``round(fraction * n_class)`` go to the test set; each
    set is then put in a fixed pseudo-random order. Returns (train indices, test indices)."""
    rng = np.random.Generator(np.random.PCG64(seed))
    train, test = [], []
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        k = int(round(test_fraction * len(idx)))
        test.append(idx[:k])
        train.append(idx[k:])
    train_idx, test_idx = np.concatenate(train), np.concatenate(test)
    return train_idx[rng.permutation(len(train_idx))], test_idx[rng.permutation(len(test_idx))]


def load_csv(path: Path) -> tuple[Split, Split]:
    """An MNIST CSV split per class 80/20 into (train, test), deterministically (for
    ``mnist_5k.csv.gz`` this is exactly the bundled subset)."""
    x, y = read_mnist_csv(path)
    tr, te = split_per_class(y)
    if len(tr) == 0 or len(te) == 0:
        raise ToolkitError(f"{path} has too few rows ({len(y)}) for a train/test split (20% of each class "
                           "goes to the test set); give at least 3 rows per class")
    return _mnist_splits({"x_train": x[tr], "y_train": y[tr], "x_test": x[te], "y_test": y[te]}, str(path))


def load_data_file(path) -> tuple[Split, Split]:
    """``task.data_file``: an .npz (x_train, y_train, x_test, y_test) or an MNIST .csv / .csv.gz."""
    p = Path(os.path.expanduser(str(path)))
    name = p.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        if not p.is_file():
            raise ToolkitError(f"task.data_file {str(path)!r} not found; give an existing MNIST CSV "
                               "(785 integer columns: 784 pixels then the label)")
        return load_csv(p)
    if name.endswith(".npz"):
        return load_npz(p)
    raise ToolkitError(f"task.data_file {str(path)!r}: expected an .npz (x_train, y_train, x_test, y_test) "
                       "or an MNIST .csv / .csv.gz file")


# -- subsets for CPU-budget runs ----------------------------------------------------------------

SUBSETS = ("first", "balanced")


def balanced_indices(y: np.ndarray, n: int) -> np.ndarray:
    """``n`` indices with the classes as equal as possible (the first examples of each class in
    file order; a class with too few examples leaves its share to the others, in class order),
    returned in file order. Deterministic."""
    classes, counts = np.unique(y, return_counts=True)
    k = len(classes)
    take = np.minimum(np.full(k, n // k) + (np.arange(k) < n % k), counts)
    short = n - int(take.sum())
    while short > 0:
        for i in np.flatnonzero(counts > take):
            if short == 0:
                break
            take[i] += 1
            short -= 1
    idx = np.concatenate([np.flatnonzero(y == c)[:t] for c, t in zip(classes, take)])
    return np.sort(idx)


def take_subset(split: Split, n: Optional[int], what: str, key: str, how: str = "first") -> Split:
    """The first ``n`` examples, or (``how='balanced'``) a class-balanced deterministic choice."""
    if n is None or how == "first":
        return _check_size(split, n, what, key)
    if n > len(split):
        raise ToolkitError(f"task.{key}={n} is larger than the {what} set ({len(split)} examples); lower it")
    idx = torch.from_numpy(balanced_indices(split.y.numpy(), n))
    return Split(split.x[idx], split.y[idx])


# -- the tasks ----------------------------------------------------------------------------------

def _mnist_options(data_dir_help: str) -> dict[str, Opt]:
    return {
        "data_dir": Opt("str", None, data_dir_help, nullable=True),
        "data_file": Opt("str", None, "an .npz with x_train, y_train, x_test, y_test (uint8), or an MNIST "
                         ".csv[.gz] (784 pixels then the label per row; split per class 80/20)", nullable=True),
        "download": Opt("bool", False, "download the missing IDX files (checksummed) into data_dir, or into "
                        "~/.cache/momentumrnn/ when data_dir is null"),
        "train_size": Opt("int", None, "use N training images (null: all)", lo=1, nullable=True),
        "test_size": Opt("int", None, "use N test images (null: all)", lo=1, nullable=True),
        "subset": Opt("choice", "first", "which N images train_size / test_size keep: first (file order) or "
                      "balanced (the first N/10 of each class)", choices=SUBSETS),
    }


class _MNISTLike(Task):
    kind = "classification"
    input_size = 1
    num_outputs = 10
    metric = "acc"
    #: key of :data:`download.SOURCES`
    source = "mnist"
    options = _mnist_options("folder of MNIST-format IDX files (null: the bundled 5k subset, or the download "
                             "cache with download: true)")

    def system_dirs(self) -> list[Path]:
        """Folders used, when complete, if ``data_dir`` is null (besides the download cache)."""
        return []

    def idx_dir(self) -> Optional[Path]:
        """The folder of IDX files to read, or None (the task's default data)."""
        from . import download as dl

        if self.opts.get("data_dir"):
            return Path(os.path.expanduser(self.opts["data_dir"]))
        for d in self.system_dirs():
            if all(p is not None for p in find_idx_files(d).values()):
                return d
        if self.opts.get("download"):
            return dl.cache_dir(self.source)
        return None

    def default_data(self) -> tuple[Split, Split]:
        return load_npz(BUNDLED_MNIST)

    def _fixes(self, d: Path) -> tuple[str, str]:
        from . import download as dl

        name = dl.SOURCES[self.source].name
        missing = (f"copy the files into {d} by hand, or add `--set task.download=true` to download "
                   f"{name} there (checksummed)")
        return missing, f"{IDX_FIX} (or copy a good copy into {d})"

    def download_missing(self, d: Path) -> None:
        from . import download as dl

        src = dl.SOURCES[self.source]
        names = [f"{IDX_FILES[k]}.gz" for k, p in find_idx_files(d).items() if p is None]
        if names:
            dl.download_missing(src, d, names)

    def load(self) -> tuple[Split, Split]:
        o = self.opts
        if o.get("data_file") and o.get("data_dir"):
            raise ToolkitError("task: give data_dir or data_file, not both")
        if o.get("data_file"):
            if o.get("download"):
                raise ToolkitError("task.download fetches IDX files into task.data_dir; it does not apply to "
                                   "task.data_file (set one or the other)")
            train, test = load_data_file(o["data_file"])
        else:
            d = self.idx_dir()
            if d is None:
                train, test = self.default_data()
            else:
                if o.get("download"):
                    if d.exists() and not d.is_dir():
                        raise ToolkitError(f"task.data_dir {str(d)!r} is a file, not a directory")
                    self.download_missing(d)
                missing_fix, fix = self._fixes(d)
                train, test = load_idx_dir(d, missing_fix=missing_fix, fix=fix)
        how = o.get("subset") or "first"
        return (take_subset(train, o.get("train_size"), "training", "train_size", how),
                take_subset(test, o.get("test_size"), "test", "test_size", how))

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().div_(255.0).unsqueeze(-1)


def draw_permutation(perm_seed: int, run_seed: Optional[int] = None) -> np.ndarray:
    """The pixel permutation of ``perm_seed`` (numpy PCG64); with ``run_seed``, one drawn from
    both (``task.perm_per_seed``)."""
    seed = perm_seed if run_seed is None else np.random.SeedSequence([perm_seed, run_seed])
    return np.random.Generator(np.random.PCG64(seed)).permutation(784)


class _Permuted:
    """Mixin of the permuted tasks: one fixed pixel permutation, saved in the run (permutation.npy)
    and reloaded on resume."""

    perm_options = {
        "perm_seed": Opt("int", 0, "seed of the fixed permutation (independent of the run's seed)", lo=0),
        "perm_per_seed": Opt("bool", False, "draw another permutation for each run seed (from perm_seed and "
                             "train.seed); default: the same permutation for every seed"),
    }
    _perm: Optional[torch.Tensor] = None

    @property
    def permutation(self) -> torch.Tensor:
        if self._perm is None:
            run_seed = None
            if self.opts.get("perm_per_seed"):
                run_seed = getattr(self, "run_seed", None)
                if run_seed is None:
                    raise ToolkitError("task.perm_per_seed needs the run's seed: build the task with "
                                       "build_task(cfg['task'], seed=cfg['train']['seed'])")
            perm = draw_permutation(self.opts.get("perm_seed", 0), run_seed)
            self._perm = torch.as_tensor(perm.astype(np.int64))
        return self._perm

    @permutation.setter
    def permutation(self, value: torch.Tensor) -> None:
        self._perm = value

    def attach(self, run_dir: Path, *, writer: bool) -> None:
        """A resumed run keeps the permutation it started with (saved as permutation.npy)."""
        path = Path(run_dir) / "permutation.npy"
        if path.exists():
            try:
                saved = np.load(path, allow_pickle=False)
            except Exception:
                raise ToolkitError(f"{path} is corrupt; restore it (or delete it to recreate it from "
                                   "task.perm_seed)") from None
            if saved.shape != (784,) or sorted(saved.tolist()) != list(range(784)):
                raise ToolkitError(f"{path} is not a permutation of 784 pixels; restore or delete it")
            self.permutation = torch.as_tensor(saved.astype(np.int64))
        elif writer:
            from .runfiles import atomic_write

            perm = self.permutation.numpy()
            atomic_write(path, lambda f: np.save(f, perm))

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(1, self.permutation.to(x.device)).float().div_(255.0).unsqueeze(-1)


@register
class SequentialMNIST(_MNISTLike):
    name = "smnist"
    summary = ("sequential MNIST: 784 pixels one by one (input size 1), 10 classes; bundled 4000/1000 real "
               "subset, IDX files (task.data_dir, task.download) or a CSV (task.data_file)")
    default_target = 0.9


_FASHION_DIR_HELP = (f"folder of Fashion-MNIST IDX files (null: {FASHION_DIR} when complete, else the download "
                     "cache ~/.cache/momentumrnn/fashion-mnist)")


@register
class SequentialFashionMNIST(_MNISTLike):
    name = "fmnist"
    summary = (f"sequential Fashion-MNIST (IDX files; default {FASHION_DIR}, from Debian's "
               "dataset-fashion-mnist, or downloaded with task.download)")
    source = "fashion-mnist"
    default_target = 0.8
    options = _mnist_options(_FASHION_DIR_HELP)

    def system_dirs(self) -> list[Path]:
        from . import download as dl

        return [Path(FASHION_DIR), dl.cache_dir(self.source)]

    def default_data(self) -> tuple[Split, Split]:
        from . import download as dl

        cache = dl.cache_dir(self.source)
        have = sum(p is not None for p in find_idx_files(Path(FASHION_DIR)).values())
        state = ("does not exist" if not Path(FASHION_DIR).is_dir() else
                 f"holds {have} of the 4 IDX files (is apt-get still installing it?)")
        raise ToolkitError(f"Fashion-MNIST not found: {FASHION_DIR} {state} and the download cache {cache} is "
                           "incomplete; run `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or add "
                           f"`--set task.download=true` to download it into {cache}, or set task.data_dir "
                           "to a folder holding the four IDX files")

    def _fixes(self, d: Path) -> tuple[str, str]:
        missing, fix = super()._fixes(d)
        if d == Path(FASHION_DIR):
            fix = ("reinstall Debian's copy (`apt-get install --reinstall dataset-fashion-mnist`), or set "
                   "task.data_dir to another copy")
        return missing, fix


@register
class PermutedMNIST(_Permuted, _MNISTLike):
    name = "psmnist"
    summary = "permuted sequential MNIST: one fixed pixel permutation (task.perm_seed), saved in the run"
    default_target = 0.9
    options = {**_MNISTLike.options, **_Permuted.perm_options}


@register
class PermutedFashionMNIST(_Permuted, SequentialFashionMNIST):
    name = "pfmnist"
    summary = ("permuted sequential Fashion-MNIST: one fixed pixel permutation (task.perm_seed), saved in "
               "the run")
    default_target = 0.8
    options = {**SequentialFashionMNIST.options, **_Permuted.perm_options}


@register
class AddingProblem(Task):
    name = "adding"
    summary = ("adding problem (synthetic): sum the two marked values of a random sequence; "
               "regression, MSE (predicting 1 scores about 0.167)")
    kind = "regression"
    input_size = 2
    num_outputs = 1
    metric = "loss"
    default_target = 0.05
    options = {
        "seq_len": Opt("int", 100, "sequence length T", lo=2),
        "train_size": Opt("int", 10000, "training examples", lo=1),
        "test_size": Opt("int", 1000, "test examples", lo=1),
        "data_seed": Opt("int", 1234, "seed of the generated data (independent of the run's seed)", lo=0),
    }

    @staticmethod
    def generate(n: int, T: int, gen: torch.Generator) -> Split:
        values = torch.rand(n, T, generator=gen)
        first = torch.randint(0, T // 2, (n,), generator=gen)
        second = torch.randint(T // 2, T, (n,), generator=gen)
        marks = torch.zeros(n, T)
        rows = torch.arange(n)
        marks[rows, first] = 1.0
        marks[rows, second] = 1.0
        y = values[rows, first] + values[rows, second]
        return Split(torch.stack([values, marks], dim=-1), y)

    def load(self) -> tuple[Split, Split]:
        gen = torch.Generator().manual_seed(self.opts["data_seed"])
        T = self.opts["seq_len"]
        return self.generate(self.opts["train_size"], T, gen), self.generate(self.opts["test_size"], T, gen)


def build_task(task_cfg: dict, seed: Optional[int] = None) -> Task:
    """The task of a resolved ``task`` section; ``seed``: the run's train.seed (``task.run_seed``)."""
    cls = get_task_class(task_cfg["name"])
    task = cls({k: v for k, v in task_cfg.items() if k != "name"})
    task.run_seed = seed
    return task


from . import synthetic  # noqa: E402,F401  (registers copy)
from . import language  # noqa: E402,F401  (registers ptb)
from . import speech  # noqa: E402,F401  (registers timit)
