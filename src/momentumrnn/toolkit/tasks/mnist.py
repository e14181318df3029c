"""The MNIST family: sequential and permuted MNIST and Fashion-MNIST (``smnist``, ``psmnist``,
``fmnist``, ``pfmnist``): 784 pixels one by one, 10 classes.

Data: the bundled real 5k subset, a folder of IDX files (downloaded on request, :mod:`..download`),
or a data file (.npz or MNIST CSV, :mod:`.mnist_files`); ``train_size`` / ``test_size`` /
``subset`` cut CPU-budget subsets; the permuted tasks keep one fixed permutation per run
(``permutation.npy``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from .. import download as dl
from ..errors import ToolkitError
from ..loaders import Split
from ..options import Opt
from ..runfiles import atomic_write
from .base import Task, check_size, register
from .mnist_files import (  # noqa: F401  (re-exported: the family's readers)
    IDX_FILES,
    IDX_FIX,
    find_idx_files,
    load_csv,
    load_data_file,
    load_idx_dir,
    load_npz,
    read_idx,
    read_mnist_csv,
    split_per_class,
)

BUNDLED_MNIST = Path(__file__).resolve().parents[1] / "data" / "mnist_demo.npz"
FASHION_DIR = "/usr/share/datasets/fashion-mnist"


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


def take_subset(split: Split, n: int | None, what: str, key: str, how: str = "first") -> Split:
    """The first ``n`` examples, or (``how='balanced'``) a class-balanced deterministic choice."""
    if n is None or how == "first":
        return check_size(split, n, what, key)
    if n > len(split):
        raise ToolkitError(f"task.{key}={n} is larger than the {what} set ({len(split)} examples); lower it")
    idx = torch.from_numpy(balanced_indices(split.y.numpy(), n))
    return Split(split.x[idx], split.y[idx])


# -- the tasks ----------------------------------------------------------------------------------


def _mnist_options(data_dir_help: str) -> dict[str, Opt]:
    return {
        "data_dir": Opt("str", None, data_dir_help, nullable=True),
        "data_file": Opt(
            "str",
            None,
            "an .npz with x_train, y_train, x_test, y_test (uint8), or an MNIST "
            ".csv[.gz] (784 pixels then the label per row; split per class 80/20)",
            nullable=True,
        ),
        "download": Opt(
            "bool",
            False,
            "download the missing IDX files (checksummed) into data_dir, or into "
            "~/.cache/momentumrnn/ when data_dir is null",
        ),
        "train_size": Opt("int", None, "use N training images (null: all)", lo=1, nullable=True),
        "test_size": Opt("int", None, "use N test images (null: all)", lo=1, nullable=True),
        "subset": Opt(
            "choice",
            "first",
            "which N images train_size / test_size keep: first (file order) or balanced (the first N/10 of each class)",
            choices=SUBSETS,
        ),
    }


class _MNISTLike(Task):
    kind = "classification"
    input_size = 1
    num_outputs = 10
    metric = "acc"
    #: key of :data:`download.SOURCES`
    source = "mnist"
    options = _mnist_options(
        "folder of MNIST-format IDX files (null: the bundled 5k subset, or the download cache with download: true)"
    )

    def system_dirs(self) -> list[Path]:
        """Folders used, when complete, if ``data_dir`` is null (besides the download cache)."""
        return []

    def idx_dir(self) -> Path | None:
        """The folder of IDX files to read, or None (the task's default data)."""
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
        name = dl.SOURCES[self.source].name
        missing = (
            f"copy the files into {d} by hand, or add `--set task.download=true` to download {name} there (checksummed)"
        )
        return missing, f"{IDX_FIX} (or copy a good copy into {d})"

    def download_missing(self, d: Path) -> None:
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
                raise ToolkitError(
                    "task.download fetches IDX files into task.data_dir; it does not apply to "
                    "task.data_file (set one or the other)"
                )
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
        return (
            take_subset(train, o.get("train_size"), "training", "train_size", how),
            take_subset(test, o.get("test_size"), "test", "test_size", how),
        )

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().div_(255.0).unsqueeze(-1)


def draw_permutation(perm_seed: int, run_seed: int | None = None) -> np.ndarray:
    """The pixel permutation of ``perm_seed`` (numpy PCG64); with ``run_seed``, one drawn from
    both (``task.perm_per_seed``)."""
    seed = perm_seed if run_seed is None else np.random.SeedSequence([perm_seed, run_seed])
    return np.random.Generator(np.random.PCG64(seed)).permutation(784)


class _Permuted:
    """Mixin of the permuted tasks: one fixed pixel permutation, saved in the run (permutation.npy)
    and reloaded on resume."""

    perm_options: ClassVar[dict[str, Opt]] = {
        "perm_seed": Opt("int", 0, "seed of the fixed permutation (independent of the run's seed)", lo=0),
        "perm_per_seed": Opt(
            "bool",
            False,
            "draw another permutation for each run seed (from perm_seed and "
            "train.seed); default: the same permutation for every seed",
        ),
    }
    _perm: torch.Tensor | None = None
    opts: dict  # (the task's)

    @property
    def permutation(self) -> torch.Tensor:
        if self._perm is None:
            run_seed = None
            if self.opts.get("perm_per_seed"):
                run_seed = getattr(self, "run_seed", None)
                if run_seed is None:
                    raise ToolkitError(
                        "task.perm_per_seed needs the run's seed: build the task with "
                        "build_task(cfg['task'], seed=cfg['train']['seed'])"
                    )
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
                raise ToolkitError(
                    f"{path} is corrupt; restore it (or delete it to recreate it from task.perm_seed)"
                ) from None
            if saved.shape != (784,) or sorted(saved.tolist()) != list(range(784)):
                raise ToolkitError(f"{path} is not a permutation of 784 pixels; restore or delete it")
            self.permutation = torch.as_tensor(saved.astype(np.int64))
        elif writer:
            perm = self.permutation.numpy()
            atomic_write(path, lambda f: np.save(f, perm))

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(1, self.permutation.to(x.device)).float().div_(255.0).unsqueeze(-1)


@register
class SequentialMNIST(_MNISTLike):
    name = "smnist"
    summary = (
        "sequential MNIST: 784 pixels one by one (input size 1), 10 classes; bundled 4000/1000 real "
        "subset, IDX files (task.data_dir, task.download) or a CSV (task.data_file)"
    )
    default_target = 0.9


_FASHION_DIR_HELP = (
    f"folder of Fashion-MNIST IDX files (null: {FASHION_DIR} when complete, else the download "
    "cache ~/.cache/momentumrnn/fashion-mnist)"
)


@register
class SequentialFashionMNIST(_MNISTLike):
    name = "fmnist"
    summary = (
        f"sequential Fashion-MNIST (IDX files; default {FASHION_DIR}, from Debian's "
        "dataset-fashion-mnist, or downloaded with task.download)"
    )
    source = "fashion-mnist"
    default_target = 0.8
    options = _mnist_options(_FASHION_DIR_HELP)

    def system_dirs(self) -> list[Path]:
        return [Path(FASHION_DIR), dl.cache_dir(self.source)]

    def default_data(self) -> tuple[Split, Split]:
        cache = dl.cache_dir(self.source)
        have = sum(p is not None for p in find_idx_files(Path(FASHION_DIR)).values())
        state = (
            "does not exist"
            if not Path(FASHION_DIR).is_dir()
            else f"holds {have} of the 4 IDX files (is apt-get still installing it?)"
        )
        raise ToolkitError(
            f"Fashion-MNIST not found: {FASHION_DIR} {state} and the download cache {cache} is "
            "incomplete; run `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or add "
            f"`--set task.download=true` to download it into {cache}, or set task.data_dir "
            "to a folder holding the four IDX files"
        )

    def _fixes(self, d: Path) -> tuple[str, str]:
        missing, fix = super()._fixes(d)
        if d == Path(FASHION_DIR):
            fix = (
                "reinstall Debian's copy (`apt-get install --reinstall dataset-fashion-mnist`), or set "
                "task.data_dir to another copy"
            )
        return missing, fix


@register
class PermutedMNIST(_Permuted, _MNISTLike):
    name = "psmnist"
    summary = "permuted sequential MNIST: one fixed pixel permutation (task.perm_seed), saved in the run"
    default_target = 0.9
    options: ClassVar[dict[str, Opt]] = {**_MNISTLike.options, **_Permuted.perm_options}


@register
class PermutedFashionMNIST(_Permuted, SequentialFashionMNIST):
    name = "pfmnist"
    summary = "permuted sequential Fashion-MNIST: one fixed pixel permutation (task.perm_seed), saved in the run"
    default_target = 0.8
    options: ClassVar[dict[str, Opt]] = {**SequentialFashionMNIST.options, **_Permuted.perm_options}
