"""The orthogonal recurrence ``h_t = modReLU(h_{t-1} W + d_t)`` with a hand-written backward.

Every scheme of an orthogonal host depends on the inputs alone, so the drive never waits for the
recurrence. It reaches the loop in one of two forms:

* **dense**: ``d`` ``(T, B, N)`` computed beforehand (none, heavy ball, restart, and Adam /
  RMSProp resuming a momentum state). The loop consumes it **in place**: ``d_t`` becomes
  ``z_t = d_t + h_{t-1} W`` (one ``addmm_``, no copy) and then ``h_t``, so ``d``'s memory is the
  output's; the autograd Function marks it dirty.
* **factored** (Adam / RMSProp from a zero state): ``d_t = (x~_t a^T) / sqrt(q~_t c^T + eps)``
  with the filtered inputs ``x~`` ``(T, B, I)``, the filtered quadratic input features ``q~``
  ``(T, B, I')`` and their weights ``a`` ``(N, I)``, ``c`` ``(H_m, I')`` (see
  :mod:`.drives`). The loop forms ``d_t`` per step in cache; no ``(T, B, N)`` temporary is made
  for ``v``, ``m`` or the square root.

Per step the forward does one GEMM and four element-wise ops (``sign``, ``addcmul``, ``relu_``,
``mul_``) on ``(B, N)`` tensors; the backward one GEMM and four element-wise ops (the sign of
``h_t``, the modReLU-bias gradient accumulated on the fly, the mask). ``dW`` is one GEMM over all
steps at the end.

Complex hidden states (scuRNN) run as real vectors ``[Re h, Im h]`` (``N = 2H``); ``h B`` is
formed with three real ``H x H`` GEMMs (Gauss's trick) instead of one ``2H x 2H`` one (four), and
the modReLU acts on the modulus of each pair ``(h_j, h_{j+H})``. (Below ``H = 256`` one ``2H x 2H``
GEMM is faster and is used instead.)
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..schemes import ADAM_EPS

__all__ = ["modrelu_recurrence"]


def _modrelu_step_real(z: Tensor, bias: Tensor, s: Tensor) -> Tensor:
    """In place: ``z <- sign(z) * relu(|z| + b)`` (``s`` a scratch buffer)."""
    torch.sign(z, out=s)
    torch.addcmul(bias, z, s, out=z)  # |z| + b
    return z.relu_().mul_(s)


def _modrelu_step_pairs(z: Tensor, bias: Tensor, r: Tensor, alpha: Tensor, rho: Tensor, zeta: Tensor) -> Tensor:
    """In place on ``z`` ``(B, 2H)``: ``z <- z / |z| * relu(|z| + b)`` per pair (``r`` scratch).

    Keeps for the backward, per unit: ``alpha = |h| / |z|``, ``rho = 1 / |h|`` and
    ``zeta = b alpha rho^3`` (all 0 on inactive units, ``|z| + b <= 0`` or ``z = 0``)."""
    B, H = r.shape
    zv = z.view(B, 2, H)
    torch.hypot(zv[:, 0], zv[:, 1], out=r)
    m = torch.add(r, bias, out=rho).relu_()  # |h| = relu(|z| + b) where z != 0
    torch.div(m, r, out=alpha).nan_to_num_(0.0, 0.0, 0.0)  # z = 0: inactive
    zv.mul_(alpha.unsqueeze(1))
    torch.mul(alpha, r, out=rho).reciprocal_().nan_to_num_(0.0, 0.0, 0.0)
    torch.mul(rho, rho, out=zeta).mul_(rho).mul_(alpha).mul_(bias)
    return z


class _ComplexProduct:
    """``out += x M`` for complex row vectors in the pair layout ``[Re, Im]``: one real GEMM with
    ``[[Mr, Mi], [-Mi, Mr]]`` for small ``H``; from ``H = 256`` on (where it pays, about 20% at
    ``H = 512``), three real GEMMs instead of four (Gauss): ``Re = xr Mr - xi Mi``,
    ``Im = (xr + xi)(Mr + Mi) - xr Mr - xi Mi``."""

    GAUSS_FROM = 256

    def __init__(self, Mr: Tensor, Mi: Tensor, batch: int):
        H = Mr.shape[0]
        self.H = H
        self.gauss = H >= self.GAUSS_FROM
        if self.gauss:
            self.Mr, self.Mi, self.Ms = Mr, Mi, Mr + Mi
            self.t1, self.t2, self.s = (Mr.new_empty(batch, H) for _ in range(3))
        else:
            self.M = torch.cat([torch.cat([Mr, Mi], 1), torch.cat([-Mi, Mr], 1)], 0)

    def acc(self, out: Tensor, x: Tensor) -> Tensor:
        if not self.gauss:
            return out.addmm_(x, self.M)
        H = self.H
        xr, xi = x[:, :H], x[:, H:]
        out_r, out_i = out[:, :H], out[:, H:]
        torch.mm(xr, self.Mr, out=self.t1)
        torch.mm(xi, self.Mi, out=self.t2)
        torch.add(xr, xi, out=self.s)
        out_i.addmm_(self.s, self.Ms).sub_(self.t1).sub_(self.t2)
        out_r.add_(self.t1).sub_(self.t2)
        return out


class _ModReLURecurrence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h0, W, bias, paired, d, xs, qs, a, c):
        ctx.set_materialize_grads(False)
        factored = d is None
        if factored:
            T, B, _ = xs.shape
            N = a.shape[0]
            hs = xs.new_empty(T, B, N)
        else:
            T, B, N = d.shape
            ctx.mark_dirty(d)
            hs = d  # consumed in place
        H = N // 2 if paired else N
        h_steps = hs.unbind(0)
        if paired:
            coef = hs.new_empty(3, T, B, H)  # alpha, rho, zeta per step (see _modrelu_step_pairs)
            a_steps, rho_steps, zeta_steps = (c_.unbind(0) for c_ in coef.unbind(0))
            r_scratch = hs.new_empty(B, H)
            product = _ComplexProduct(W[0], W[1], B)  # W = (Re B, Im B)
        else:
            coef = None
            s = hs.new_empty(B, N)
        if factored:
            # rden_t = (q~_t c^T + eps)^(-1/2), kept for the backward; d_t = (x~_t a^T) rden_t
            Hm = c.shape[0]
            rden = hs.new_empty(T, B, Hm)
            rden_steps = rden.unbind(0)
            x_steps, q_steps = xs.unbind(0), qs.unbind(0)
            aT, cT = a.t(), c.t()
            # one input channel: outer products as broadcast products (cheaper than K = 1 GEMMs)
            outer = xs.shape[2] == 1
            eps0 = hs.new_full((), ADAM_EPS)
        h = h0
        for t in range(T):
            z = h_steps[t]
            if factored:
                rd = rden_steps[t]
                if outer:
                    torch.addcmul(eps0, q_steps[t], cT, out=rd)
                    torch.mul(x_steps[t], aT, out=z)
                else:  # a sum of mixed-sign products: keep rounding from going below 0
                    torch.mm(q_steps[t], cT, out=rd).clamp_min_(0).add_(ADAM_EPS)
                    torch.mm(x_steps[t], aT, out=z)
                rd.rsqrt_()
                if paired:
                    z.view(B, 2, H).mul_(rd.unsqueeze(1))
                else:
                    z.mul_(rd)
            if paired:
                product.acc(z, h)
                h = _modrelu_step_pairs(z, bias, r_scratch, a_steps[t], rho_steps[t], zeta_steps[t])
            else:
                z.addmm_(h, W)
                h = _modrelu_step_real(z, bias, s)
        ctx.paired, ctx.factored = paired, factored
        if factored:
            ctx.save_for_backward(h0, W, bias, hs, coef, xs, qs, a, c, rden)
        else:
            ctx.save_for_backward(h0, W, bias, hs, coef)
        return hs

    @staticmethod
    def backward(ctx, d_hs):
        if d_hs is None:
            return (None,) * 9
        if ctx.factored:
            h0, W, bias, hs, coef, xs, qs, a, c, rden = ctx.saved_tensors
        else:
            h0, W, bias, hs, coef = ctx.saved_tensors
        T, B, N = hs.shape
        if ctx.paired:  # products with B^H = (Re B)^T - i (Im B)^T
            product = _ComplexProduct(W[0].t(), -W[1].t(), B)
        else:
            Wt = W.t()
        dz = torch.empty_like(hs)  # gradient w.r.t. z_t = h_{t-1} W + d_t (= w.r.t. d_t)
        dz_steps, g_steps, h_steps = dz.unbind(0), d_hs.unbind(0), hs.unbind(0)
        if not ctx.paired:
            # d modReLU / dz = 1 where h != 0 (else 0); d / db = sign(h).
            sg = hs.new_empty(B, N)
            acc = hs.new_zeros(B, N)

            def local(t):
                g = dz_steps[t]
                torch.sign(h_steps[t], out=sg)
                acc.addcmul_(g, sg)
                g.mul_(sg.abs_())
        else:
            # Per unit, with u = z / |z| = h / |h|: h = alpha z on active units, so
            # dz = alpha g - (b / |z|) u (u . g) = alpha g - zeta (h . g) h, and d / db = u . g
            # = rho (h . g).
            H = N // 2
            a_steps, rho_steps, zeta_steps = (c_.unbind(0) for c_ in coef.unbind(0))
            tmp = hs.new_empty(B, 2, H)
            p = hs.new_empty(B, H)
            acc = hs.new_zeros(B, H)

            def local(t):
                gv = dz_steps[t].view(B, 2, H)
                hv = h_steps[t].view(B, 2, H)
                torch.sum(torch.mul(gv, hv, out=tmp), 1, out=p)  # h . g
                acc.addcmul_(p, rho_steps[t])
                p.mul_(zeta_steps[t])
                gv.mul_(a_steps[t].unsqueeze(1)).addcmul_(hv, p.unsqueeze(1), value=-1)

        if ctx.factored:
            Hm = c.shape[0]
            dxs, dqs = torch.empty_like(xs), torch.empty_like(qs)
            dxs_steps, dqs_steps = dxs.unbind(0), dqs.unbind(0)
            x_steps, q_steps, rden_steps = xs.unbind(0), qs.unbind(0), rden.unbind(0)
            aT = a.t()
            outer = xs.shape[2] == 1
            da = a.new_zeros(a.shape)
            dc = c.new_zeros(c.shape)
            r = hs.new_empty(B, N)
            V = hs.new_empty(B, N)
            w = hs.new_empty(B, Hm) if ctx.paired else V

            def drive_backward(t):
                # d_t = V_t rden_t with V_t = x~_t a^T, rden_t = (M_t + eps)^(-1/2), M_t = q~_t c^T:
                # dV = dz rden; dM = -1/2 sum_parts dz V rden^3 = -1/2 (sum_parts dV V) rden^2
                rd = rden_steps[t]
                if ctx.paired:
                    torch.mul(dz_steps[t].view(B, 2, -1), rd.unsqueeze(1), out=r.view(B, 2, -1))
                else:
                    torch.mul(dz_steps[t], rd, out=r)
                da.addmm_(r.t(), x_steps[t])
                torch.mm(r, a, out=dxs_steps[t])
                if outer:
                    torch.mul(x_steps[t], aT, out=V).mul_(r)
                else:
                    torch.mm(x_steps[t], aT, out=V).mul_(r)
                if ctx.paired:
                    torch.sum(V.view(B, 2, Hm), 1, out=w)
                w.mul_(rd).mul_(rd)
                dc.addmm_(w.t(), q_steps[t])
                torch.mm(w, c, out=dqs_steps[t])

        dz_steps[T - 1].copy_(g_steps[T - 1])
        local(T - 1)
        if ctx.factored:
            drive_backward(T - 1)
        for t in range(T - 2, -1, -1):
            if ctx.paired:
                product.acc(dz_steps[t].copy_(g_steps[t]), dz_steps[t + 1])
            else:
                torch.addmm(g_steps[t], dz_steps[t + 1], Wt, out=dz_steps[t])
            local(t)
            if ctx.factored:
                drive_backward(t)
        d_bias = acc.sum(0)
        d_h0 = product.acc(torch.zeros_like(h0), dz[0]) if ctx.paired else dz[0] @ Wt
        d_W = h0.t() @ dz[0]
        if T > 1:
            d_W.addmm_(hs[:-1].reshape(-1, N).t(), dz[1:].reshape(-1, N))
        if ctx.paired:  # the pair matrix [[Br, Bi], [-Bi, Br]] -> (dBr, dBi)
            H = N // 2
            d_W = torch.stack([d_W[:H, :H] + d_W[H:, H:], d_W[:H, H:] - d_W[H:, :H]])
        if ctx.factored:
            dc.mul_(-0.5)
            dqs.mul_(-0.5)
            return d_h0, d_W, d_bias, None, None, dxs, dqs, da, dc
        return d_h0, d_W, d_bias, None, dz, None, None, None, None


def modrelu_recurrence(d: Optional[Tensor], h0: Tensor, W: Tensor, bias: Tensor, paired: bool = False,
                       factors=None) -> Tensor:
    """All hidden states ``(T, B, N)`` of ``h_t = modReLU(h_{t-1} W + d_t)``.

    Args:
        d: dense drive ``(T, B, N)``, **consumed in place** (its memory holds the result), or
            None with ``factors``.
        h0: initial state ``(B, N)``.
        W: recurrent matrix ``(N, N)``; with ``paired``, ``(2, H, H)``: real and imaginary parts
            of the complex ``B`` (products by three real GEMMs).
        bias: modReLU bias, ``(N,)``, or ``(N/2,)`` with ``paired``.
        paired: complex units stored as ``[real parts, imaginary parts]`` (``N = 2H``).
        factors: ``(x~, q~, a, c)`` of a factored Adam / RMSProp drive
            ``d_t = (x~_t a^T) / sqrt(q~_t c^T + 1e-16)`` (the square root shared by the two
            parts of a complex unit).
    """
    if d is not None:
        if d._base is not None or (d.is_leaf and d.requires_grad):  # give the loop memory of its own
            d = d.clone()
        return _ModReLURecurrence.apply(h0, W, bias, paired, d, None, None, None, None)
    xs, qs, a, c = factors
    return _ModReLURecurrence.apply(h0, W, bias, paired, None, xs, qs, a, c)
