"""Whole-sequence drives ``d_t`` of the momentum schemes on an orthogonal host.

The input map has no bias, so ``u_t = W_ih x_t`` and every scheme allowed on an orthogonal host
(none, heavy ball, Adam, RMSProp, scheduled-restart heavy ball) is a function of the inputs alone,
computed for all ``T`` steps before the recurrence with the O(T) causal filters of
:mod:`momentumrnn.filters`:

* heavy ball / restart: ``v = filter(epsilon u)`` is linear in ``x``, so the filter runs on
  whichever is narrower, ``x`` (then one product with ``epsilon W_ih``; pMNIST has one input
  channel) or ``u``; a carried ``v_0`` adds ``pi_t v_0``. The result is the dense drive.
* Adam / RMSProp: the second moment of ``u_t^2`` is a filter of the quadratic input features
  ``x_a x_b`` mapped by ``W_ja W_jb`` (``m = filter(x^2) w^2`` for one input channel). When that
  is narrower than the hidden state (``I^2 < H``) and no momentum state is carried, the drive is
  returned **factored**, ``d_t = (x~_t a^T) / sqrt(q~_t c^T + eps)``, and the recurrence forms
  it step by step in cache (:mod:`.recurrence`); otherwise it is computed densely.

Complex units (scuRNN) are stored as ``[Re, Im]`` pairs (``N = 2H``); their second moment is that
of ``|u_j|^2 = Re(u_j)^2 + Im(u_j)^2`` (``H`` entries), which is ``u_j^2`` for real units.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor

from ..filters import cumulative_decay, linear_filter
from ..schemes import ADAM_EPS, MomentumState, Scheme, next_steps, restart_mu

__all__ = ["scheme_drive", "Drive"]


class Drive(NamedTuple):
    """A drive: ``dense`` ``(T, B, N)``, or ``factors = (x~, q~, a, c)``; plus the momentum state
    at each sequence's last step."""

    dense: Optional[Tensor]
    factors: Optional[tuple]
    momentum: MomentumState


def _at_last_step(seq: Tensor, last: Optional[Tensor]) -> Tensor:
    """``seq[len_b - 1, b]`` per sequence, as a tensor of its own (never a view of ``seq``)."""
    if last is None:
        return seq[-1].clone()
    return seq[last, torch.arange(seq.shape[1], device=seq.device)]


def _project(x: Tensor, w: Tensor) -> Tensor:
    """``x @ w^T`` for a ``(T, B, I)`` sequence (a fresh tensor, not a view)."""
    return torch.matmul(x, w.t())


def _filtered_projection(x: Tensor, w: Tensor, coeff: Tensor, y0: Optional[Tensor]) -> Tensor:
    """``filter(x @ w^T)`` with initial state ``y0`` (filtering the narrower side)."""
    T = x.shape[0]
    if x.shape[2] <= w.shape[0]:
        y = _project(linear_filter(x, coeff), w)
        if y0 is not None:
            y = y + cumulative_decay(coeff, T) * y0
        return y
    return linear_filter(_project(x, w), coeff, y0)


def _quadratic(x: Tensor, w: Tensor, pairs: bool):
    """``(q, k)`` with ``|u_j|^2 = q k_j^T``: quadratic features ``x_a x_b`` and their weights."""
    T, B, I = x.shape
    N = w.shape[0]
    q = (x.unsqueeze(3) * x.unsqueeze(2)).reshape(T, B, I * I)
    k = (w.unsqueeze(2) * w.unsqueeze(1)).reshape(N, I * I)
    if pairs:
        k = k[:N // 2] + k[N // 2:]
    return q, k


def _second_moment(x: Tensor, w: Tensor, beta: float, m0: Optional[Tensor], pairs: bool) -> Tensor:
    """Dense ``m_t = beta m_{t-1} + (1 - beta) |u_t|^2`` for ``u = x w^T``: ``(T, B, H_m)``."""
    T, B, I = x.shape
    N = w.shape[0]
    Hm = N // 2 if pairs else N
    coeff = torch.tensor(beta, dtype=x.dtype, device=x.device)
    if I * I < Hm:
        q, k = _quadratic(x, w, pairs)
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
        return torch.cat([v[..., :N // 2] / den, v[..., N // 2:] / den], 2)
    return v / den


def scheme_drive(scheme: Scheme, x: Tensor, w: Tensor, mu, epsilon, mom0: MomentumState,
                 last: Optional[Tensor], pairs: bool = False) -> Drive:
    """The drive of ``x`` ``(T, B, I)`` under ``scheme`` with input weight ``w`` ``(N, I)``
    (``u = x w^T``), and the momentum state at each sequence's last step.

    ``mom0`` holds the initial ``v`` ``(B, N)``, ``m`` ``(B, H_m)`` and ``step`` ``(B,)`` (or None)."""
    kind = scheme.kind
    T, B, I = x.shape
    if kind == "none":
        return Drive(_project(x, w), None, MomentumState())
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
        return Drive(d, None, MomentumState(v=_at_last_step(d, last), step=step))
    if kind not in ("adam", "rmsprop"):
        raise ValueError(f"scheme {kind!r} is not available on orthogonal hosts; use none, heavy_ball, adam, "
                         "rmsprop or restart")
    N = w.shape[0]
    Hm = N // 2 if pairs else N
    beta = scheme.beta
    adam = kind == "adam"
    if I * I < Hm and mom0.v is None and mom0.m is None:
        # factored: the loop forms d_t = (x~_t a^T) / sqrt(q~_t c^T + eps)
        q, c = _quadratic(x, w, pairs)
        qs = linear_filter(q * (1 - beta), torch.tensor(beta, dtype=x.dtype, device=x.device))
        xs = linear_filter(x, torch.tensor(mu, dtype=x.dtype, device=x.device)) if adam else x
        a = w * epsilon
        m_T = _at_last_step(qs, last) @ c.t()
        if I > 1:
            m_T = m_T.clamp_min(0)
        mom = MomentumState(v=_at_last_step(xs, last) @ a.t() if adam else None, m=m_T)
        return Drive(None, (xs, qs, a, c), mom)
    m = _second_moment(x, w, beta, mom0.m, pairs)
    if adam:
        v = _filtered_projection(x, w * epsilon, torch.tensor(mu, dtype=x.dtype, device=x.device), mom0.v)
        return Drive(_over_sqrt(v, m, pairs), None, MomentumState(v=_at_last_step(v, last), m=_at_last_step(m, last)))
    return Drive(_over_sqrt(_project(x, w * epsilon), m, pairs), None, MomentumState(m=_at_last_step(m, last)))
