"""Variable-length sequences in a padded batch (``PackedSequence`` input)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["SeqInfo", "reverse_within", "at_last_step"]


class SeqInfo(NamedTuple):
    """Lengths of the sequences of a batch: ``lengths`` ``(N,)``, ``last = lengths - 1`` and
    ``valid`` ``(T, N, 1)`` (real steps); all ``None`` when every sequence has the full length."""

    lengths: Tensor | None = None
    last: Tensor | None = None
    valid: Tensor | None = None


def reverse_within(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence of ``x`` ``(T, N, F)`` within its own length (padding stays)."""
    if lengths is None:
        return x.flip(0)
    T = x.shape[0]
    t = torch.arange(T, device=x.device).unsqueeze(1)
    n = lengths.to(x.device).unsqueeze(0)
    idx = torch.where(t < n, n - 1 - t, t)
    return x.gather(0, idx.unsqueeze(2).expand_as(x))


def at_last_step(seq: Tensor, last: Tensor | None) -> Tensor:
    """``seq[len_b - 1, b]`` for each sequence (``seq[-1]`` when all are full length)."""
    if last is None:
        return seq[-1]
    return seq[last, torch.arange(seq.shape[1], device=seq.device)]
