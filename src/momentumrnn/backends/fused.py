"""Fused per-step recurrences with a hand-written backward.

The native kernels take ``W_ih x_t + b_ih`` as their only input drive. Drives that are not a
linear function of the inputs (Adam, RMSProp) or that depend on ``h_{t-1}`` (Nesterov) need a
recurrence of our own. This module runs it with the least work per time step that pure PyTorch
allows: one ``addmm`` for the recurrent drive per step, in-place element-wise ops on
``(B, G*H)`` tensors that stay in cache, preallocated output buffers, and a backward loop written
out by hand (no autograd graph per step). The Adam / RMSProp drive is computed for blocks of steps
(about 2 MB each) between the cell steps and recomputed block-wise in the backward, so neither
``v`` nor ``m`` is stored per step; Nesterov's drive is one ``addmm`` per step. Parameter
gradients are one GEMM each over all steps at the end.

Why per step and not whole-sequence tensor ops: on CPU each pass over a ``(T, B, G*H)``
temporary (200 MB at the sequential-MNIST shape) costs more than the step's whole cell, most of
it in page faults of the fresh allocation.

Per-step pre-activation (``R_t = h_{t-1} W_hh^T``), with the drive's contribution ``D_t``:

* RNN / LSTM: ``p_t = R_t + D_t``;  GRU: ``p_t = [R_rz + D_rz, sigmoid(g_r) * (R_n + b_hn) + D_n]``;
* the cell consumes ``g_t = alpha_t p_t - beta_t p_{t-1}`` (Nesterov) or ``g_t = p_t``;
* ``D_t`` is ``e_t`` (``drive="given"``: precomputed by the caller with autograd), or computed
  in the loop from ``u_t = W_ih x_t + b_ih``: Adam ``v_t / sqrt(m_t + eps) + b``,
  RMSProp ``epsilon u_t / sqrt(m_t + eps) + b``, Nesterov ``b - epsilon u_t``, where ``b`` is the
  part of ``b_hh`` outside the reset gate;
* an LSTM with projections (``proj_size``): ``h_t = (o_t tanh(c_t)) W_hr^T``, one more GEMM per
  step forward and backward (``R_t`` reads the projected ``h``); ``W_hr``'s gradient one GEMM per
  block of 16 steps.

Sequences of different lengths run to the longest one; the caller picks each sequence's final
state at its own last step (``valid`` only keeps padded steps out of the weight gradients).

The loop's bodies are in :mod:`.fused_kernel`; they run as the custom operator
``momentumrnn::fused_recurrence`` (:func:`.ops.fused_recurrence`), which torch.compile,
torch.export and torch.jit.trace see as one node, with autograd and an exact double backward.
This module is the backend: it prepares the drive and the states and calls the operator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..filters import linear_filter
from ..lengths import at_last_step
from ..schemes import ADAM_EPS, MomentumState
from .fused_kernel import DriveSpec
from .ops import fused_recurrence

if TYPE_CHECKING:
    from .._typing import GatedLayer, Hidden, HyperParameters, HyperValue, StepResult
    from ..lengths import SeqInfo
    from ..schemes import Scheme
    from .native import GatedParams

__all__ = ["fused_recurrence", "DriveSpec", "sequence_drive", "run"]


def sequence_drive(
    scheme: Scheme, u: Tensor, mu: HyperValue, eps: HyperValue, mom0: MomentumState, last: Tensor | None
) -> tuple[Tensor, MomentumState]:
    """The drive of an input-only scheme for a whole sequence with autograd (learnable ``mu`` /
    ``epsilon``, or a drive the loop does not form): ``(d, MomentumState at the last steps)``.
    ``u`` ``(T, B, W)``; the state's fields from the scheme table's declared shape."""
    spec = scheme.spec
    T, B = u.shape[:2]
    coeff, k = scheme.velocity_coefficient(mu, T, mom0.step, u.dtype, u.device)
    v = m = None
    d = linear_filter(u * eps, coeff, mom0.v) if spec.velocity is not None else u * eps
    if spec.velocity is not None:
        v = d
    if spec.normalized:
        beta = scheme.beta
        m = linear_filter((1 - beta) * u * u, torch.tensor(beta, dtype=u.dtype, device=u.device), mom0.m)
        d = d / torch.sqrt(m + ADAM_EPS)
    if spec.scheduled and k is None:
        k = scheme.schedule(T, mom0.step, u.dtype, u.device)[1]
    pick = lambda t: None if t is None else at_last_step(t, last)  # noqa: E731
    return d, MomentumState(v=pick(v), m=pick(m), step=None if k is None else pick(k.expand(T, B)))


def split_hh_bias(p: GatedParams, host: str, H: int, like: Tensor) -> tuple[Tensor, Tensor | None]:
    """``(bias_e, b_hn)``: the part of ``b_hh`` added to the pre-activation directly, and the GRU's
    candidate bias (kept inside ``r * (W_hn h + b_hn)``; ``None`` for other hosts)."""
    if p.b_hh is not None:
        bias_e = torch.cat([p.b_hh[: 2 * H], p.b_hh.new_zeros(H)]) if host == "gru" else p.b_hh
        b_hn = p.b_hh[2 * H :] if host == "gru" else None
    else:
        bias_e = like.new_zeros(p.w_ih.shape[0])
        b_hn = like.new_zeros(H) if host == "gru" else None
    return bias_e, b_hn


def run(
    layer: GatedLayer,
    p: GatedParams,
    x: Tensor,
    seq: SeqInfo,
    hidden0: Hidden,
    mom0: MomentumState,
    hp: HyperParameters,
) -> StepResult:
    """A gated host's direction on the fused loop (any drive)."""
    mu, eps = hp
    T, B, I = x.shape
    H, GH = layer.hidden_size, p.w_ih.shape[0]
    host, scheme = layer.host, layer.scheme
    spec = scheme.spec
    last = seq.last
    bias_e, b_hn = split_hh_bias(p, host, H, x)
    alpha = beta_k = k = p0 = None
    if spec.lookahead:
        beta_k, k = scheme.schedule(T, mom0.step, x.dtype, x.device)
        alpha = 1 + beta_k
        p0 = mom0.p if mom0.p is not None else x.new_zeros(B, GH)
    c0 = hidden0.get("c")
    common: dict[str, Any] = dict(
        c0=(c0 if c0 is not None else x.new_zeros(B, H)) if host == "lstm" else None,
        b_hn=b_hn,
        w_hr=p.w_hr,
        nonlinearity=layer.nonlinearity or "tanh",
        alpha=alpha,
        beta=beta_k,
        p0=p0,
        valid=seq.valid,
    )
    h0 = hidden0["h"] if hidden0["h"] is not None else x.new_zeros(B, p.w_hh.shape[1])
    mom = MomentumState()
    if not isinstance(mu, Tensor) and not isinstance(eps, Tensor) and (spec.lookahead or spec.normalized):
        # The drive is computed inside the loop (no (T, B, G*H) temporaries).
        drive = DriveSpec(scheme.kind, mu=mu, epsilon=eps, beta=scheme.beta)
        hs, cs, ps, v_T, m_T = fused_recurrence(
            host,
            h0,
            p.w_hh,
            spec=drive,
            x=x,
            w_ih=p.w_ih,
            b_ih=p.b_ih,
            bias_e=bias_e,
            v0=mom0.v if spec.velocity is not None else None,
            m0=mom0.m,
            last=last,
            **common,
        )
        mom = MomentumState(v=v_T, m=m_T)
    else:
        # The drive for the whole sequence with autograd (learnable mu / epsilon, linear drives).
        flat = x.reshape(T * B, I)
        u = (torch.addmm(p.b_ih, flat, p.w_ih.t()) if p.b_ih is not None else flat @ p.w_ih.t()).view(T, B, GH)
        if spec.lookahead:  # p_t = r_t - eps u_t
            e = bias_e - u * eps
        else:
            d, mom = sequence_drive(scheme, u, mu, eps, mom0, last)
            e = bias_e + d
        hs, cs, ps, _, _ = fused_recurrence(host, h0, p.w_hh, e=e, **common)
    out = hs if seq.valid is None else torch.where(seq.valid, hs, 0)
    finals = {"h": at_last_step(hs, last)}
    if host == "lstm":
        finals["c"] = at_last_step(cs, last)
    if ps is not None:
        mom = mom._replace(p=at_last_step(ps, last))
    if k is not None:
        mom = mom._replace(step=at_last_step(k.expand(T, B), last))
    return out, finals, mom
