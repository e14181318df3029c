"""The authors' initialisation (docs/equations.md, section 6), an option; ``torch.nn``'s is the default."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, TypeVar

import torch
from torch import nn

__all__ = ["authors_init_"]


class _Recurrent(Protocol):
    """A recurrent layer or cell: this package's or torch.nn's."""

    hidden_size: int

    def named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]: ...


_Layer = TypeVar("_Layer", bound=_Recurrent)


@torch.no_grad()
def authors_init_(layer: _Layer, forget_bias: float = 1.0) -> _Layer:
    """``W_ih`` orthogonal (per gate block), ``W_hh`` identity blocks, all biases zero except both
    LSTM forget-gate biases, set to ``forget_bias`` (1.0; the authors used -4.0 for TIMIT).

    An LSTM with projections (``proj_size = P > 0``; not in the paper): the ``(H, P)`` blocks of
    ``W_hh`` and the projection ``W_hr`` ``(P, H)`` are rectangular identities
    (``torch.nn.init.eye_``), so that ``W_hh`` reads unit ``j`` of ``o * tanh(c)`` back for
    ``j < P``: the identity recurrence on the first ``P`` units.

    Works on momentum layers and cells and on ``torch.nn`` RNN/LSTM/GRU modules and cells."""
    H = layer.hidden_size
    for name, p in layer.named_parameters():
        if name.startswith("weight_ih"):
            for block in p.split(H, 0):
                nn.init.orthogonal_(block)
        elif name.startswith("weight_hh"):
            for block in p.split(H, 0):
                nn.init.eye_(block)
        elif name.startswith("weight_hr"):
            nn.init.eye_(p)
        elif name.startswith("bias"):
            p.zero_()
            if isinstance(layer, (nn.LSTM, nn.LSTMCell)) or getattr(layer, "host", None) == "lstm":
                p[H : 2 * H] = forget_bias  # torch gate order i, f, g, o
    return layer
