"""Fused per-step recurrences with a hand-written backward.

The native kernels take ``W_ih x_t + b_ih`` as their only input drive. Drives that are not a
linear function of the inputs (Adam, RMSProp) or that depend on ``h_{t-1}`` (Nesterov) need a
recurrence of our own. This module runs it with the least work per time step that pure PyTorch
allows: the whole input side is precomputed (``e``, shape ``(T, B, G*H)``), the forward loop does
one ``addmm`` and a few in-place element-wise ops per step into preallocated buffers, and the
backward loop is written out by hand (no autograd graph per step). Everything that does not depend
on the recurrent gradient (activation derivatives, ``dW_hh``, ``db``) is computed for all steps at
once outside the loops.

Pre-activation of step ``t`` (per host, ``R_t = h_{t-1} W_hh^T``):

* RNN / LSTM: ``p_t = R_t + e_t`` (``e_t`` includes ``b_hh``);
* GRU: ``p_t = [R_rz + e_rz, sigmoid(g_r) * (R_n + b_hn) + e_n]``;
* the cell consumes ``g_t = alpha_t p_t - beta_t p_{t-1}`` (Nesterov) or ``g_t = p_t`` (others).

Sequences of different lengths run to the longest one; the caller picks each sequence's final
state at its own last step (``lengths`` only keeps padded steps out of ``dW_hh``).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ["fused_recurrence"]


def _shifted(first: Tensor, seq: Tensor) -> Tensor:
    """``[first, seq[0], ..., seq[T-2]]``: the previous-step values of a ``(T, B, F)`` sequence."""
    return torch.cat([first.unsqueeze(0), seq[:-1]], 0)


class _FusedRecurrence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, host, nonlinearity, e, h0, c0, p0, w_hh, b_hn, alpha, beta, valid):
        ctx.set_materialize_grads(False)
        T, B, G = e.shape
        H = h0.shape[-1]
        nesterov = alpha is not None
        wt = w_hh.t()
        hs = e.new_empty(T, B, H)
        acts = e.new_empty(T, B, G) if host != "rnn" else None
        cs = e.new_empty(T, B, H) if host == "lstm" else None
        rn = e.new_empty(T, B, H) if host == "gru" else None  # R_n + b_hn, needed by GRU backward
        ps = e.new_empty(T, B, G) if nesterov else None
        pre = e.new_empty(B, G) if nesterov else None
        h_steps = hs.unbind(0)
        e_steps = e.unbind(0)
        p_steps = ps.unbind(0) if nesterov else None
        if nesterov:
            a_steps, b_steps = alpha.unbind(0), beta.unbind(0)
        h, p_prev = h0, p0
        if host == "rnn":
            act_ = torch.Tensor.tanh_ if nonlinearity == "tanh" else torch.Tensor.relu_
            for t in range(T):
                if nesterov:
                    p = torch.addmm(e_steps[t], h, wt, out=p_steps[t])
                    torch.mul(p, a_steps[t], out=h_steps[t]).addcmul_(p_prev, b_steps[t], value=-1)
                    p_prev = p
                    h = act_(h_steps[t])
                else:
                    h = act_(torch.addmm(e_steps[t], h, wt, out=h_steps[t]))
        elif host == "lstm":
            c = c0
            a_all = acts.unbind(0)
            i_s, f_s, g_s, o_s = (x.unbind(0) for x in acts.split(H, 2))
            if_s = acts[:, :, :2 * H].unbind(0)
            c_steps = cs.unbind(0)
            for t in range(T):
                at = a_all[t]
                if nesterov:
                    p = torch.addmm(e_steps[t], h, wt, out=p_steps[t])
                    torch.mul(p, a_steps[t], out=pre).addcmul_(p_prev, b_steps[t], value=-1)
                    p_prev = p
                    torch.sigmoid(pre, out=at)
                    torch.tanh(pre[:, 2 * H:3 * H], out=g_s[t])
                else:
                    torch.addmm(e_steps[t], h, wt, out=at)
                    g_s[t].tanh_()
                    if_s[t].sigmoid_()
                    o_s[t].sigmoid_()
                c = torch.mul(f_s[t], c, out=c_steps[t]).addcmul_(i_s[t], g_s[t])
                h = torch.tanh(c, out=h_steps[t]).mul_(o_s[t])
        else:  # gru
            w_rz, w_n = wt[:, :2 * H], wt[:, 2 * H:]
            rz_s, n_s = (x.unbind(0) for x in acts.split([2 * H, H], 2))
            r_s = acts[:, :, :H].unbind(0)
            z_s = acts[:, :, H:2 * H].unbind(0)
            rn_steps = rn.unbind(0)
            if nesterov:
                prz_s, pn_s = (x.unbind(0) for x in ps.split([2 * H, H], 2))
            e_rz, e_n = (x.unbind(0) for x in e.split([2 * H, H], 2))
            for t in range(T):
                rn_t = torch.addmm(b_hn, h, w_n, out=rn_steps[t])
                if nesterov:
                    # p_rz first, then the reset gate from g_rz, then p_n.
                    prz = torch.addmm(e_rz[t], h, w_rz, out=prz_s[t])
                    g_rz = torch.mul(prz, a_steps[t]).addcmul_(p_prev[:, :2 * H], b_steps[t], value=-1)
                    torch.sigmoid(g_rz, out=rz_s[t])
                    pn = torch.addcmul(e_n[t], r_s[t], rn_t, out=pn_s[t])
                    g_n = torch.mul(pn, a_steps[t]).addcmul_(p_prev[:, 2 * H:], b_steps[t], value=-1)
                    torch.tanh(g_n, out=n_s[t])
                    p_prev = p_steps[t]
                else:
                    torch.sigmoid(torch.addmm(e_rz[t], h, w_rz, out=rz_s[t]), out=rz_s[t])
                    torch.tanh(torch.addcmul(e_n[t], r_s[t], rn_t, out=n_s[t]), out=n_s[t])
                n = n_s[t]
                # h = n + z * (h_prev - n)
                h = torch.sub(h, n, out=h_steps[t]).mul_(z_s[t]).add_(n)
        ctx.host, ctx.nonlinearity, ctx.nesterov = host, nonlinearity, nesterov
        ctx.save_for_backward(h0, c0, w_hh, hs, acts, cs, rn, alpha, beta, valid)
        return hs, cs, ps

    @staticmethod
    def backward(ctx, d_hs, d_cs, d_ps):
        h0, c0, w_hh, hs, acts, cs, rn, alpha, beta, valid = ctx.saved_tensors
        host, nesterov = ctx.host, ctx.nesterov
        T, B, H = hs.shape
        G = w_hh.shape[0]
        if d_hs is None:
            d_hs = hs.new_zeros(T, B, H)
        d_hs_steps = d_hs.unbind(0)
        d_cs_steps = d_cs.unbind(0) if d_cs is not None else None
        d_ps_steps = d_ps.unbind(0) if d_ps is not None else None
        dg = hs.new_empty(T, B, G)  # gradient w.r.t. the cell's pre-activation g_t
        dg_steps = dg.unbind(0)
        dp = hs.new_empty(T, B, G) if nesterov else dg  # gradient w.r.t. p_t
        dp_steps = dp.unbind(0)
        if nesterov:
            a_steps, b_steps = alpha.unbind(0), beta.unbind(0)
        h_prev = _shifted(h0, hs)
        d_h0 = d_c0 = None
        d_b_hn = None
        dh = None  # gradient reaching h_t from later steps
        if host == "rnn":
            if ctx.nonlinearity == "tanh":
                deriv = 1 - hs * hs
            else:
                deriv = (hs > 0).to(hs.dtype)
            deriv_steps = deriv.unbind(0)
            for t in range(T - 1, -1, -1):
                dh = d_hs_steps[t] if dh is None else dh.add_(d_hs_steps[t])
                torch.mul(dh, deriv_steps[t], out=dg_steps[t])
                if nesterov:
                    _nesterov_dp(t, T, dg_steps, dp_steps, a_steps, b_steps, d_ps_steps)
                dh = torch.mm(dp_steps[t], w_hh)
            d_h0 = dh
        elif host == "lstm":
            i, f, g, o = acts.split(H, 2)
            tc = torch.tanh(cs)
            c_prev = _shifted(c0, cs)
            # dc-dependent factors of d(i, f, g) and dh-dependent factors of do and dc.
            k_ifg = torch.cat([g * i * (1 - i), c_prev * f * (1 - f), i * (1 - g * g)], 2).view(T, B, 3, H)
            k_o = tc * o * (1 - o)
            k_c = o * (1 - tc * tc)
            del tc, c_prev
            k_ifg_s, k_o_s, k_c_s, f_s = k_ifg.unbind(0), k_o.unbind(0), k_c.unbind(0), f.unbind(0)
            dg_ifg = dg[:, :, :3 * H].unflatten(2, (3, H)).unbind(0)
            dg_o = dg[:, :, 3 * H:].unbind(0)
            dc = None
            for t in range(T - 1, -1, -1):
                dh = d_hs_steps[t] if dh is None else dh.add_(d_hs_steps[t])
                if d_cs_steps is not None:
                    dc = d_cs_steps[t].clone() if dc is None else dc.add_(d_cs_steps[t])
                dc = torch.mul(dh, k_c_s[t]) if dc is None else dc.addcmul_(dh, k_c_s[t])
                torch.mul(dh, k_o_s[t], out=dg_o[t])
                torch.mul(k_ifg_s[t], dc.unsqueeze(1), out=dg_ifg[t])
                dc = dc.mul_(f_s[t])
                if nesterov:
                    _nesterov_dp(t, T, dg_steps, dp_steps, a_steps, b_steps, d_ps_steps)
                dh = torch.mm(dp_steps[t], w_hh)
            d_h0, d_c0 = dh, dc
        else:  # gru
            r, z, n = acts.split(H, 2)
            # dg_z = dh (h_prev - n) z(1-z); dg_n = dh (1-z)(1-n^2); the reset gate and R_n + b_hn
            # get the gradient of p_n (= dg_n without Nesterov): dg_r = dp_n rn r(1-r), d(rn) = dp_n r.
            k_z = (h_prev - n) * z * (1 - z)
            k_n = (1 - z) * (1 - n * n)
            k_r = rn * r * (1 - r)
            z_s, r_s = z.unbind(0), r.unbind(0)
            k_z_s, k_n_s, k_r_s = k_z.unbind(0), k_n.unbind(0), k_r.unbind(0)
            dg_r = dg[:, :, :H].unbind(0)
            dg_z = dg[:, :, H:2 * H].unbind(0)
            dg_n = dg[:, :, 2 * H:].unbind(0)
            dp_n = dp[:, :, 2 * H:].unbind(0)
            dp_rz = dp[:, :, :2 * H].unbind(0)
            drn = hs.new_empty(T, B, H)  # gradient w.r.t. R_n + b_hn
            drn_steps = drn.unbind(0)
            w_rz, w_n = w_hh[:2 * H], w_hh[2 * H:]
            for t in range(T - 1, -1, -1):
                dh = d_hs_steps[t] if dh is None else dh.add_(d_hs_steps[t])
                torch.mul(dh, k_z_s[t], out=dg_z[t])
                torch.mul(dh, k_n_s[t], out=dg_n[t])
                if nesterov:
                    _nesterov_dp_slice(t, T, dg, dp, a_steps, b_steps, d_ps_steps, 2 * H, G)
                torch.mul(dp_n[t], k_r_s[t], out=dg_r[t])
                torch.mul(dp_n[t], r_s[t], out=drn_steps[t])
                if nesterov:
                    _nesterov_dp_slice(t, T, dg, dp, a_steps, b_steps, d_ps_steps, 0, 2 * H)
                dh = torch.addmm(dh.mul(z_s[t]), dp_rz[t], w_rz).addmm_(drn_steps[t], w_n)
            d_h0 = dh
            d_b_hn = drn.sum((0, 1))
        # Parameter gradients for all steps at once.
        grads_in = torch.cat([dp[:, :, :2 * H], drn], 2) if host == "gru" else dp
        if valid is not None:
            # Padded steps can hold anything (even inf with ReLU): where, not a product with 0.
            h_prev = torch.where(valid, h_prev, 0)
        d_w_hh = grads_in.reshape(T * B, G).t().mm(h_prev.reshape(T * B, H))
        d_p0 = dg[0] * (-b_steps[0]) if nesterov else None
        return None, None, dp, d_h0, d_c0, d_p0, d_w_hh, d_b_hn, None, None, None


def _nesterov_dp(t, T, dg_steps, dp_steps, a_steps, b_steps, d_ps_steps):
    """``dp_t = alpha_t dg_t - beta_{t+1} dg_{t+1} (+ the incoming gradient of p_t)``."""
    dp = torch.mul(dg_steps[t], a_steps[t], out=dp_steps[t])
    if t + 1 < T:
        dp.addcmul_(dg_steps[t + 1], b_steps[t + 1], value=-1)
    if d_ps_steps is not None:
        dp.add_(d_ps_steps[t])


def _nesterov_dp_slice(t, T, dg, dp, a_steps, b_steps, d_ps_steps, lo, hi):
    out = torch.mul(dg[t, :, lo:hi], a_steps[t], out=dp[t, :, lo:hi])
    if t + 1 < T:
        out.addcmul_(dg[t + 1, :, lo:hi], b_steps[t + 1], value=-1)
    if d_ps_steps is not None:
        out.add_(d_ps_steps[t][:, lo:hi])


def fused_recurrence(
    host: str,
    e: Tensor,
    h0: Tensor,
    w_hh: Tensor,
    *,
    c0: Optional[Tensor] = None,
    b_hn: Optional[Tensor] = None,
    nonlinearity: str = "tanh",
    alpha: Optional[Tensor] = None,
    beta: Optional[Tensor] = None,
    p0: Optional[Tensor] = None,
    valid: Optional[Tensor] = None,
):
    """Run the recurrence over a precomputed input side ``e`` ``(T, B, G*H)``.

    Returns ``(hs, cs, ps)``: hidden states ``(T, B, H)``, LSTM cell states (or ``None``) and the
    Nesterov ``p`` sequence (or ``None``). ``alpha``/``beta`` ``(T, B', 1)`` switch on the Nesterov
    combination with initial ``p0`` ``(B, G*H)``. ``valid`` ``(T, B, 1)`` marks real (unpadded)
    steps.
    """
    return _FusedRecurrence.apply(host, nonlinearity, e, h0, c0, p0, w_hh, b_hn, alpha, beta, valid)
