"""Whole-sequence drives ``d_t`` of the momentum schemes on an orthogonal host.

The input map has no bias, so ``u_t = W_ih x_t`` and every scheme allowed on an orthogonal host
(none, heavy ball, Adam, RMSProp, scheduled-restart heavy ball) is a function of the inputs alone:
the drive of all ``T`` steps is computed at once, before the recurrence, with the O(T) causal
filters of :mod:`momentumrnn.filters`:

* heavy ball / restart: ``v = filter(epsilon u)`` is linear in ``x``, so the filter runs on
  whichever is narrower, ``x`` (then one product with ``epsilon W_ih``; pMNIST has 1 input
  channel) or ``u``; a carried ``v_0`` adds ``pi_t v_0``;
* Adam / RMSProp: the second moment ``m`` of ``u_t^2`` is a filter of the quadratic features
  ``x_a x_b`` mapped by ``W_ja W_jb``, which is cheaper than filtering ``u^2`` when ``I^2`` is
  below the hidden size (``m = filter(x^2) w^2`` for one input channel).

Complex units (scuRNN) are stored as ``[Re, Im]`` pairs (``N = 2H``); their second moment is that
of ``|u_j|^2 = Re(u_j)^2 + Im(u_j)^2`` (``H`` entries), which equals ``u_j^2`` for real units.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from ..filters import cumulative_decay, linear_filter
from ..schemes import ADAM_EPS, MomentumState, Scheme, next_steps, restart_mu

__all__ = ["scheme_drive"]


def _at_last_step(seq: Tensor, last: Optional[Tensor]) -> Tensor:
    if last is None:
        return seq[-1]
    return seq[last, torch.arange(seq.shape[1], device=seq.device)]


def _project(x: Tensor, w: Tensor) -> Tensor:
    """``x @ w^T`` for a ``(T, B, I)`` sequence."""
    T, B, I = x.shape
    return (x.reshape(T * B, I) @ w.t()).view(T, B, w.shape[0])


def _filtered_projection(x: Tensor, w: Tensor, coeff: Tensor, y0: Optional[Tensor]) -> Tensor:
    """``filter(x @ w^T)`` with initial state ``y0`` (filtering the narrower side)."""
    T = x.shape[0]
    if x.shape[2] <= w.shape[0]:
        y = _project(linear_filter(x, coeff), w)
        if y0 is not None:
            y = y + cumulative_decay(coeff, T) * y0
        return y
    return linear_filter(_project(x, w), coeff, y0)


def _second_moment(x: Tensor, w: Tensor, beta: float, m0: Optional[Tensor], pairs: bool) -> Tensor:
    """``m_t = beta m_{t-1} + (1 - beta) |u_t|^2`` for ``u = x w^T``: ``(T, B, H_m)``."""
    T, B, I = x.shape
    N = w.shape[0]
    Hm = N // 2 if pairs else N
    coeff = torch.tensor(beta, dtype=x.dtype, device=x.device)
    if I * I < Hm:
        q = (x.unsqueeze(3) * x.unsqueeze(2)).reshape(T, B, I * I)
        k = (w.unsqueeze(2) * w.unsqueeze(1)).reshape(N, I * I)
        if pairs:
            k = k[:Hm] + k[Hm:]
        m = _project(linear_filter(q * (1 - beta), coeff), k)
        if I > 1:  # a sum of products of mixed signs: keep rounding from going below 0
            m = m.clamp_min(0)
        if m0 is not None:
            m = m + cumulative_decay(coeff, T) * m0
        return m
    u = _project(x, w)
    sq = u * u
    if pairs:
        sq = sq[..., :Hm] + sq[..., Hm:]
    return linear_filter(sq * (1 - beta), coeff, m0)


def _over_sqrt(v: Tensor, m: Tensor, pairs: bool) -> Tensor:
    """``v / sqrt(m + 1e-16)``, ``m`` shared by the two parts of a complex unit."""
    den = torch.sqrt(m + ADAM_EPS)
    if pairs:
        T, B, N = v.shape
        return (v.view(T, B, 2, N // 2) / den.unsqueeze(2)).view(T, B, N)
    return v / den


def scheme_drive(scheme: Scheme, x: Tensor, w: Tensor, mu, epsilon, mom0: MomentumState,
                 last: Optional[Tensor], pairs: bool = False) -> Tuple[Tensor, MomentumState]:
    """The drive ``d`` ``(T, B, N)`` of ``x`` ``(T, B, I)`` under ``scheme`` with input weight
    ``w`` ``(N, I)`` (``u = x w^T``), and the momentum state at each sequence's last step.

    ``mom0`` holds the initial ``v`` ``(B, N)``, ``m`` ``(B, H_m)`` and ``step`` ``(B,)`` (or None)."""
    kind = scheme.kind
    T, B, _ = x.shape
    if kind == "none":
        return _project(x, w), MomentumState()
    if kind in ("heavy_ball", "restart"):
        k = None
        if kind == "heavy_ball":
            coeff = torch.tensor(mu, dtype=x.dtype, device=x.device)
        else:
            step0 = mom0.step if mom0.step is not None else torch.zeros(1, dtype=torch.long, device=x.device)
            k = next_steps(step0, T, scheme.restart)
            coeff = restart_mu(k, x.dtype).unsqueeze(2)
        d = _filtered_projection(x, w * epsilon, coeff, mom0.v)
        step = None if k is None else _at_last_step(k.expand(T, B), last)
        return d, MomentumState(v=_at_last_step(d, last), step=step)
    if kind in ("adam", "rmsprop"):
        m = _second_moment(x, w, scheme.beta, mom0.m, pairs)
        if kind == "adam":
            v = _filtered_projection(x, w * epsilon, torch.tensor(mu, dtype=x.dtype, device=x.device), mom0.v)
            d = _over_sqrt(v, m, pairs)
            return d, MomentumState(v=_at_last_step(v, last), m=_at_last_step(m, last))
        d = _over_sqrt(_project(x, w * epsilon), m, pairs)
        return d, MomentumState(m=_at_last_step(m, last))
    raise ValueError(f"scheme {kind!r} is not available on orthogonal hosts; use none, heavy_ball, adam, "
                     "rmsprop or restart")
