"""Causal first-order linear filters: ``y_t = a_t * y_{t-1} + x_t``.

Every momentum state of SPEC 2 that depends on the inputs alone is such a filter: heavy ball
(``a_t = mu``), the Adam / RMSProp second moment (``a_t = beta``) and the scheduled-restart heavy
ball (``a_t = mu_k``). Running the recurrence step by step costs one Python iteration (and one
autograd node) per time step; here the sequence is cut into blocks of ``L`` steps and each block is
one matrix product with an ``L x L`` lower-triangular transfer matrix, plus the carry from the
previous block. Memory stays O(T) (no ``T x T`` matrix) and autograd differentiates the matmuls,
including with respect to a learnable coefficient.

Subnormal floats: powers of a small coefficient (``0.1 ** 40``) and long runs of zero input drive
filter states into the subnormal range, where CPUs slow down by an order of magnitude. Transfer
coefficients and block carries below the smallest normal number are flushed to zero, which changes
results by less than one unit in the last place of anything they are added to.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["linear_filter", "cumulative_decay"]


def _flush(x: Tensor) -> Tensor:
    """Zero the entries whose magnitude is below the smallest normal number of the dtype."""
    tiny = torch.finfo(x.dtype).tiny
    return x * (x.detach().abs() >= tiny)


def _block_size(n_features: int) -> int:
    # A block costs L/2 multiply-adds per element (a step-by-step loop costs 1) but one Python
    # iteration per L steps. Small feature counts (input-space filters) are overhead-bound;
    # gate-space filters (B * 4H features) are bandwidth-bound.
    return 64 if n_features <= 8192 else 16


def _transfer_matrix(coeff: Tensor, length: int) -> Tensor:
    """``M[..., i, j] = prod_{l=j+1..i} coeff[..., l]`` for ``i >= j``, else 0 (coeff: (..., L))."""
    q = coeff.unsqueeze(-1).expand(*coeff.shape, length)  # q[..., i, j] = coeff_i
    ones = torch.ones((), dtype=coeff.dtype, device=coeff.device)
    strict_lower = torch.ones(length, length, dtype=torch.bool, device=coeff.device).tril(-1)
    q = torch.where(strict_lower, q, ones)
    return _flush(torch.cumprod(q, dim=-2).tril())


def linear_filter(x: Tensor, coeff: Tensor, y0: Tensor | None = None) -> Tensor:
    """Return ``y`` with ``y_t = coeff_t * y_{t-1} + x_t`` along dim 0, ``y_{-1} = y0`` (or 0).

    Args:
        x: ``(T, B, *F)`` sequence.
        coeff: a 0-d tensor (the same coefficient every step) or a ``(T, B', 1...)`` tensor with
            ``B'`` in ``{1, B}`` and trailing singleton dims (a per-step, optionally per-sequence
            coefficient).
        y0: optional initial state ``(B, *F)``.
    """
    T = x.shape[0]
    if T == 0:
        return x.clone()
    batch = x.shape[1]
    flat = x.reshape(T, batch, -1)  # (T, B, F)
    n_feat = flat.shape[1] * flat.shape[2]
    L = min(T, _block_size(n_feat))
    carry = None if y0 is None else y0.reshape(batch, -1)
    blocks = []
    if coeff.dim() == 0:
        powers = _flush(torch.cumprod(torch.cat([coeff.new_ones(1), coeff.expand(L)]), 0))
        idx = torch.arange(L, device=x.device)
        lag = (idx[:, None] - idx[None, :]).clamp_min(0)
        M = powers[lag] * (idx[:, None] >= idx[None, :])
        for start in range(0, T, L):
            xb = flat[start:start + L]
            lb = xb.shape[0]
            yb = (M[:lb, :lb] @ xb.reshape(lb, -1)).view_as(xb)
            if carry is not None:
                yb = yb + powers[1:lb + 1, None, None] * carry
            carry = _flush(yb[-1])
            blocks.append(yb)
    else:
        c = coeff.reshape(T, -1)  # (T, B') with B' in {1, B}
        for start in range(0, T, L):
            xb = flat[start:start + L]
            lb = xb.shape[0]
            cb = c[start:start + lb].t()  # (B', lb)
            M = _transfer_matrix(cb, lb)  # (B', lb, lb)
            if M.shape[0] == 1:
                yb = (M[0] @ xb.reshape(lb, -1)).view_as(xb)
            else:
                yb = torch.bmm(M, xb.transpose(0, 1)).transpose(0, 1)
            if carry is not None:
                decay = _flush(torch.cumprod(cb, dim=1)).t().unsqueeze(-1)  # (lb, B', 1)
                yb = yb + decay * carry
            carry = _flush(yb[-1])
            blocks.append(yb)
    return torch.cat(blocks, 0).view(x.shape)


def cumulative_decay(coeff: Tensor, T: int) -> Tensor:
    """``pi_t = prod_{l<=t} coeff_l`` for ``t = 1..T`` as a ``(T, B', 1)`` tensor: the weight of the
    initial state ``y0`` in ``y_t``. Flushed to zero below the smallest normal number."""
    if coeff.dim() == 0:
        pi = torch.cumprod(coeff.expand(T), 0).reshape(T, 1, 1)
    else:
        pi = torch.cumprod(coeff.reshape(T, -1), 0).unsqueeze(-1)
    return _flush(pi)
