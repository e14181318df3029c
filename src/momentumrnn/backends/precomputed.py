"""The ``precomputed_native`` backend: an input-only drive (Adam, RMSProp; heavy ball, restart) formed
for the whole sequence by the filters (:func:`momentumrnn.backends.fused.sequence_drive`, blocked
matmuls, autograd), then ``torch.nn``'s own kernel (cuDNN on a GPU, oneDNN on the CPU) run on it with
an identity input map: input ``d_t`` (``G*H`` features), ``W_ih = I``, ``b_ih = 0``, ``b_hh`` as is.
Exact: the native cell computes ``d_t + W_hh h_{t-1} + b_hh`` (the GRU: ``d_n + r (W_hn h + b_hn)``),
which is the momentum cell.

Its cost is the identity map: an extra ``(T B) x GH x GH`` GEMM forward and two backward (four times
the recurrent GEMM of an LSTM), nothing on a GPU's tensor cores, too much on a CPU (measured:
``benchmarks/candidates.py``), where ``compiled_loop`` runs instead; on CUDA it is the dispatch
table's choice for Adam and RMSProp (one cuDNN call per layer and direction).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .fused import sequence_drive
from .native import flat_weights, native_call

if TYPE_CHECKING:
    from .._typing import GatedLayer, Hidden, HyperParameters, StepResult
    from ..lengths import SeqInfo
    from ..schemes import MomentumState
    from .native import GatedParams

__all__ = ["run"]

_EYE: dict[tuple, torch.Tensor] = {}


def _identity(n: int, like: torch.Tensor) -> torch.Tensor:
    key = (n, like.dtype, like.device)
    eye = _EYE.get(key)
    if eye is None:
        if len(_EYE) > 8:
            _EYE.clear()
        eye = _EYE[key] = torch.eye(n, dtype=like.dtype, device=like.device)
    return eye


def run(
    layer: GatedLayer,
    p: GatedParams,
    x: torch.Tensor,
    seq: SeqInfo,
    hidden0: Hidden,
    mom0: MomentumState,
    hp: HyperParameters,
) -> StepResult:
    mu, eps = hp
    T, B, I = x.shape
    GH = p.w_ih.shape[0]
    flat = x.reshape(T * B, I)
    u = (torch.addmm(p.b_ih, flat, p.w_ih.t()) if p.b_ih is not None else flat @ p.w_ih.t()).view(T, B, GH)
    d, mom = sequence_drive(layer.scheme, u, mu, eps, mom0, seq.last)
    weights = flat_weights(p, _identity(GH, x), torch.zeros_like(p.b_hh) if p.b_hh is not None else None)
    out, hT, cT = native_call(layer, d, seq.lengths, hidden0["h"], hidden0.get("c"), weights)
    finals = {"h": hT, "c": cT} if layer.host == "lstm" else {"h": hT}
    return out, finals, mom
