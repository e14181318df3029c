"""Deterministic, rank-aware, resumable batches over an in-memory data split.

Why not ``torch.utils.data.DataLoader`` + ``DistributedSampler``: the toolkit promises that

* the same seed gives the same batches (the order of epoch ``e`` depends on ``(seed, e)`` only,
  never on how many random numbers were drawn before),
* ``--devices N`` sees the same global batches as one process: each global batch of
  ``batch_size`` examples is cut into ``N`` equal pieces (the last ones padded with examples of
  weight 0), and the loss is normalised by the global count, so the averaged DDP gradient is the
  one-process gradient up to rounding (``DistributedSampler`` instead pads by repeating examples
  and reorders them per rank),
* a run resumed from a mid-epoch checkpoint continues with the very next batch: the loader
  implements Lightning's ``state_dict`` / ``load_state_dict`` protocol and, after a restore,
  skips the batches the restored loop reports as done.

A batch is ``(x, y, w, n)``: raw inputs and targets of this rank's piece, per-example weights
(1 real, 0 padding) and the number of real examples in the global batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch


class Rows(Protocol):
    """Examples indexed like a tensor whose first dimension is the example (a split's inputs made
    on demand: the copying task's, TIMIT's frames)."""

    @property
    def shape(self) -> Sequence[int]: ...

    def __getitem__(self, index: Any) -> torch.Tensor: ...


@dataclass
class Split:
    """One data split held in memory: raw inputs ``x`` (first dim = examples) and targets ``y``."""

    x: torch.Tensor | Rows
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.x.shape[0])


def step_seed(seed: int, step: int, rank: int) -> int:
    """The seed of optimizer step ``step`` on process ``rank`` (dropout masks...): a resumed run
    draws the same random numbers as an uninterrupted one."""
    return (int(seed) * 6_364_136_223 + int(step) * 1_442_695 + int(rank) * 104_729 + 1) % (2**63 - 1)


def epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch) * 7_919 + 17) % (2**63 - 1)


class BatchLoader:
    def __init__(
        self,
        split: Split,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        epoch_fn: Callable[[], int] | None = None,
        skip_fn: Callable[[], int] | None = None,
    ):
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.split = split
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.epoch_fn = epoch_fn or (lambda: 0)
        self.skip_fn = skip_fn or (lambda: 0)
        self._resume_pending = False

    def __len__(self) -> int:
        return math.ceil(len(self.split) / self.batch_size)

    def order(self, epoch: int) -> torch.Tensor:
        n = len(self.split)
        if not self.shuffle:
            return torch.arange(n)
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        return torch.randperm(n, generator=gen)

    def piece(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's share of a global batch: indices and weights (padding has weight 0)."""
        n = idx.numel()
        per = math.ceil(n / self.world_size)
        mine = idx[self.rank * per : (self.rank + 1) * per]
        w = torch.ones(per)
        if mine.numel() < per:
            w[mine.numel() :] = 0.0
            mine = torch.cat([mine, idx[:1].expand(per - mine.numel())])
        return mine, w

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        skip = 0
        if self._resume_pending:
            self._resume_pending = False
            skip = max(0, int(self.skip_fn()))
        order = self.order(self.epoch_fn())
        for b in range(skip, len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            mine, w = self.piece(idx)
            yield (self.split.x[mine], self.split.y[mine], w, torch.tensor(idx.numel(), dtype=torch.long))

    # Lightning's resumable-loader protocol (the position itself comes from the restored loop)
    def state_dict(self) -> dict:
        return {"seed": self.seed, "batch_size": self.batch_size, "world_size": self.world_size}

    def load_state_dict(self, state: dict) -> None:
        self._resume_pending = True
