"""The fused gated recurrence: the numerical bodies of the forward and of the hand-written
backward (see :mod:`momentumrnn.backends.fused` for what they compute and why they are written
this way). They run as the registered custom operators of :mod:`momentumrnn.backends.ops`
(``momentumrnn::fused_recurrence`` and its backward), which give them autograd, fake tensors
for torch.compile / torch.export, and an exact double backward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..schemes import ADAM_EPS, SCHEMES, canonical_kind

__all__ = ["DriveSpec", "FusedRecurrence", "normalized_block_size"]

_LSTM_BACKWARD_BLOCK = 16


@dataclass
class DriveSpec:
    """How the loop computes ``D_t``: ``kind`` is ``"given"`` (the caller's ``e``) or a scheme
    kind whose drive the loop forms itself: a normalized one (Adam, RMSProp: from its declared
    velocity and second moment) or a lookahead one (Nesterov)."""

    kind: str = "given"
    mu: float = 0.0
    epsilon: float = 1.0
    beta: float = 0.0

    @property
    def mode(self) -> str:
        """``"given"``, ``"normalized"`` or ``"lookahead"``."""
        if self.kind == "given":
            return "given"
        spec = SCHEMES[canonical_kind(self.kind)]
        if spec.lookahead:
            return "lookahead"
        if spec.normalized:
            return "normalized"
        raise ValueError(
            f"the fused loop forms normalized or lookahead drives; pass scheme {self.kind!r}'s "
            "drive as e (kind='given')"
        )

    @property
    def velocity(self) -> bool:
        return self.kind != "given" and SCHEMES[canonical_kind(self.kind)].velocity is not None


def _shifted(first: Tensor, seq: Tensor) -> Tensor:
    return torch.cat([first.unsqueeze(0), seq[:-1]], 0)


def _powers(c: float, K: int, like: Tensor) -> Tensor:
    """``c ** j`` for ``j = 0..K``, flushed below the smallest normal number."""
    p = torch.cumprod(torch.cat([like.new_ones(1), like.new_full((K,), c)]), 0)
    return torch.where(p.abs() >= torch.finfo(like.dtype).tiny, p, 0)


def _toeplitz(powers: Tensor, K: int) -> Tensor:
    """``P[i, j] = powers[i - j]`` for ``i >= j``, else 0."""
    i = torch.arange(K, device=powers.device)
    return torch.where(i[:, None] >= i[None, :], powers[(i[:, None] - i[None, :]).clamp_min(0)], 0)


class _BlockedNormalizedDrive:
    """The Adam / RMSProp drive for blocks of ``K`` steps at once (a few tensor ops per block
    instead of per step): ``u = x W_ih^T + b_ih``, ``m = filter((1-beta) u^2, beta)``,
    ``v = filter(epsilon u, mu)`` (Adam), each block one small matmul plus the carry."""

    def __init__(self, spec, x, w_ih, b_ih, bias_e):
        self.K = normalized_block_size(x.shape[1], w_ih.shape[0], x.element_size())
        # In a block matmul a NaN / inf input times the zero upper triangle would reach earlier
        # steps of its block. Without a data-dependent branch (no host sync, the same blocks
        # whatever the values): the blocks read the input with its non-finite entries replaced
        # by 0 (``self.x``), and the drive of a step whose input is not finite is NaN (``eps_t``,
        # the ``1e-16`` under the square root, is NaN there); the recurrence carries the NaN
        # forward in time, as torch.nn does. Finite inputs: exactly the same numbers as ever.
        bad = ~torch.isfinite(x)
        self.x = torch.where(bad, 0, x)
        self.eps_t = torch.where(bad.any(2, keepdim=True), torch.nan, x.new_full((), ADAM_EPS))  # (T, B, 1)
        self.velocity = spec.velocity
        self.mu, self.eps, self.beta = spec.mu, spec.epsilon, spec.beta
        self.w_ih_t, self.b_ih, self.bias_e = w_ih.t(), b_ih, bias_e
        self.pm = _powers(self.beta, self.K, x)
        self.Pm = _toeplitz(self.pm, self.K)
        if self.velocity:
            self.pv = _powers(self.mu, self.K, x)
            self.Pv = _toeplitz(self.pv, self.K)
        self.tiny = torch.finfo(x.dtype).tiny

    def states(self, xb: Tensor, v0: Tensor, m0: Tensor):
        """``u, v, m`` ``(k, B, G)`` of a block starting from states ``v0``, ``m0``."""
        k, B, I = xb.shape
        flat = xb.reshape(k * B, I)
        u = torch.addmm(self.b_ih, flat, self.w_ih_t) if self.b_ih is not None else flat @ self.w_ih_t
        u = u.view(k, B, u.shape[-1])
        m = torch.matmul(self.Pm[:k, :k], (u * u).flatten(1)).view_as(u)
        m.mul_(1 - self.beta).addcmul_(self.pm[1 : k + 1].view(k, 1, 1), m0)
        v = None
        if self.velocity:
            v = torch.matmul(self.Pv[:k, :k], u.flatten(1)).view_as(u)
            v.mul_(self.eps).addcmul_(self.pv[1 : k + 1].view(k, 1, 1), v0)
        return u, v, m

    def drive(self, u, v, m, t0: int):
        den = torch.add(m, self.eps_t[t0 : t0 + m.shape[0]]).sqrt_()
        if self.velocity:
            return torch.addcdiv(self.bias_e, v, den), den
        return torch.addcdiv(self.bias_e, u, den, value=self.eps), den

    def flush(self, t: Tensor, out: Tensor | None = None) -> Tensor:
        # Block carries of decaying states would sink into subnormal floats (10x slower ops).
        if out is None:
            return torch.where(t.abs() >= self.tiny, t, 0)
        return torch.where(t.abs() >= self.tiny, t, t.new_zeros(()), out=out)

    def backward(self, t0, v0, m0, dD, dv_next, dm_next, inj_v=None, inj_m=None):
        """Gradient of ``u`` for the block of steps ``t0..``, given the gradient ``dD`` of its
        drive and the adjoints ``dv_next`` / ``dm_next`` of the states after the block. Returns
        ``(du, dv_first, dm_first)`` (the adjoints of the block's first states)."""
        k = dD.shape[0]
        u, v, m = self.states(self.x[t0 : t0 + k], v0, m0)
        den = torch.add(m, self.eps_t[t0 : t0 + k]).sqrt_()
        q = dD / den
        # dd/dm = -v / (2 den^3) (Adam), -eps u / (2 den^3) (RMSProp)
        direct = (
            (q * v if self.velocity else q * u).div_(den).div_(den).mul_(-0.5 if self.velocity else -0.5 * self.eps)
        )
        if inj_m is not None:
            direct.add_(inj_m)
        dm = torch.matmul(self.Pm[:k, :k].t(), direct.flatten(1)).view_as(u)
        dm.addcmul_(self.pm[1 : k + 1].flip(0).view(k, 1, 1), dm_next)
        du = (dm * u).mul_(2 * (1 - self.beta))
        dv = None
        if self.velocity:
            if inj_v is not None:
                q = q + inj_v
            dv = torch.matmul(self.Pv[:k, :k].t(), q.flatten(1)).view_as(u)
            dv.addcmul_(self.pv[1 : k + 1].flip(0).view(k, 1, 1), dv_next)
            du.add_(dv, alpha=self.eps)
            dv = dv[0]
        else:
            du.add_(q, alpha=self.eps)
        return du, dv, dm[0]


def normalized_block_size(batch: int, width: int, element_size: int) -> int:
    """Steps per block of the Adam / RMSProp drive: blocks of about 2 MB stay in cache; larger
    ones run at memory bandwidth (measured). Depends on shapes only (never on values)."""
    per_step = max(1, batch * width * element_size)
    return max(1, min(16, (2 << 20) // per_step))


def _pick_last(seq: Tensor, t0: int, last: Tensor, into: Tensor) -> Tensor:
    """Where a sequence's last step falls in this block (steps ``t0..``), take its value."""
    k = seq.shape[0]
    idx = (last - t0).clamp(0, k - 1)
    got = seq.gather(0, idx.view(1, idx.shape[0], 1).expand(1, idx.shape[0], seq.shape[2]))[0]
    return torch.where(((last >= t0) & (last < t0 + k)).unsqueeze(1), got, into)


class FusedRecurrence:
    """The bodies of the fused recurrence: ``forward(ctx, ...)`` and ``backward(ctx, ...)`` in the
    form of an ``autograd.Function``; :mod:`.ops` runs them inside its custom operators with a
    ctx of its own (saved tensors, the blocked drive and its block-start states)."""

    @staticmethod
    def forward(
        ctx,
        host,
        nonlinearity,
        spec,
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
        beta,
        valid,
        last,
    ):
        ctx.set_materialize_grads(False)
        mode = spec.mode
        T, B = (e.shape[0], e.shape[1]) if mode == "given" else (x.shape[0], x.shape[1])
        G, P = w_hh.shape  # P: the width of h (the LSTM's proj_size with a projection w_hr)
        H = w_hr.shape[1] if w_hr is not None else P  # the cell's width
        ref = h0
        lookahead = alpha is not None
        wt = w_hh.t()
        hs = ref.new_empty(T, B, P)
        # (buffers of some hosts / modes only, None otherwise: typed Any, the checker cannot follow which)
        acts: Any = ref.new_empty(T, B, G) if host != "rnn" else None
        cs: Any = ref.new_empty(T, B, H) if host == "lstm" else None
        rn: Any = ref.new_empty(T, B, H) if host == "gru" else None
        ps: Any = ref.new_empty(T, B, G) if lookahead else None
        h_steps = hs.unbind(0)
        p_steps: Any = ps.unbind(0) if lookahead else None
        if lookahead:
            a_steps, b_steps = alpha.unbind(0), beta.unbind(0)

        # ---- the drive D_t, one step at a time
        if mode == "given":
            e_steps = e.unbind(0)
            drive = e_steps.__getitem__
        elif mode == "lookahead":
            x_steps = x.unbind(0)
            w_ih_t = w_ih.t()
            u_buf, d_buf = ref.new_empty(B, G), ref.new_empty(B, G)
            eps = spec.epsilon

            def drive(t):
                u = (
                    torch.addmm(b_ih, x_steps[t], w_ih_t, out=u_buf)
                    if b_ih is not None
                    else torch.mm(x_steps[t], w_ih_t, out=u_buf)
                )
                return torch.sub(bias_e, u, alpha=eps, out=d_buf)
        else:  # normalized (Adam, RMSProp): the drive of K steps at a time, between the cell steps
            blocked = _BlockedNormalizedDrive(spec, x, w_ih, b_ih, bias_e)
            K = blocked.K
            x_blocks = blocked.x.split(K)
            zeros = ref.new_zeros(B, G)
            st = {
                "v": v0 if v0 is not None else zeros,
                "m": m0 if m0 is not None else zeros,
                "v_last": zeros,
                "m_last": zeros,
                "d": None,
            }
            # The states entering each block, for the backward: one buffer per state, into which
            # the flushed carries are written directly (v: Adam only).
            nb = len(x_blocks)
            starts_v: Any = ref.new_empty(nb, B, G) if spec.velocity else None
            starts_m = ref.new_empty(nb, B, G)
            starts_m[0] = st["m"]
            if starts_v is not None:
                starts_v[0] = st["v"]

            def drive(t):
                j = t % K
                if j == 0:
                    b = t // K
                    u, v, m = blocked.states(x_blocks[b], st["v"], st["m"])
                    st["d"] = blocked.drive(u, v, m, t)[0].unbind(0)
                    if last is not None:
                        st["m_last"] = _pick_last(m, t, last, st["m_last"])
                        if v is not None:
                            st["v_last"] = _pick_last(v, t, last, st["v_last"])
                    nxt = b + 1 < nb  # (the last carry is an output of its own)
                    st["m"] = blocked.flush(m[-1], starts_m[b + 1] if nxt else None)
                    st["v"] = blocked.flush(v[-1], starts_v[b + 1] if nxt else None) if v is not None else zeros
                return st["d"][j]

        h, p_prev = h0, p0
        if host == "rnn":
            act_ = torch.Tensor.tanh_ if nonlinearity == "tanh" else torch.Tensor.relu_
            for t in range(T):
                if lookahead:
                    p = torch.addmm(drive(t), h, wt, out=p_steps[t])
                    torch.mul(p, a_steps[t], out=h_steps[t]).addcmul_(p_prev, b_steps[t], value=-1)
                    p_prev = p
                    h = act_(h_steps[t])
                else:
                    h = act_(torch.addmm(drive(t), h, wt, out=h_steps[t]))
        elif host == "lstm":
            c = c0
            a_all = acts.unbind(0)
            i_s, f_s, g_s, o_s = (y.unbind(0) for y in acts.split(H, 2))
            if_s = acts[:, :, : 2 * H].unbind(0)
            c_steps = cs.unbind(0)
            if w_hr is not None:
                w_hr_t, y = w_hr.t(), ref.new_empty(B, H)
            for t in range(T):
                at = a_all[t]
                if lookahead:
                    p = torch.addmm(drive(t), h, wt, out=p_steps[t])
                    torch.mul(p, a_steps[t], out=at).addcmul_(p_prev, b_steps[t], value=-1)
                    p_prev = p
                else:
                    torch.addmm(drive(t), h, wt, out=at)
                g_s[t].tanh_()
                if_s[t].sigmoid_()
                o_s[t].sigmoid_()
                c = torch.mul(f_s[t], c, out=c_steps[t]).addcmul_(i_s[t], g_s[t])
                if w_hr is None:
                    h = torch.tanh(c, out=h_steps[t]).mul_(o_s[t])
                else:  # the projection h = (o * tanh(c)) W_hr^T
                    h = torch.mm(torch.tanh(c, out=y).mul_(o_s[t]), w_hr_t, out=h_steps[t])
        else:  # gru
            w_rz, w_n = wt[:, : 2 * H], wt[:, 2 * H :]
            rz_s, n_s = (y.unbind(0) for y in acts.split([2 * H, H], 2))
            r_s = acts[:, :, :H].unbind(0)
            z_s = acts[:, :, H : 2 * H].unbind(0)
            rn_steps = rn.unbind(0)
            if lookahead:
                prz_s, pn_s = (y.unbind(0) for y in ps.split([2 * H, H], 2))
            for t in range(T):
                d = drive(t)
                rn_t = torch.addmm(b_hn, h, w_n, out=rn_steps[t])
                if lookahead:
                    prz = torch.addmm(d[:, : 2 * H], h, w_rz, out=prz_s[t])
                    torch.mul(prz, a_steps[t], out=rz_s[t]).addcmul_(p_prev[:, : 2 * H], b_steps[t], value=-1)
                    rz_s[t].sigmoid_()
                    pn = torch.addcmul(d[:, 2 * H :], r_s[t], rn_t, out=pn_s[t])
                    torch.mul(pn, a_steps[t], out=n_s[t]).addcmul_(p_prev[:, 2 * H :], b_steps[t], value=-1)
                    n_s[t].tanh_()
                    p_prev = p_steps[t]
                else:
                    torch.addmm(d[:, : 2 * H], h, w_rz, out=rz_s[t]).sigmoid_()
                    torch.addcmul(d[:, 2 * H :], r_s[t], rn_t, out=n_s[t]).tanh_()
                n = n_s[t]
                h = torch.sub(h, n, out=h_steps[t]).mul_(z_s[t]).add_(n)  # n + z (h_prev - n)
        ctx.host, ctx.nonlinearity, ctx.lookahead, ctx.spec = host, nonlinearity, lookahead, spec
        ctx.has_b_ih = b_ih is not None
        v_last = m_last = None
        if mode == "normalized":
            ctx.blocked, ctx.starts = blocked, (starts_v, starts_m)
            m_last = st["m"] if last is None else st["m_last"]
            if spec.velocity:
                v_last = st["v"] if last is None else st["v_last"]
        ctx.save_for_backward(x, w_ih, b_ih, h0, c0, v0, m0, w_hh, w_hr, hs, acts, cs, rn, alpha, beta, valid, last)
        return hs, cs, ps, v_last, m_last

    @staticmethod
    def backward(ctx, d_hs, d_cs, d_ps, d_v_last, d_m_last):
        x, w_ih, _b_ih, h0, c0, v0, m0, w_hh, w_hr, hs, acts, cs, rn, alpha, beta, valid, last = ctx.saved_tensors
        host, lookahead, spec = ctx.host, ctx.lookahead, ctx.spec
        mode = spec.mode
        T, B, P = hs.shape  # P: the width of h (proj_size with a projection)
        H = w_hr.shape[1] if w_hr is not None else P
        G = w_hh.shape[0]
        one = hs.new_ones(())
        if d_hs is None:
            d_hs = hs.new_zeros(T, B, P)
        d_hs_steps = d_hs.unbind(0)
        d_cs_steps = d_cs.unbind(0) if d_cs is not None else None
        d_ps_steps = d_ps.unbind(0) if d_ps is not None else None
        dg = hs.new_empty(T, B, G)  # gradient w.r.t. the cell's pre-activation g_t
        dg_steps = dg.unbind(0)
        dp = hs.new_empty(T, B, G) if lookahead else dg  # gradient w.r.t. p_t (= w.r.t. D_t)
        dp_steps = dp.unbind(0)
        if lookahead:
            a_steps, b_steps = alpha.unbind(0), beta.unbind(0)
        h_steps = hs.unbind(0)

        # The drive's backward runs after the loop: Nesterov's D = b - eps u gives du = -eps dp;
        # the Adam / RMSProp drive goes block-wise.
        d_w_hr: Any  # (with a projection only)
        d_h0 = d_c0 = d_b_hn = d_w_hr = None
        dh = None  # gradient reaching h_t from later steps
        if host == "rnn":
            tanh = ctx.nonlinearity == "tanh"
            for t in range(T - 1, -1, -1):
                dh = d_hs_steps[t] if dh is None else dh.add_(d_hs_steps[t])
                if tanh:
                    torch.addcmul(one, h_steps[t], h_steps[t], value=-1, out=dg_steps[t]).mul_(dh)
                else:
                    torch.mul(dh, h_steps[t] > 0, out=dg_steps[t])
                if lookahead:
                    _lookahead_dp(t, T, dg, dp, a_steps, b_steps, d_ps_steps, 0, G)
                dh = torch.mm(dp_steps[t], w_hh)
            d_h0 = dh
        elif host == "lstm":
            # The activation derivatives do not depend on the backward recurrence: compute them
            # for a block of steps at a time (block-sized temporaries), leaving ~6 ops per step.
            K = _LSTM_BACKWARD_BLOCK
            dg_ifg = dg[:, :, : 3 * H].unflatten(2, (3, H)).unbind(0)
            dg_o = dg[:, :, 3 * H :].unbind(0)
            f_s = acts[:, :, H : 2 * H].unbind(0)
            dc = None
            if w_hr is not None:
                # with the projection h = y W_hr^T (y = o tanh(c)): dy = dh W_hr; the total dh of
                # every step is kept for W_hr's gradient, one GEMM per block
                dh_all = hs.new_empty(T, B, P)
                dh_all_steps = dh_all.unbind(0)
                dy_buf = hs.new_empty(B, H)
                d_w_hr = w_hr.new_zeros(P, H)
            for t1 in range(T, 0, -K):
                t0 = max(t1 - K, 0)
                i, f, g, o = acts[t0:t1].split(H, 2)
                tc = torch.tanh(cs[t0:t1])
                c_prev = cs[t0 - 1 : t1 - 1] if t0 > 0 else torch.cat([c0.unsqueeze(0), cs[: t1 - 1]])
                k_c = (1 - tc * tc).mul_(o)  # dc += dh * o (1 - tanh(c)^2)
                k_o = (o - o * o).mul_(tc)  # dg_o = dh * tanh(c) o (1 - o)
                k_ifg = torch.cat([(i - i * i).mul_(g), (f - f * f).mul_(c_prev), (1 - g * g).mul_(i)], 2)
                k_c_s, k_o_s = k_c.unbind(0), k_o.unbind(0)
                k_ifg_s = k_ifg.unflatten(2, (3, H)).unbind(0)
                for t in range(t1 - 1, t0 - 1, -1):
                    j = t - t0
                    dh = d_hs_steps[t] if dh is None else dh.add_(d_hs_steps[t])
                    dy = dh
                    if w_hr is not None:
                        dh_all_steps[t].copy_(dh)
                        dy = torch.mm(dh, w_hr, out=dy_buf)
                    if d_cs_steps is not None:
                        dc = d_cs_steps[t].clone() if dc is None else dc.add_(d_cs_steps[t])
                    dc = torch.mul(dy, k_c_s[j]) if dc is None else dc.addcmul_(dy, k_c_s[j])
                    torch.mul(dy, k_o_s[j], out=dg_o[t])
                    torch.mul(k_ifg_s[j], dc.unsqueeze(1), out=dg_ifg[t])
                    dc = dc.mul_(f_s[t])
                    if lookahead:
                        _lookahead_dp(t, T, dg, dp, a_steps, b_steps, d_ps_steps, 0, G)
                    dh = torch.mm(dp_steps[t], w_hh)
                if w_hr is not None:
                    y = tc.mul_(o)
                    if valid is not None:  # padded steps can hold anything: where, not a product with 0
                        y = torch.where(valid[t0:t1], y, 0)
                    d_w_hr.addmm_(dh_all[t0:t1].reshape(-1, P).t(), y.reshape(-1, H))
            d_h0, d_c0 = dh, dc
        else:  # gru
            r_s, z_s, n_s = (y.unbind(0) for y in acts.split(H, 2))
            rn_steps = rn.unbind(0)
            dg_r, dg_z, dg_n = (y.unbind(0) for y in dg.split(H, 2))
            dp_rz = dp[:, :, : 2 * H].unbind(0)
            dp_n = dp[:, :, 2 * H :].unbind(0)
            drn = hs.new_empty(T, B, H)  # gradient w.r.t. R_n + b_hn
            drn_steps = drn.unbind(0)
            w_rz, w_n = w_hh[: 2 * H], w_hh[2 * H :]
            k = hs.new_empty(B, H)
            for t in range(T - 1, -1, -1):
                dh = d_hs_steps[t] if dh is None else dh.add_(d_hs_steps[t])
                r, z, n = r_s[t], z_s[t], n_s[t]
                h_prev = h_steps[t - 1] if t > 0 else h0
                # dg_z = dh (h_prev - n) z (1 - z); dg_n = dh (1 - z)(1 - n^2)
                torch.addcmul(z, z, z, value=-1, out=k)
                torch.sub(h_prev, n, out=dg_z[t]).mul_(k).mul_(dh)
                torch.addcmul(one, n, n, value=-1, out=k)
                torch.sub(dh, dh * z, out=dg_n[t]).mul_(k)
                if lookahead:
                    _lookahead_dp(t, T, dg, dp, a_steps, b_steps, d_ps_steps, 2 * H, G)
                # the reset gate and R_n + b_hn get dp_n: dg_r = dp_n rn r (1 - r), d(rn) = dp_n r
                torch.addcmul(r, r, r, value=-1, out=k)
                torch.mul(dp_n[t], rn_steps[t], out=dg_r[t]).mul_(k)
                torch.mul(dp_n[t], r, out=drn_steps[t])
                if lookahead:
                    _lookahead_dp(t, T, dg, dp, a_steps, b_steps, d_ps_steps, 0, 2 * H)
                dh = torch.addmm(dh.mul(z), dp_rz[t], w_rz).addmm_(drn_steps[t], w_n)
            d_h0 = dh
            d_b_hn = drn.sum((0, 1))

        # ---- parameter and input gradients, all steps at once
        h_prev = _shifted(h0, hs)
        if valid is not None:
            # Padded steps can hold anything (even inf with ReLU): where, not a product with 0.
            h_prev = torch.where(valid, h_prev, 0)
        grads_in = torch.cat([dp[:, :, : 2 * H], drn], 2) if host == "gru" else dp
        d_w_hh = grads_in.reshape(T * B, G).t().mm(h_prev.reshape(T * B, P))
        d_p0 = dg[0] * (-b_steps[0]) if lookahead else None
        d_x: Any  # (when the input needs a gradient only)
        d_e = d_x = d_w_ih = d_b_ih = d_bias_e = d_v0 = d_m0 = None
        if mode == "given":
            d_e = dp
        else:
            I = x.shape[2]
            d_bias_e = dp.sum((0, 1))
            need_x = ctx.needs_input_grad[4]
            if mode == "lookahead":
                dp2 = dp.view(T * B, G)
                neg_eps = -spec.epsilon
                d_x = dp2.mm(w_ih).mul_(neg_eps).view(T, B, I) if need_x else None
                d_w_ih = dp2.t().mm(x.reshape(T * B, I)).mul_(neg_eps)
                d_b_ih = d_bias_e * neg_eps if ctx.has_b_ih else None
            else:
                blocked, (starts_v, starts_m) = ctx.blocked, ctx.starts
                starts = [(starts_v[b] if starts_v is not None else None, starts_m[b]) for b in range(len(starts_m))]
                K = blocked.K
                d_x = x.new_empty(T, B, I) if need_x else None
                d_w_ih = w_ih.new_zeros(G, I)
                d_b_ih = w_ih.new_zeros(G) if ctx.has_b_ih else None
                zeros = hs.new_zeros(B, G)
                dv_next, dm_next = zeros, zeros
                if last is not None:
                    last_b = last.view(1, B, 1)
                for b in range(len(starts) - 1, -1, -1):
                    t0 = b * K
                    xb = blocked.x[t0 : t0 + K]
                    k = xb.shape[0]
                    inj_v = inj_m = None
                    # the gradients of the returned final states enter at each sequence's last step
                    if d_m_last is not None or d_v_last is not None:
                        if last is None:
                            at = torch.zeros(k, 1, 1, dtype=torch.bool, device=x.device)
                            at[-1] = b == len(starts) - 1
                        else:
                            at = torch.arange(t0, t0 + k, device=x.device).view(k, 1, 1) == last_b
                        if d_m_last is not None:
                            inj_m = torch.where(at, d_m_last.unsqueeze(0), 0)
                        if d_v_last is not None:
                            inj_v = torch.where(at, d_v_last.unsqueeze(0), 0)
                    du_b, dv_next, dm_next = blocked.backward(
                        t0, starts[b][0], starts[b][1], dp[t0 : t0 + k], dv_next, dm_next, inj_v, inj_m
                    )
                    du_b2 = du_b.view(k * B, G)
                    d_w_ih.addmm_(du_b2.t(), xb.reshape(k * B, I))
                    if d_b_ih is not None:
                        d_b_ih.add_(du_b2.sum(0))
                    if need_x:
                        torch.mm(du_b2, w_ih, out=d_x[t0 : t0 + k].view(k * B, I))
                d_m0 = dm_next * spec.beta if m0 is not None else None
                if spec.velocity and v0 is not None:
                    d_v0 = dv_next * spec.mu
        return (
            None,
            None,
            None,
            d_e,
            d_x,
            d_w_ih,
            d_b_ih,
            d_bias_e,
            d_h0,
            d_c0,
            d_p0,
            d_v0,
            d_m0,
            d_w_hh,
            d_b_hn,
            d_w_hr,
            None,
            None,
            None,
            None,
        )


def _lookahead_dp(
    t: int,
    T: int,
    dg: Tensor,
    dp: Tensor,
    a_steps: Sequence[Tensor],
    b_steps: Sequence[Tensor],
    d_ps_steps: Sequence[Tensor] | None,
    lo: int,
    hi: int,
) -> None:
    """``dp_t = alpha_t dg_t - beta_{t+1} dg_{t+1} (+ the incoming gradient of p_t)`` on ``lo:hi``
    (the lookahead combination ``g_t = alpha_t p_t - beta_t p_{t-1}``)."""
    out = torch.mul(dg[t, :, lo:hi], a_steps[t], out=dp[t, :, lo:hi])
    if t + 1 < T:
        out.addcmul_(dg[t + 1, :, lo:hi], b_steps[t + 1], value=-1)
    if d_ps_steps is not None:
        out.add_(d_ps_steps[t][:, lo:hi])
