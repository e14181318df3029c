"""Drives ``d_t`` of the input-only momentum schemes on a modReLU host.

The input map has no bias, so ``u_t = W_ih x_t``, and an input-only scheme (every scheme but the
lookahead one) is a function of the inputs alone. Its shape comes from the scheme table: a
velocity (constant or scheduled coefficient), optionally normalized by a second moment. Its
input-side filters run over the whole sequence before the recurrence (the O(T) causal filters
of :mod:`momentumrnn.filters`), on the input itself, which for the usual shapes (pMNIST: one
channel) is far narrower than the hidden state:

* the velocity ``v = filter(epsilon u) = filter(x) (epsilon W_ih)^T`` is linear in ``x``; a carried
  ``v_0`` adds ``pi_t v_0``;
* the Adam / RMSProp second moment of ``u_t^2`` is a filter of the quadratic input features
  ``x_a x_b`` mapped by ``W_ja W_jb`` (``m = filter(x^2) w^2`` for one input channel).

The result is handed to the recurrence as **factors** (:class:`~.recurrence.DriveFactors`), and
the loop forms ``d_t`` block by block in cache: no ``(T, B, H)`` tensor is made for ``v``, ``m``,
the square root, the drive or the drive's gradient. Inputs wider than the hidden state (``I > N``;
``I^2 >= H`` for Adam / RMSProp) take the **dense** route: the drive is computed for the whole
sequence, filtering ``u``.

Complex units (scuRNN) are stored as ``[Re, Im]`` pairs (``N = 2H``); their second moment is that
of ``|u_j|^2 = Re(u_j)^2 + Im(u_j)^2`` (``H`` entries), which is ``u_j^2`` for real units.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ..filters import cumulative_decay, linear_filter
from ..lengths import at_last_step as _core_at_last_step
from ..schemes import ADAM_EPS, MomentumState, Scheme
from .modrelu_loop import DriveFactors

__all__ = ["scheme_drive", "Drive"]


class Drive(NamedTuple):
    """A drive: ``dense`` ``(T, B, N)`` or ``factors`` (:class:`~.recurrence.DriveFactors`), plus
    the momentum state at each sequence's last step."""

    dense: Tensor | None
    factors: DriveFactors | None
    momentum: MomentumState


def _at_last_step(seq: Tensor, last: Tensor | None) -> Tensor:
    """The core's ``seq[len_b - 1, b]``, as a tensor of its own (never a view of ``seq``: the
    recurrence consumes drives in place)."""
    out = _core_at_last_step(seq, last)
    return out.clone() if last is None else out  # advanced indexing already copies


def _project(x: Tensor, w: Tensor) -> Tensor:
    """``x @ w^T`` for a ``(T, B, I)`` sequence (a fresh tensor, not a view)."""
    return torch.matmul(x, w.t())


def _filtered_projection(x: Tensor, w: Tensor, coeff: Tensor, y0: Tensor | None) -> Tensor:
    """``filter(x @ w^T)`` with initial state ``y0`` (filtering the narrower side)."""
    T = x.shape[0]
    if x.shape[2] <= w.shape[0]:
        y = _project(linear_filter(x, coeff), w)
        if y0 is not None:
            y = y + cumulative_decay(coeff, T) * y0
        return y
    return linear_filter(_project(x, w), coeff, y0)


def _quadratic(x: Tensor, w: Tensor, pairs: bool) -> tuple[Tensor, Tensor]:
    """``(q, k)`` with ``|u_j|^2 = q k_j^T``: quadratic features ``x_a x_b`` and their weights."""
    T, B, I = x.shape
    N = w.shape[0]
    q = (x.unsqueeze(3) * x.unsqueeze(2)).reshape(T, B, I * I)
    k = (w.unsqueeze(2) * w.unsqueeze(1)).reshape(N, I * I)
    if pairs:
        k = k[: N // 2] + k[N // 2 :]
    return q, k


def _second_moment(x: Tensor, w: Tensor, beta: float, m0: Tensor | None, pairs: bool) -> Tensor:
    """Dense ``m_t = beta m_{t-1} + (1 - beta) |u_t|^2`` for ``u = x w^T``: ``(T, B, H_m)``."""
    T, _B, I = x.shape
    N = w.shape[0]
    Hm = N // 2 if pairs else N
    coeff = torch.tensor(beta, dtype=x.dtype, device=x.device)
    if Hm > I * I:
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
        _T, _B, N = v.shape
        return torch.cat([v[..., : N // 2] / den, v[..., N // 2 :] / den], 2)
    return v / den


def _last_of_decay(p: Tensor, B: int, last: Tensor | None) -> Tensor:
    return _at_last_step(p.expand(p.shape[0], B, 1), last)


def scheme_drive(
    scheme: Scheme,
    x: Tensor,
    w: Tensor,
    mu: float | Tensor,
    epsilon: float | Tensor,
    mom0: MomentumState,
    last: Tensor | None,
    pairs: bool = False,
) -> Drive:
    """The drive of ``x`` ``(T, B, I)`` under ``scheme`` with input weight ``w`` ``(N, I)``
    (``u = x w^T``), and the momentum state at each sequence's last step.

    ``mom0`` holds the initial ``v`` ``(B, N)``, ``m`` ``(B, H_m)`` and ``step`` ``(B,)`` (or None).
    The drive is factored (formed in the recurrence loop) when the input is narrower than the
    hidden state (``I <= N``; ``I^2 < H_m`` for Adam / RMSProp), dense otherwise."""
    spec = scheme.spec
    T, B, I = x.shape
    N = w.shape[0]
    Hm = N // 2 if pairs else N
    normalized = spec.normalized
    coeff = k = None
    if spec.velocity is not None:
        coeff, k = scheme.velocity_coefficient(mu, T, mom0.step, x.dtype, x.device)
    # (no velocity: d = epsilon u, e.g. RMSProp, or u for the plain scheme)
    step = None if k is None else _at_last_step(k.expand(T, B), last)
    a = w if (not isinstance(epsilon, Tensor) and epsilon == 1.0) else w * epsilon
    if (Hm > I * I) if normalized else (I <= N):
        xs = x if coeff is None else linear_filter(x, coeff)
        pv = v0 = None
        v_T = None
        if coeff is not None:
            v_T = _at_last_step(xs, last) @ a.t()
            if mom0.v is not None:
                pv, v0 = cumulative_decay(coeff, T), mom0.v
                v_T = v_T + _last_of_decay(pv, B, last) * v0
        if not normalized:
            return Drive(None, DriveFactors(xs, a, pv, v0), MomentumState(v=v_T, step=step))
        beta = scheme.beta
        b_coeff = torch.tensor(beta, dtype=x.dtype, device=x.device)
        q, c = _quadratic(x, w, pairs)
        qs = linear_filter(q * (1 - beta), b_coeff)
        m_T = _at_last_step(qs, last) @ c.t()
        if I > 1:
            m_T = m_T.clamp_min(0)
        pm = m0 = None
        if mom0.m is not None:
            pm, m0 = cumulative_decay(b_coeff, T), mom0.m
            m_T = m_T + _last_of_decay(pm, B, last) * m0
        mom = MomentumState(v=v_T if coeff is not None else None, m=m_T)
        return Drive(None, DriveFactors(xs, a, pv, v0, qs, c, pm, m0), mom)
    # dense (wide inputs)
    if not normalized:
        d = _project(x, a) if coeff is None else _filtered_projection(x, a, coeff, mom0.v)
        return Drive(d, None, MomentumState(v=None if coeff is None else _at_last_step(d, last), step=step))
    m = _second_moment(x, w, scheme.beta, mom0.m, pairs)
    if coeff is not None:
        v = _filtered_projection(x, a, coeff, mom0.v)
        return Drive(_over_sqrt(v, m, pairs), None, MomentumState(v=_at_last_step(v, last), m=_at_last_step(m, last)))
    return Drive(_over_sqrt(_project(x, a), m, pairs), None, MomentumState(m=_at_last_step(m, last)))
