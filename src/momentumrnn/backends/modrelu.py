"""modReLU hosts (expRNN, DTRIV, scoRNN, scuRNN, ENRNN): ``h_t = modReLU(h_{t-1} B + d_t)``.

Input-only drives (:mod:`.drives`) are formed from filtered inputs inside the loop of
:func:`~.modrelu_ops.modrelu_recurrence`; the lookahead drive (Nesterov: ``p_t = h_{t-1} B -
epsilon u_t``, ``g_t = p_t + mu_k (p_t - p_{t-1})``, ``h_t = modReLU(g_t)``) runs in
:func:`~.modrelu_ops.modrelu_lookahead`. Both have hand-written backwards.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor

from ..lengths import at_last_step
from ..schemes import MomentumState
from .drives import scheme_drive
from .modrelu_ops import modrelu_lookahead, modrelu_recurrence

if TYPE_CHECKING:
    from .._typing import Hidden, HyperParameters, Layer, StepResult
    from ..lengths import SeqInfo

__all__ = ["ModReLUParams", "run"]


class ModReLUParams(NamedTuple):
    """One layer and direction of a modReLU host, in the internal (real, pair) form."""

    #: ``(N, I)``: ``u = x w_in^T`` (complex units as ``[Re, Im]`` pairs, ``N = 2H``)
    w_in: Tensor
    #: ``B`` ``(N, N)``, or its real and imaginary parts ``(2, H, H)`` when ``paired``
    W: Tensor
    #: the modReLU bias ``(H,)``
    bias: Tensor
    paired: bool


def run(
    layer: Layer, p: ModReLUParams, x: Tensor, seq: SeqInfo, hidden0: Hidden, mom0: MomentumState, hp: HyperParameters
) -> StepResult:
    mu, eps = hp
    T, B, _ = x.shape
    N = p.w_in.shape[0]
    scheme = layer.scheme
    h0 = hidden0["h"] if hidden0["h"] is not None else x.new_zeros(B, N)
    if scheme.spec.lookahead:
        mu_k, k = scheme.schedule(T, mom0.step, x.dtype, x.device)
        p0 = mom0.p if mom0.p is not None else x.new_zeros(B, N)
        hs, ps = modrelu_lookahead(x, p.w_in * (-eps), h0, p.W, p.bias, 1 + mu_k, mu_k, p0, p.paired, seq.valid)
        mom = MomentumState(p=at_last_step(ps, seq.last), step=at_last_step(k.expand(T, B), seq.last))
    else:
        drive = scheme_drive(scheme, x, p.w_in, mu, eps, mom0, seq.last, p.paired)
        hs = modrelu_recurrence(drive.dense, h0, p.W, p.bias, p.paired, drive.factors)
        mom = drive.momentum
    out = hs if seq.valid is None else torch.where(seq.valid, hs, 0)
    return out, {"h": at_last_step(hs, seq.last)}, mom
