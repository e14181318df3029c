"""Causal first-order linear filters: ``y_t = a_t * y_{t-1} + x_t``.

Every momentum state that depends on the inputs alone (docs/equations.md, section 2) is such a filter: heavy ball
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

__all__ = ["linear_filter", "cumulative_decay", "system_matrix"]


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


def linear_filter(x: Tensor, coeff: Tensor, y0: Tensor | None = None, system: Tensor | None = None) -> Tensor:
    """Return ``y`` with ``y_t = coeff_t * y_{t-1} + x_t`` along dim 0, ``y_{-1} = y0`` (or 0).

    Args:
        x: ``(T, B, *F)`` sequence.
        coeff: a 0-d tensor (the same coefficient every step) or a ``(T, B', 1...)`` tensor with
            ``B'`` in ``{1, B}`` and trailing singleton dims (a per-step, optionally per-sequence
            coefficient).
        y0: optional initial state ``(B, *F)``.
        system: :func:`system_matrix` of ``coeff`` and ``T``, if the caller keeps it (used where
            the filter is one triangular solve).

    A sequence no longer than one block, or a short one of few features (float32 / float64,
    see ``_solves``), is one triangular solve (see ``_solve``). Longer ones: all blocks are
    filtered by one batched matmul; then a short loop over the ``T / L`` blocks passes each
    block's last value on (vectors only), and one element-wise pass adds the carries. No
    per-step or per-block slicing of big tensors: its backward would allocate a full-size
    gradient for every slice.
    """
    T = x.shape[0]
    if x.numel() == 0:  # no step, or an empty batch
        return x.clone()
    B = x.shape[1]
    if x.dtype in _SOLVE_DTYPES and _solves(T, x.numel() // T):
        return _solve(x, coeff, y0, system)
    # In a block matmul a NaN / inf input times the zero upper triangle would reach earlier steps;
    # step by step it propagates forward in time only (as in torch.nn). Without a data-dependent
    # branch (no host sync; traceable by torch.compile / export): the blocks filter the input with
    # its non-finite entries replaced by 0, and every position at or after a non-finite input (per
    # sequence and feature) is set to NaN. Finite inputs: exactly the blocked result.
    bad = ~torch.isfinite(x)
    x = torch.where(bad, 0, x)
    flat = x.reshape(T, B, -1)  # (T, B, F)
    n_feat = flat.shape[1] * flat.shape[2]
    L = min(T, _block_size(n_feat))
    nb = -(-T // L)
    pad = nb * L - T
    if pad:
        flat = torch.nn.functional.pad(flat, (0, 0, 0, 0, 0, pad))
    blocks = flat.reshape(nb, L, B, -1)
    if coeff.dim() == 0:
        powers = _flush(torch.cumprod(torch.cat([coeff.new_ones(1), coeff.expand(L)]), 0))
        idx = torch.arange(L, device=x.device)
        M = powers[(idx[:, None] - idx[None, :]).clamp_min(0)] * (idx[:, None] >= idx[None, :])
        y = torch.matmul(M, blocks.reshape(nb, L, -1)).view(nb, L, B, -1)
        decay = powers[1:].view(1, L, 1, 1).expand(nb, L, 1, 1)
    else:
        c = coeff.reshape(T, -1)
        if pad:
            c = torch.nn.functional.pad(c, (0, 0, 0, pad), value=1.0)
        c = c.view(nb, L, -1)  # (nb, L, B')
        M = _transfer_matrix(c.transpose(1, 2), L)  # (nb, B', L, L)
        if M.shape[1] == 1:
            y = torch.matmul(M[:, 0], blocks.reshape(nb, L, -1)).view(nb, L, B, -1)
        else:
            y = torch.matmul(M, blocks.transpose(1, 2)).transpose(1, 2)
        decay = _flush(torch.cumprod(c, dim=1)).unsqueeze(-1)  # (nb, L, B', 1)
    if nb > 1 or y0 is not None:
        # carry[b]: the filter state entering block b.
        ends = y[:, -1].unbind(0)
        last_decay = decay[:, -1].unbind(0)
        carry = y0.reshape(B, -1) if y0 is not None else torch.zeros_like(ends[0])
        carries = []
        for b in range(nb):
            carries.append(carry)
            if b + 1 < nb:
                carry = _flush(torch.addcmul(ends[b], last_decay[b], carry))
        # A normal carry times a small decay can land below the normal range: flush the result.
        y = _flush(y + decay * torch.stack(carries).unsqueeze(1))
    y = y.reshape(nb * L, B, -1)[:T].reshape(x.shape)
    return torch.where(torch.cumsum(bad, 0, dtype=torch.int32) > 0, torch.nan, y)


#: the dtypes of torch.linalg.solve_triangular (CPU and CUDA); others take the blocked path
_SOLVE_DTYPES = (torch.float32, torch.float64)


def _solves(T: int, n_features: int) -> bool:
    """Whether the filter of ``T`` steps of ``n_features`` is one triangular solve: one block,
    or up to 256 steps of at most 16384 / T features. The solve's work grows as T^2 per feature
    (the blocked path's as T L), its fixed cost is a few operations against some 25; measured
    forward + backward, one thread, float32, solve against blocked: T = 128, 32 / 64 features 225
    / 324 against 473 / 657 us; T = 256, 32 / 64 features 366 / 599 against 584 / 709 us; at
    T = 256 and 256 features 2285 against 2180 us (per-step coefficients 2456 against 1660), at
    T = 512 1.0-2.4x slower, at T = 784 1.3-4.2x."""
    return _block_size(n_features) >= T or (T <= 256 and T * n_features <= 16384)


def system_matrix(coeff: Tensor, T: int) -> Tensor:
    """The transposed system of the filter's triangular solve (see ``_solve``): ``A^T`` with ``A``
    unit lower bidiagonal, ``A[t, t-1] = -coeff_t``; ``(T, T)`` for a 0-d ``coeff``, else
    ``(B', T, T)``. A function of ``coeff`` alone: a caller whose coefficients do not change keeps
    it (:mod:`momentumrnn.backends.schedules`)."""
    if coeff.dim() == 0:
        # a constant coefficient apart: one (T, T) system, where the batched form ((1, T, T),
        # diag_embed) cost 193-203 against 164-170 us forward + backward at T = 64 (16 x 2
        # features, one thread)
        A = torch.eye(T, dtype=coeff.dtype, device=coeff.device) - torch.diag(coeff.expand(T - 1), -1)
        return A.t()
    c = coeff.reshape(T, -1)  # (T, B')
    A = torch.eye(T, dtype=coeff.dtype, device=coeff.device) - torch.diag_embed(c[1:].t(), offset=-1)
    return A.mT


def _solve(x: Tensor, coeff: Tensor, y0: Tensor | None, system: Tensor | None = None) -> Tensor:
    """One block's filter as a triangular solve: ``A y = x`` with ``A`` unit lower bidiagonal
    (``A[t, t-1] = -coeff_t``), ``x_0`` gaining ``coeff_0 y0``. Forward substitution reads only
    earlier steps, so a NaN / inf input reaches later steps only, as step by step, without the
    blocked path's masking; the solve's backward is the transposed solve (and, for a learnable
    coefficient, the gradient of ``A``). Its few operations are why: at T = 64, 16 sequences, 2
    features, one thread, forward + backward took 160 us against 291 us blocked (99 against 234
    at T = 1), most of the fixed cost of a heavy-ball layer at small sizes. The result is flushed
    below the smallest normal number, as the blocked path flushes its transfer matrices.

    Solved from the right, ``y^T A^T = x^T``: LAPACK writes its result column-major, so ``y``
    comes out in time-major order (contiguous ``(T, B, F)``), where the left solve's came out
    time-fastest and the native RNN kernel that reads it next copied it (forward and backward)."""
    T, B = x.shape[0], x.shape[1]
    flat = x.reshape(T, B, -1)  # (T, B, F)
    if system is None:
        system = system_matrix(coeff.to(x.dtype), T)
    if coeff.dim() == 0:
        rhs = flat.reshape(T, -1)
        if y0 is not None:
            rhs = torch.cat([rhs[:1] + coeff * y0.reshape(1, -1), rhs[1:]])
        y = torch.linalg.solve_triangular(system, rhs.t(), upper=True, left=False, unitriangular=True).t()
    else:
        c = coeff.reshape(T, -1).to(x.dtype)  # (T, B')
        rhs = flat.transpose(0, 1) if c.shape[1] > 1 else flat.reshape(1, T, -1)  # (B', T, F')
        if y0 is not None:
            first = rhs[:, :1] + c[0].view(-1, 1, 1) * y0.reshape(rhs.shape[0], 1, -1)
            rhs = torch.cat([first, rhs[:, 1:]], 1)
        y = torch.linalg.solve_triangular(system, rhs.mT, upper=True, left=False, unitriangular=True).mT
        y = y.transpose(0, 1) if c.shape[1] > 1 else y[0]
    return _flush(y).reshape(x.shape)


def cumulative_decay(coeff: Tensor, T: int) -> Tensor:
    """``pi_t = prod_{l<=t} coeff_l`` for ``t = 1..T`` as a ``(T, B', 1)`` tensor: the weight of the
    initial state ``y0`` in ``y_t``. Flushed to zero below the smallest normal number."""
    if coeff.dim() == 0:
        pi = torch.cumprod(coeff.expand(T), 0).reshape(T, 1, 1)
    else:
        pi = torch.cumprod(coeff.reshape(T, coeff.numel() // T if T else 0), 0).unsqueeze(-1)
    return _flush(pi)
