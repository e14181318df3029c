"""Task ``sequences``: your own sequences from one ``.npz`` file.

Arrays (``numpy.savez(path, x_train=..., y_train=..., ...)``):

* ``x_train`` ``(N, T, F)`` real features; ``y_train`` the targets:
  integer ``(N,)`` -> classification (classes ``0..C-1``, cross-entropy on the last step, metric
  accuracy); real ``(N, F')`` -> regression on the last step; real ``(N, T, F')`` -> regression at
  every step (MSE over the valid steps and the F' outputs of each sequence, averaged over
  sequences);
* ``x_test`` / ``y_test`` likewise (their ``T`` may differ from the training one), or none:
  ``task.test_fraction`` of the examples (default 0.2, a fixed draw from ``task.split_seed``) is
  held out;
* optional ``lengths_train`` / ``lengths_test``: integer ``(N,)`` valid lengths ``1..T``; the
  sequences then run packed (``torch.nn.utils.rnn.pack_padded_sequence``), the last step is each
  sequence's own last valid step, and padding never counts.

Features are normalised per feature with the mean and standard deviation of the training split's
valid steps only (``task.normalize``). Every malformed file is refused with one line that names
the array and what is wrong.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, NoReturn

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ToolkitError
from ..loaders import Split
from ..options import Opt
from .base import Task, register

ARRAYS = ("x_train", "y_train", "x_test", "y_test", "lengths_train", "lengths_test")


def _load_arrays(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise ToolkitError(f"task.data_file {str(path)!r} not found; give an .npz with x_train (N, T, F) and y_train")
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":  # an .npz is a zip archive
            raise ToolkitError(
                f"{path} is corrupt or not an .npz archive; save it with numpy.savez(path, x_train=..., y_train=...)"
            )
    try:
        with np.load(path, allow_pickle=False) as d:
            arrays = {k: np.asarray(d[k]) for k in d.files}
    except ValueError as e:
        hint = " (object arrays are refused: save numbers only)" if "pickle" in str(e).lower() else ""
        raise ToolkitError(
            f"{path} is not a readable .npz archive of numeric arrays{hint}; save it with "
            "numpy.savez(path, x_train=..., y_train=...)"
        ) from None
    except Exception as e:
        raise ToolkitError(
            f"{path} is corrupt or not an .npz archive ({type(e).__name__}); save it again with "
            "numpy.savez(path, x_train=..., y_train=...)"
        ) from None
    unknown = sorted(set(arrays) - set(ARRAYS))
    if unknown:
        raise ToolkitError(
            f"{path}: unknown array {unknown[0]!r}; the arrays are {', '.join(ARRAYS)} (x_train and y_train required)"
        )
    return arrays


class _Checker:
    def __init__(self, path: Path):
        self.path = path

    def fail(self, msg: str) -> NoReturn:
        raise ToolkitError(f"{self.path}: {msg}")

    def features(self, name: str, x: np.ndarray) -> np.ndarray:
        if x.ndim != 3:
            self.fail(f"{name} must be (N, T, F) (examples, time steps, features), got shape {x.shape}")
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)) or x.dtype == bool:
            self.fail(f"{name} must hold numbers, got dtype {x.dtype}")
        if 0 in x.shape:
            self.fail(f"{name} is empty (shape {x.shape})")
        self.finite(name, x)
        return x

    def finite(self, name: str, a: np.ndarray) -> None:
        if np.issubdtype(a.dtype, np.floating):
            bad = ~np.isfinite(a)
            if bad.any():
                where = np.argwhere(bad)[0].tolist()
                self.fail(
                    f"{name} holds {int(bad.sum())} NaN or infinite value(s) (first at index {where}); "
                    "clean or impute them first"
                )

    def lengths(self, name: str, lens: np.ndarray | None, n: int, T: int) -> np.ndarray | None:
        if lens is None:
            return None
        if lens.ndim != 1 or lens.shape[0] != n:
            self.fail(f"{name} must be (N,) = ({n},) lengths, one per sequence, got shape {lens.shape}")
        if not np.issubdtype(lens.dtype, np.integer) or lens.dtype == bool:
            self.fail(f"{name} must hold integers, got dtype {lens.dtype}")
        if lens.min() < 1 or lens.max() > T:
            self.fail(f"{name} must lie in 1..T = 1..{T}, got {int(lens.min())}..{int(lens.max())}")
        return lens.astype(np.int64)


@register
class OwnSequences(Task):
    name = "sequences"
    summary = (
        "your own sequences from an .npz (task.data_file): x_* (N, T, F); integer y (N,) = "
        "classification, real y (N, F') or (N, T, F') = regression on the last / every step; "
        "optional lengths_* (packed); test arrays or task.test_fraction"
    )
    default_target = None
    options: ClassVar[dict[str, Opt]] = {
        "data_file": Opt(
            "str",
            None,
            "the .npz file: x_train (N, T, F), y_train, optional x_test / y_test, lengths_train / lengths_test",
            nullable=True,
        ),
        "test_fraction": Opt(
            "float",
            None,
            "without x_test / y_test: hold out this fraction of the examples (null: 0.2)",
            lo=0,
            hi=1,
            lo_open=True,
            hi_open=True,
            nullable=True,
        ),
        "split_seed": Opt("int", 0, "seed of the held-out draw (test_fraction)", lo=0),
        "num_classes": Opt(
            "int", None, "classification: C (labels 0..C-1; null: the largest label + 1)", lo=2, nullable=True
        ),
        "normalize": Opt(
            "bool", True, "normalise each feature with the mean / std of the training split's valid steps"
        ),
    }

    def __init__(self, opts: dict):
        super().__init__(opts)
        self._data: tuple[Split, Split] | None = None
        self._info: dict = {}

    # -- reading and checking ----------------------------------------------------------------------
    def _read(self) -> tuple[Split, Split]:
        if self._data is not None:
            return self._data
        if not self.opts.get("data_file"):
            raise ToolkitError(
                "task sequences needs task.data_file: an .npz with x_train (N, T, F) and y_train "
                "(see `momentumrnn list tasks`)"
            )
        path = Path(os.path.expanduser(str(self.opts["data_file"])))
        a = _load_arrays(path)
        c = _Checker(path)
        for need in ("x_train", "y_train"):
            if need not in a:
                c.fail(f"lacks {need}; give x_train (N, T, F) and y_train")
        has_test = ("x_test" in a, "y_test" in a)
        if has_test[0] != has_test[1]:
            c.fail(
                f"has {'x_test' if has_test[0] else 'y_test'} without {'y_test' if has_test[0] else 'x_test'}; "
                "give both or neither"
            )
        if "lengths_test" in a and not has_test[0]:
            c.fail("has lengths_test but no x_test")
        frac = self.opts.get("test_fraction")
        if has_test[0] and frac is not None:
            raise ToolkitError(f"{path} holds x_test / y_test: task.test_fraction does not apply; remove one of them")
        splits: dict[str, list[Any]] = {}  # [x, y, lengths or None]
        for s in ("train", "test") if has_test[0] else ("train",):
            x = c.features(f"x_{s}", a[f"x_{s}"])
            y = a[f"y_{s}"]
            if y.shape[:1] != x.shape[:1]:
                c.fail(f"x_{s} holds {x.shape[0]} sequences but y_{s} {y.shape[0] if y.ndim else 0} targets")
            lens = c.lengths(f"lengths_{s}", a.get(f"lengths_{s}"), x.shape[0], x.shape[1])
            splits[s] = [x, y, lens]
        xt, yt = splits["train"][0], splits["train"][1]
        if yt.dtype == bool or not (np.issubdtype(yt.dtype, np.integer) or np.issubdtype(yt.dtype, np.floating)):
            c.fail(f"y_train must hold integer labels or real targets, got dtype {yt.dtype}")
        kind = "classification" if np.issubdtype(yt.dtype, np.integer) else "regression"
        for s, (x, y, _) in splits.items():
            if (np.issubdtype(y.dtype, np.integer) and y.dtype != bool) != (kind == "classification"):
                c.fail(f"y_{s} is {y.dtype} but y_train is {yt.dtype}: both integer labels or both real targets")
            if x.shape[2] != xt.shape[2]:
                c.fail(f"x_{s} has {x.shape[2]} features but x_train {xt.shape[2]}")
            if kind == "classification" and y.ndim != 1:
                c.fail(
                    f"integer y_{s} is classification and must be (N,) labels, got shape {y.shape} (real "
                    "targets (N, F') or (N, T, F') are regression: save them as floats)"
                )
            if kind == "regression":
                if y.ndim not in (2, 3) or (y.ndim == 3 and y.shape[1] != x.shape[1]):
                    c.fail(
                        f"real y_{s} must be (N, F') (last step) or (N, T, F') with T = {x.shape[1]} as "
                        f"x_{s} (every step), got shape {y.shape}"
                    )
                if y.ndim != yt.ndim or y.shape[-1] != yt.shape[-1]:
                    c.fail(f"y_{s} has shape {y.shape}, not the layout of y_train {yt.shape}")
                c.finite(f"y_{s}", y)
        if kind == "classification":
            lo = min(int(y.min()) for _, y, _ in splits.values())
            hi = max(int(y.max()) for _, y, _ in splits.values())
            C = self.opts.get("num_classes") or hi + 1
            if lo < 0 or hi >= C:
                bad = "y_train" if (splits["train"][1].min() < 0 or splits["train"][1].max() >= C) else "y_test"
                c.fail(
                    f"{bad} holds labels outside 0..{C - 1} (range {lo}..{hi}); labels must be 0..C-1"
                    + ("" if self.opts.get("num_classes") is None else " with task.num_classes = C")
                )
            if C < 2:
                c.fail(f"classification needs at least 2 classes, y_train holds only label {hi}")
        if not has_test[0]:
            splits = self._hold_out(splits["train"], frac if frac is not None else 0.2, c)
        self._info = {
            "kind": kind,
            "features": xt.shape[2],
            "outputs": C if kind == "classification" else yt.shape[-1],
            "every_step": kind == "regression" and yt.ndim == 3,
            "packed": any(v[2] is not None for v in splits.values()),
        }
        self._data = self._tensors(splits)
        return self._data

    def _hold_out(self, train: list, frac: float, c: _Checker) -> dict:
        x, y, lens = train
        n = x.shape[0]
        k = round(frac * n)
        if k < 1 or k >= n:
            c.fail(
                f"task.test_fraction={frac:g} of {n} sequences leaves {'no test' if k < 1 else 'no training'} "
                "example; change it or add x_test / y_test"
            )
        order = np.random.Generator(np.random.PCG64(self.opts.get("split_seed", 0))).permutation(n)
        test_idx, train_idx = np.sort(order[:k]), np.sort(order[k:])
        pick = lambda idx: [x[idx], y[idx], None if lens is None else lens[idx]]  # noqa: E731
        return {"train": pick(train_idx), "test": pick(test_idx)}

    def _tensors(self, splits: dict) -> tuple[Split, Split]:
        masks = {
            s: (np.ones(x.shape[:2], bool) if lens is None else np.arange(x.shape[1])[None] < lens[:, None])
            for s, (x, _, lens) in splits.items()
        }
        xt = splits["train"][0].astype(np.float64)
        if self.opts.get("normalize", True):  # statistics of the training split's valid steps only
            steps = xt[masks["train"]]
            mean, std = steps.mean(0), steps.std(0)
            std = np.where(std > 0, std, 1.0)
        else:
            mean, std = 0.0, 1.0
        out = []
        for s in ("train", "test"):
            x, y, _ = splits[s]
            x = ((x.astype(np.float64) - mean) / std) * masks[s][..., None]  # padding stays 0
            if self._info["packed"]:  # the valid-step mask rides along as a last channel
                x = np.concatenate([x, masks[s][..., None]], axis=-1)
            xt_ = torch.from_numpy(x.astype(np.float32))
            classify = self._info["kind"] == "classification"
            yt_ = torch.from_numpy(y.astype(np.int64) if classify else y.astype(np.float32))
            out.append(Split(xt_, yt_))
        return out[0], out[1]

    # -- what the run asks ---------------------------------------------------------------------------
    def load(self) -> tuple[Split, Split]:
        return self._read()

    @property
    def kind(self) -> str:  # type: ignore[override]
        self._read()
        return self._info["kind"]

    @property
    def metric(self) -> str:  # type: ignore[override]
        return "acc" if self.kind == "classification" else "loss"

    @property
    def input_size(self) -> int:  # type: ignore[override]
        self._read()
        return self._info["features"]

    @property
    def num_outputs(self) -> int:  # type: ignore[override]
        self._read()
        return self._info["outputs"]

    def describe(self) -> str:
        self._read()
        i = self._info
        what = (
            f"classification into {i['outputs']} classes"
            if i["kind"] == "classification"
            else f"regression of {i['outputs']} output(s) {'at every step' if i['every_step'] else 'on the last step'}"
        )
        return f"{self.opts['data_file']}: {i['features']} feature(s), {what}" + (", packed" if i["packed"] else "")

    def lengths(self, x: torch.Tensor) -> torch.Tensor | None:
        return x[..., -1].sum(1).long() if self._info.get("packed") else None

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., :-1].float() if self._info.get("packed") else x.float()

    def head_input(self, output: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if self._info.get("every_step"):
            return output
        return super().head_input(output, lengths)

    def targets(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not self._info.get("every_step"):
            return y
        valid = x[..., -1] if self._info.get("packed") else torch.ones(x.shape[:2], device=x.device)
        return torch.cat([y.float(), valid[..., None].float()], dim=-1)  # the step weights, last

    def per_sample_loss(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.kind == "classification":
            return F.cross_entropy(pred.float(), y.long(), reduction="none")
        if not self._info.get("every_step"):
            return (pred.float() - y.float()).pow(2).mean(-1)
        target, w = y[..., :-1], y[..., -1]
        err = (pred.float() - target).pow(2).mean(-1)
        return (err * w).sum(1) / w.sum(1).clamp(min=1)
