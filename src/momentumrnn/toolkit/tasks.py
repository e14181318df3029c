"""Task registry: data, input transform, head, loss and metrics of each benchmark.

A task is a subclass of :class:`Task` registered with :func:`register`; its ``options`` (a dict of
:class:`~momentumrnn.toolkit.config.Opt`) are the keys allowed in the recipe's ``task`` section.
Data sets are held in memory as tensors (``Split``); the loader (:mod:`.loaders`) slices them
into batches and the task turns a raw batch into model inputs (:meth:`Task.inputs`), so the same
machinery serves images, synthetic sequences and, later, text or speech.

Tasks here: ``smnist`` (sequential MNIST, pixel by pixel; bundled real subset or an IDX
directory), ``psmnist`` (the same with one fixed pixel permutation, saved in the run),
``fmnist`` (sequential Fashion-MNIST from an IDX directory), ``adding`` (the adding problem,
synthetic, for quick checks).
"""

from __future__ import annotations

import gzip
import os
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


def _check_size(split: Split, n: Optional[int], what: str, key: str) -> Split:
    if n is None:
        return split
    if n > len(split):
        raise ToolkitError(f"task.{key}={n} is larger than the {what} set ({len(split)} examples); lower it")
    return Split(split.x[:n], split.y[:n])


# ---------------------------------------------------------------------------------------------
# MNIST-like data: bundled npz subset or IDX files

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
        if x.dtype != np.uint8 or y.min() < 0 or y.max() > 9:
            raise ToolkitError(f"{origin}: {s} images must be uint8 and labels 0..9")
        out.append(Split(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y.astype(np.int64))))
    return out[0], out[1]


IDX_FILES = {
    "x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte",
}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST format, optionally gzipped) as a uint8 array."""
    try:
        opener = gzip.open if str(path).endswith(".gz") else open
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise ToolkitError(f"cannot read {path} ({e}); re-download it") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ToolkitError(f"{path} is not an unsigned-byte IDX file (bad magic number); re-download it")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ToolkitError(f"{path} is truncated; re-download it")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    size = int(np.prod(dims)) if dims else 0
    if len(data) != header + size:
        raise ToolkitError(f"{path} is truncated or corrupt ({len(data) - header} bytes of data for "
                           f"shape {tuple(dims)}); re-download it")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def load_idx_dir(directory: str) -> tuple[Split, Split]:
    d = Path(os.path.expanduser(directory))
    if not d.is_dir():
        raise ToolkitError(f"task.data_dir {directory!r} is not a directory; give the folder holding the "
                           "MNIST-format IDX files (train-images-idx3-ubyte[.gz], ...)")
    arrays = {}
    for key, stem in IDX_FILES.items():
        cands = [d / stem, d / f"{stem}.gz", d / stem.replace("-idx", ".idx"), d / f"{stem.replace('-idx', '.idx')}.gz"]
        path = next((p for p in cands if p.exists()), None)
        if path is None:
            raise ToolkitError(f"{stem}[.gz] not found in {directory}; the directory must hold the four "
                               "MNIST-format IDX files")
        arrays[key] = read_idx(path)
    return _mnist_splits(arrays, str(d))


class _MNISTLike(Task):
    kind = "classification"
    input_size = 1
    num_outputs = 10
    metric = "acc"
    default_data_dir: Optional[str] = None
    options = {
        "data_dir": Opt("str", None, "folder of MNIST-format IDX files (null: the bundled 5k subset)",
                        nullable=True),
        "data_file": Opt("str", None, "an .npz with x_train, y_train, x_test, y_test (uint8)", nullable=True),
        "train_size": Opt("int", None, "use the first N training images (null: all)", lo=1, nullable=True),
        "test_size": Opt("int", None, "use the first N test images (null: all)", lo=1, nullable=True),
    }

    def load(self) -> tuple[Split, Split]:
        data_dir = self.opts.get("data_dir") or self.default_data_dir
        if self.opts.get("data_file") and self.opts.get("data_dir"):
            raise ToolkitError("task: give data_dir or data_file, not both")
        if self.opts.get("data_file"):
            train, test = load_npz(Path(os.path.expanduser(self.opts["data_file"])))
        elif data_dir:
            train, test = load_idx_dir(data_dir)
        else:
            train, test = load_npz(BUNDLED_MNIST)
        return (_check_size(train, self.opts.get("train_size"), "training", "train_size"),
                _check_size(test, self.opts.get("test_size"), "test", "test_size"))

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().div_(255.0).unsqueeze(-1)


@register
class SequentialMNIST(_MNISTLike):
    name = "smnist"
    summary = "sequential MNIST: 784 pixels one by one (input size 1), 10 classes; bundled 4000/1000 real subset"
    default_target = 0.9


@register
class SequentialFashionMNIST(_MNISTLike):
    name = "fmnist"
    summary = (f"sequential Fashion-MNIST (IDX files; default {FASHION_DIR}, "
               "from Debian's dataset-fashion-mnist)")
    default_data_dir = FASHION_DIR
    default_target = 0.8

    def load(self) -> tuple[Split, Split]:
        if not self.opts.get("data_dir") and not self.opts.get("data_file") and not Path(FASHION_DIR).is_dir():
            raise ToolkitError(f"Fashion-MNIST not found in {FASHION_DIR}; run `apt-get install "
                               "dataset-fashion-mnist` or set task.data_dir")
        return super().load()


@register
class PermutedMNIST(_MNISTLike):
    name = "psmnist"
    summary = "permuted sequential MNIST: one fixed pixel permutation (task.perm_seed), saved in the run"
    default_target = 0.9
    options = {
        **_MNISTLike.options,
        "perm_seed": Opt("int", 0, "seed of the fixed permutation (independent of the run's seed)", lo=0),
    }

    def __init__(self, opts: dict):
        super().__init__(opts)
        perm = np.random.Generator(np.random.PCG64(self.opts.get("perm_seed", 0))).permutation(784)
        self.permutation = torch.as_tensor(perm.astype(np.int64))

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
            tmp = path.with_name(".permutation.tmp.npy")
            np.save(tmp, self.permutation.numpy())
            os.replace(tmp, path)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(1, self.permutation.to(x.device)).float().div_(255.0).unsqueeze(-1)


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


def build_task(task_cfg: dict) -> Task:
    cls = get_task_class(task_cfg["name"])
    return cls({k: v for k, v in task_cfg.items() if k != "name"})
