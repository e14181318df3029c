"""Differentiable references of the hand-written kernels, for the double backward.

Each function computes what one custom operator of :mod:`.ops` computes, from the same inputs,
as a literal loop of differentiable tensor operations (the maths of the stepwise backend: the
gated step of :func:`momentumrnn.hosts.gated.gated_step`, the modReLU step of
:func:`momentumrnn.hosts.modrelu.modrelu_step`). The operators' backwards run the fast
hand-written code; when autograd asks for a differentiable backward (``create_graph=True``,
``torch.func.grad``), they recompute through these functions instead and differentiate them, so
second derivatives are exact. Outputs are those of the operators that carry gradients (unused
ones ``None``); subnormal flushes of the kernels are not replicated (they change nothing
above the smallest normal float).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..orthogonal.modrelu import modrelu_pairs
from ..schemes import ADAM_EPS
from .fused_kernel import DriveSpec

__all__ = ["fused_reference", "modrelu_reference", "lookahead_reference"]


def _pick(seq: Tensor, last: Tensor | None) -> Tensor:
    if last is None:
        return seq[-1]
    return seq.gather(0, last.view(1, -1, 1).expand(1, seq.shape[1], seq.shape[2]))[0]


def fused_reference(
    host,
    nonlinearity,
    kind,
    mu,
    epsilon,
    beta,
    e,
    x,
    w_ih,
    b_ih,
    bias_e,
    h0,
    c0,
    p0,
    v0,
    m0,
    w_hh,
    b_hn,
    w_hr,
    alpha,
    beta_k,
    valid,
    last,
):
    """``(hs, cs, ps, v_last, m_last)`` of ``momentumrnn::fused_recurrence``."""
    spec = DriveSpec(kind, mu=mu, epsilon=epsilon, beta=beta)
    mode = spec.mode
    H = w_hh.shape[1]  # (the GRU's; an LSTM's projection changes only h's width)
    lookahead = alpha is not None
    v_last = m_last = None
    if mode == "given":
        drive = e
    else:
        u = torch.matmul(x, w_ih.t())
        if b_ih is not None:
            u = u + b_ih
        if mode == "lookahead":
            drive = bias_e - epsilon * u
        else:
            v = v0 if v0 is not None else torch.zeros_like(u[0])
            m = m0 if m0 is not None else torch.zeros_like(u[0])
            ds, vs, ms = [], [], []
            for u_t in u.unbind(0):
                m = beta * m + (1 - beta) * u_t * u_t
                den = torch.sqrt(m + ADAM_EPS)
                if spec.velocity:
                    v = mu * v + epsilon * u_t
                    ds.append(bias_e + v / den)
                else:
                    ds.append(bias_e + epsilon * u_t / den)
                vs.append(v)
                ms.append(m)
            drive = torch.stack(ds)
            m_last = _pick(torch.stack(ms), last)
            if spec.velocity:
                v_last = _pick(torch.stack(vs), last)
    h, c, p_prev = h0, c0, p0
    hs, cs, ps = [], [], []
    for t in range(drive.shape[0]):
        d = drive[t]
        r = h @ w_hh.t()
        if host == "gru":
            p_rz = r[:, : 2 * H] + d[:, : 2 * H]
            g_rz = alpha[t] * p_rz - beta_k[t] * p_prev[:, : 2 * H] if lookahead else p_rz
            rz = torch.sigmoid(g_rz)
            reset, z = rz[:, :H], rz[:, H:]
            p_n = d[:, 2 * H :] + reset * (r[:, 2 * H :] + b_hn)
            g_n = alpha[t] * p_n - beta_k[t] * p_prev[:, 2 * H :] if lookahead else p_n
            n = torch.tanh(g_n)
            h = n + z * (h - n)
            if lookahead:
                p_prev = torch.cat([p_rz, p_n], 1)
        else:
            p = r + d
            g = alpha[t] * p - beta_k[t] * p_prev if lookahead else p
            if lookahead:
                p_prev = p
            if host == "rnn":
                h = torch.tanh(g) if nonlinearity == "tanh" else torch.relu(g)
            else:
                i, f, gg, o = g.chunk(4, 1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
                h = torch.sigmoid(o) * torch.tanh(c)
                if w_hr is not None:
                    h = h @ w_hr.t()
                cs.append(c)
        hs.append(h)
        if lookahead:
            ps.append(p_prev)
    return (torch.stack(hs), torch.stack(cs) if cs else None, torch.stack(ps) if ps else None, v_last, m_last)


def _recurrent_matrix(W: Tensor, paired: bool) -> Tensor:
    """``B`` as a real matrix acting on rows (pairs: ``[[Re B, Im B], [-Im B, Re B]]``)."""
    if not paired:
        return W
    return torch.cat([torch.cat([W[0], W[1]], 1), torch.cat([-W[1], W[0]], 1)], 0)


def _modrelu(z: Tensor, bias: Tensor, paired: bool) -> Tensor:
    return modrelu_pairs(z, bias) if paired else torch.sign(z) * torch.relu(z.abs() + bias)


def modrelu_reference(h0, W, bias, paired, d, xs, a, pv, v0, qs, c, pm, m0):
    """``hs`` of ``momentumrnn::modrelu_recurrence`` (dense drive ``d`` or its factors)."""
    if d is None:
        d = torch.matmul(xs, a.t())
        if v0 is not None:
            d = d + pv * v0
        if qs is not None:
            M = torch.matmul(qs, c.t())
            if qs.shape[2] > 1:
                M = M.clamp_min(0)
            if m0 is not None:
                M = M + pm * m0
            rden = torch.rsqrt(M + ADAM_EPS)
            d = d * (torch.cat([rden, rden], 2) if paired else rden)
    Bm = _recurrent_matrix(W, paired)
    h, hs = h0, []
    for d_t in d.unbind(0):
        h = _modrelu(d_t + h @ Bm, bias, paired)
        hs.append(h)
    return (torch.stack(hs),)


def lookahead_reference(h0, W, bias, paired, x, a, ca, cb, p0, valid):
    """``(hs, ps)`` of ``momentumrnn::modrelu_lookahead``."""
    Bm = _recurrent_matrix(W, paired)
    u = torch.matmul(x, a.t())
    h, p_prev, hs, ps = h0, p0, [], []
    for t in range(x.shape[0]):
        p = u[t] + h @ Bm
        h = _modrelu(ca[t] * p - cb[t] * p_prev, bias, paired)
        p_prev = p
        hs.append(h)
        ps.append(p)
    return torch.stack(hs), torch.stack(ps)
