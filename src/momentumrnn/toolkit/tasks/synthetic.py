"""Synthetic benchmarks, generated from a seed: the copying task and the adding problem.

The copying task (Hochreiter & Schmidhuber 1997; in the form of Arjovsky, Shah & Bengio 2016 and
the orthogonal-RNN papers, e.g. expRNN's ``1_copying.py``): the input is ``K`` random symbols
from an alphabet of 8, then ``T`` blanks, then a marker and ``K - 1`` more blanks (length
``T + 2K``, one-hot of size 10: 0 blank, 1..8 symbols, 9 marker). The output must be blank for the
first ``T + K`` steps and then reproduce the ``K`` symbols (9 output classes: blank + 8 symbols).
The loss is the cross-entropy averaged over **all** ``T + 2K`` output steps, as in expRNN; a
memoryless strategy (blank until the marker, then a uniform guess among the 8 symbols) scores
``K log 8 / (T + 2K)`` (``10 log 8 / (T + 20)`` for ``K = 10``), the baseline to beat.

Examples are not stored: example ``i`` of a split is a pure function of
``(data_seed, split, i)`` (an integer hash), computed when a batch asks for it. So a training set
of millions of sequences (expRNN draws fresh data at every step) costs no memory, is the same on
every machine and process, and a batch holds the same examples whatever else it holds.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ..errors import ToolkitError
from ..loaders import Split
from ..options import Opt
from .base import Task, register

BLANK = 0
MARKER = 9
ALPHABET = 8  # symbols 1..8
INPUT_SIZE = 10  # one-hot: blank, 8 symbols, marker
OUTPUT_CLASSES = 9  # blank + 8 symbols (the marker is never an output)

_M32 = 0xFFFFFFFF
_MUL = 0x045D9F3B  # odd 27-bit constant: products of 32-bit values stay below 2**63 (no overflow)


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (xorshift-multiply) on int64 tensors holding values in [0, 2**32)."""
    x = (((x >> 16) ^ x) * _MUL) & _M32
    x = (((x >> 16) ^ x) * _MUL) & _M32
    return (x >> 16) ^ x


def copy_symbols(seed: int, stream: int, rows: torch.Tensor, K: int) -> torch.Tensor:
    """The ``K`` symbols (values 1..8) of the given example indices: ``(len(rows), K)`` int64."""
    rows = rows.to(torch.int64).reshape(-1, 1)
    h = _mix32(torch.tensor((int(seed) & _M32) ^ 0x2545F491, dtype=torch.int64))
    h = _mix32(h ^ (int(stream) & _M32))
    h = _mix32(h ^ (rows & _M32))
    h = _mix32(h ^ (rows >> 32))
    h = _mix32(h ^ torch.arange(K, dtype=torch.int64).reshape(1, -1))
    return h % ALPHABET + 1


class CopyRows:
    """The inputs of one split of the copying task, generated on demand.

    Indexing like a tensor of shape ``(n, T + 2K)`` (an int, a slice, a list or an index tensor)
    returns the int64 symbols of those examples: ``K`` symbols, ``T`` blanks, the marker, ``K - 1``
    blanks."""

    def __init__(self, n: int, T: int, K: int, seed: int, stream: int):
        self.n, self.T, self.K, self.seed, self.stream = int(n), int(T), int(K), int(seed), int(stream)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, self.T + 2 * self.K)

    def __len__(self) -> int:
        return self.n

    def _rows(self, index: Any) -> tuple[torch.Tensor, bool]:
        if isinstance(index, int):
            if not -self.n <= index < self.n:
                raise IndexError(f"index {index} is out of range for {self.n} examples")
            return torch.tensor([index % self.n]), True
        if isinstance(index, slice):
            return torch.arange(*index.indices(self.n)), False
        rows = torch.as_tensor(index, dtype=torch.int64).reshape(-1)
        if rows.numel() and (int(rows.min()) < -self.n or int(rows.max()) >= self.n):
            raise IndexError(f"index out of range for {self.n} examples")
        return rows % max(self.n, 1), False

    def __getitem__(self, index: Any) -> torch.Tensor:
        rows, single = self._rows(index)
        K, T = self.K, self.T
        x = torch.zeros(rows.numel(), T + 2 * K, dtype=torch.int64)
        x[:, :K] = copy_symbols(self.seed, self.stream, rows, K)
        x[:, T + K] = MARKER
        return x[0] if single else x


def memoryless_baseline(T: int, K: int = 10) -> float:
    """Cross-entropy of the best strategy without memory: ``K log 8 / (T + 2K)``."""
    return K * math.log(ALPHABET) / (T + 2 * K)


@register
class CopyingTask(Task):
    name = "copy"
    summary = (
        "copying task (synthetic, as in expRNN): remember 10 symbols of 8 over a delay of seq_len "
        "blanks; per-step cross-entropy over all T + 20 steps (memoryless baseline "
        "10 log 8 / (T + 20): 0.173 at T = 100, 0.0204 at T = 1000), accuracy on the copied symbols"
    )
    kind = "classification"
    input_size = INPUT_SIZE
    num_outputs = OUTPUT_CLASSES
    metric = "loss"
    default_target = None
    options: ClassVar[dict[str, Opt]] = {
        "seq_len": Opt("int", 100, "delay T: blanks between the symbols and the marker (sequence length T + 2K)", lo=1),
        "copy_len": Opt("int", 10, "K: symbols to remember", lo=1),
        "train_size": Opt("int", 100_000, "training sequences (generated on demand: no memory cost)", lo=1),
        "test_size": Opt("int", 1000, "test sequences", lo=1),
        "data_seed": Opt("int", 1234, "seed of the generated data (independent of the run's seed)", lo=0),
    }

    @property
    def T(self) -> int:
        return int(self.opts.get("seq_len", 100))

    @property
    def K(self) -> int:
        return int(self.opts.get("copy_len", 10))

    @property
    def baseline(self) -> float:
        return memoryless_baseline(self.T, self.K)

    def describe(self) -> str:
        return (
            f"copying task: {self.K} symbols, delay T = {self.T} (length {self.T + 2 * self.K}); memoryless "
            f"baseline {self.K} log 8 / (T + {2 * self.K}) = {self.baseline:.4f}"
        )

    def load(self) -> tuple[Split, Split]:
        seed = self.opts.get("data_seed", 1234)
        n_train, n_test = self.opts.get("train_size", 100_000), self.opts.get("test_size", 1000)
        if self.T + 2 * self.K > 1_000_000:
            raise ToolkitError(f"task.seq_len={self.T} makes sequences of {self.T + 2 * self.K} steps; lower it")
        train = Split(CopyRows(n_train, self.T, self.K, seed, 0), torch.zeros(n_train, dtype=torch.uint8))
        test = Split(CopyRows(n_test, self.T, self.K, seed, 1), torch.zeros(n_test, dtype=torch.uint8))
        return train, test

    # -- model input, targets, head --------------------------------------------------------------
    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return F.one_hot(x.long(), INPUT_SIZE).float()

    def targets(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Blank for the first ``T + K`` steps, then the ``K`` symbols of the input."""
        K = self.K
        out = torch.zeros(x.shape, dtype=torch.long, device=x.device)
        out[:, -K:] = x[:, :K].long()
        return out

    def head_input(self, output: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return output  # one prediction per step

    def per_sample_loss(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over the sequence's steps (the batch mean is expRNN's loss)."""
        return F.cross_entropy(pred.float().transpose(1, 2), y.long(), reduction="none").mean(1)

    def per_sample_stats(self, pred: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> dict:
        K = self.K
        hit = pred.detach()[:, -K:].argmax(-1) == y[:, -K:].long()
        return {"loss": loss.detach(), "acc": hit.float().mean(1)}


@register
class AddingProblem(Task):
    name = "adding"
    summary = (
        "adding problem (synthetic): sum the two marked values of a random sequence; "
        "regression, MSE (predicting 1 scores about 0.167)"
    )
    kind = "regression"
    input_size = 2
    num_outputs = 1
    metric = "loss"
    default_target = 0.05
    options: ClassVar[dict[str, Opt]] = {
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
