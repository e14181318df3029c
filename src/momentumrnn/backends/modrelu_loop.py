"""The modReLU recurrence ``h_t = modReLU(h_{t-1} W + d_t)`` with a hand-written backward.

For an input-only scheme the drive never waits for the recurrence. It reaches the loop in one of
two forms:

* **factors** (:class:`DriveFactors`, the usual case): ``d_t = x~_t a^T + pv_t v0``, divided by
  ``sqrt(q~_t c^T + pm_t m0 + eps)`` for Adam / RMSProp (see :mod:`.drives`). The loop forms the
  drive for a block of ``BLOCK`` steps, in cache, directly into the output buffer just before the
  steps that consume it, and the backward turns each block's gradient into the factors'
  gradients right away, so neither the drive nor its gradient exists as a ``(T, B, N)`` tensor
  (the weight gradient is accumulated block by block too).
* **dense**: ``d`` ``(T, B, N)`` computed beforehand (inputs wider than the state). The loop
  copies it into the output buffer block by block (in cache), where ``d_t`` becomes
  ``z_t = d_t + h_{t-1} W`` (one ``addmm_``) and then ``h_t``.

Only what depends on the previous step runs per step: forward, one GEMM and the modReLU (four
element-wise ops on ``(B, N)``); backward, one GEMM and the modReLU mask. Everything else (signs
and masks of the states, the modReLU-bias gradient, the drive and its gradients, ``dW``) is done
for blocks of ``BLOCK`` steps at once, which keeps it in cache and the number of kernel launches
low.

These are the numerical bodies; :mod:`momentumrnn.backends.modrelu_ops` runs them as registered custom
operators (``momentumrnn::modrelu_recurrence``, ``momentumrnn::modrelu_lookahead`` and their
backwards) with autograd, fake tensors and an exact double backward, and
:func:`~momentumrnn.backends.modrelu_ops.modrelu_recurrence` /
:func:`~momentumrnn.backends.modrelu_ops.modrelu_lookahead` are the functions to call.

Complex hidden states (scuRNN) run as real vectors ``[Re h, Im h]`` (``N = 2H``) and the modReLU
acts on the modulus of each pair ``(h_j, h_{j+H})``. ``h B`` is one real ``2H x 2H`` GEMM below
``H = 256`` and three real ``H x H`` GEMMs from there on (Gauss's trick: about 20% faster at
``H = 512``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, cast

import torch
from torch import Tensor

from ..schemes import ADAM_EPS

__all__ = ["ModReLURecurrence", "ModReLULookahead", "DriveFactors", "BLOCK"]

#: steps per block of the block-wise (non-sequential) work
BLOCK = 16


class _ComplexProduct:
    """``out += x M`` for complex row vectors in the pair layout ``[Re, Im]``: one real GEMM with
    ``[[Mr, Mi], [-Mi, Mr]]`` for small ``H``; from ``GAUSS_FROM`` on, three real GEMMs instead of
    four: ``Re = xr Mr - xi Mi``, ``Im = (xr + xi)(Mr + Mi) - xr Mr - xi Mi``."""

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


def _modrelu_step_real(z: Tensor, bias: Tensor, s: Tensor) -> Tensor:
    """In place: ``z <- sign(z) * relu(|z| + b)`` (``s`` a scratch buffer)."""
    torch.sign(z, out=s)
    torch.addcmul(bias, z, s, out=z)  # |z| + b
    return z.relu_().mul_(s)


def _modrelu_step_pairs(z: Tensor, bias: Tensor, r: Tensor, alpha: Tensor) -> Tensor:
    """In place on ``z`` ``(B, 2H)``: ``z <- z / |z| * relu(|z| + b)`` per pair. Keeps ``r = |z|``
    and ``alpha = relu(|z| + b) / |z|`` (0 on inactive units, ``|z| + b <= 0`` or ``z = 0``)."""
    B, H = r.shape
    zv = z.view(B, 2, H)
    torch.hypot(zv[:, 0], zv[:, 1], out=r)
    torch.add(r, bias, out=alpha).relu_().div_(r).nan_to_num_(0.0, 0.0, 0.0)
    zv.mul_(alpha.unsqueeze(1))
    return z


def _blocks(T: int) -> list[tuple[int, int]]:
    return [(t0, min(T, t0 + BLOCK)) for t0 in range(0, T, BLOCK)]


class DriveFactors(NamedTuple):
    """A drive given by factors, formed block by block inside the recurrence:

    ``V_t = x~_t a^T + pv_t v0`` and ``d_t = V_t`` (linear: none, heavy ball, restart), or
    ``d_t = V_t / sqrt(M_t + eps)`` with ``M_t = q~_t c^T + pm_t m0`` (Adam, RMSProp; the two
    parts of a complex unit share ``M``). ``x~`` ``(T, B, I)``, ``a`` ``(N, I)``, ``q~``
    ``(T, B, I')``, ``c`` ``(H_m, I')``; ``pv``, ``pm`` ``(T, B', 1)`` decay the carried
    states ``v0`` ``(B, N)`` and ``m0`` ``(B, H_m)`` (each pair optional)."""

    xs: Tensor
    a: Tensor
    pv: Tensor | None = None
    v0: Tensor | None = None
    qs: Tensor | None = None
    c: Tensor | None = None
    pm: Tensor | None = None
    m0: Tensor | None = None


class _FactoredDrive:
    """Block-wise forward and backward of a :class:`DriveFactors` drive."""

    def __init__(self, f: DriveFactors, paired: bool, needs_grad: Sequence[bool] | None):
        self.f, self.paired = f, paired
        _, B, self.I = f.xs.shape
        self.N, self.B = f.a.shape[0], B
        self.normalized = f.qs is not None
        self.needs = needs_grad  # (xs, a, v0, qs, c, m0, pv, pm)
        if self.normalized:  # qs and c given (and pm with m0)
            self.Iq, self.Hm = cast(Tensor, f.qs).shape[2], cast(Tensor, f.c).shape[0]
            # rden of one block, recomputed in the backward (cheaper than keeping T x B x Hm of it)
            self.rden = f.xs.new_empty(BLOCK, B, self.Hm)
            self.clamp = self.Iq > 1  # a sum of mixed-sign products: keep rounding from going below 0

    def _V(self, t0: int, t1: int, out: Tensor) -> Tensor:
        f, n, B = self.f, t1 - t0, self.B
        torch.mm(f.xs[t0:t1].reshape(n * B, self.I), f.a.t(), out=out.view(n * B, self.N))
        if f.v0 is not None:
            out.addcmul_(cast(Tensor, f.pv)[t0:t1], f.v0)  # pv with v0
        return out

    def _rden(self, t0: int, t1: int) -> Tensor:
        f, n, B = self.f, t1 - t0, self.B
        qs, c = cast(Tensor, f.qs), cast(Tensor, f.c)  # normalized: given
        rd = self.rden[:n]
        torch.mm(qs[t0:t1].reshape(n * B, self.Iq), c.t(), out=rd.view(n * B, self.Hm))
        if self.clamp:
            rd.clamp_min_(0)
        if f.m0 is not None:
            rd.addcmul_(cast(Tensor, f.pm)[t0:t1], f.m0)  # pm with m0
        return rd.add_(ADAM_EPS).rsqrt_()

    def _scale(self, v: Tensor, rd: Tensor) -> Tensor:
        """``v *= rd`` with ``v`` ``(n, B, N)`` and ``rd`` ``(n, B, Hm)``."""
        if self.paired:
            n, B, N = v.shape
            v.view(n, B, 2, N // 2).mul_(rd.unsqueeze(2))
        else:
            v.mul_(rd)
        return v

    def forward_block(self, t0: int, t1: int, out: Tensor) -> None:
        """Write ``d`` of steps ``t0..t1-1`` into ``out`` ``(n, B, N)``."""
        self._V(t0, t1, out)
        if self.normalized:
            self._scale(out, self._rden(t0, t1))

    def backward_init(self) -> None:
        # a factor that needs a gradient is given (and the backward's drive has needs_grad)
        f, L, B, needs = self.f, BLOCK, self.B, cast(Sequence[bool], self.needs)
        self.grads: list[Tensor | None] = [
            torch.empty_like(f.xs) if needs[0] else None,
            torch.zeros_like(f.a),
            torch.zeros_like(cast(Tensor, f.v0)) if needs[2] else None,
            None,
            None,
            None,
            torch.empty_like(cast(Tensor, f.pv)) if needs[6] else None,
            None,
        ]
        if self.normalized:
            self.grads[3] = torch.empty_like(cast(Tensor, f.qs)) if needs[3] else None
            self.grads[4] = torch.zeros_like(cast(Tensor, f.c))
            self.grads[5] = torch.zeros_like(cast(Tensor, f.m0)) if needs[5] else None
            self.grads[7] = torch.empty_like(cast(Tensor, f.pm)) if needs[7] else None
            self.r = f.xs.new_empty(L, B, self.N)
            self.v = f.xs.new_empty(L, B, self.N)
            self.w = f.xs.new_empty(L, B, self.Hm) if self.paired else self.v

    def backward_block(self, t0: int, t1: int, dz: Tensor) -> None:
        """Gradients from ``dz`` ``(n, B, N)`` (w.r.t. ``d`` of steps ``t0..t1-1``):
        ``dV = dz rden``; ``dM = -1/2 (sum over parts of dV V) rden^2``."""
        # (a gradient is there for a given factor, and a factor is given where its pair or mode says)
        f, n, B, N = self.f, t1 - t0, self.B, self.N
        dxs, da, dv0, dqs, dc, dm0, dpv, dpm = self.grads
        xs = f.xs[t0:t1].reshape(n * B, self.I)
        if self.normalized:
            rd = self._rden(t0, t1)
            r3 = self.r[:n]
            if self.paired:
                torch.mul(dz.view(n, B, 2, N // 2), rd.unsqueeze(2), out=r3.view(n, B, 2, N // 2))
            else:
                torch.mul(dz, rd, out=r3)
        else:
            r3 = dz
        r = r3.view(n * B, N)
        cast(Tensor, da).addmm_(r.t(), xs)
        if dxs is not None:
            torch.mm(r, f.a, out=dxs[t0:t1].view(n * B, self.I))
        if dv0 is not None:
            dv0.add_((r3 * cast(Tensor, f.pv)[t0:t1]).sum(0))
        if dpv is not None:  # the decay of v0 (a learnable mu): sum over units (and batch if shared)
            g = (r3 * cast(Tensor, f.v0)).sum(2, keepdim=True)
            dpv[t0:t1] = g.sum(1, keepdim=True) if dpv.shape[1] == 1 else g
        if not self.normalized:
            return
        Hm = self.Hm
        v = self._V(t0, t1, self.v[:n]).view(n * B, N).mul_(r)
        w = torch.sum(v.view(n * B, 2, Hm), 1, out=self.w[:n].view(n * B, Hm)) if self.paired else v
        rdf = rd.view(n * B, Hm)
        w.mul_(rdf).mul_(rdf)  # -2 dM
        cast(Tensor, dc).addmm_(w.t(), cast(Tensor, f.qs)[t0:t1].reshape(n * B, self.Iq))
        if dqs is not None:
            torch.mm(w, cast(Tensor, f.c), out=dqs[t0:t1].view(n * B, self.Iq))
        if dm0 is not None:
            dm0.add_((w.view(n, B, Hm) * cast(Tensor, f.pm)[t0:t1]).sum(0))
        if dpm is not None:
            g = (w.view(n, B, Hm) * cast(Tensor, f.m0)).sum(2, keepdim=True)
            dpm[t0:t1] = g.sum(1, keepdim=True) if dpm.shape[1] == 1 else g

    def backward_result(self) -> tuple[Tensor | None, ...]:
        dxs, da, dv0, dqs, dc, dm0, dpv, dpm = self.grads
        for g in (dqs, dc, dm0, dpm):
            if g is not None:
                g.mul_(-0.5)
        return dxs, da, dv0, dqs, dc, dm0, dpv, dpm


class ModReLURecurrence:
    """The bodies of the modReLU recurrence (see the module docstring), in the form of an
    ``autograd.Function``; :mod:`.ops` runs them inside its custom operators."""

    @staticmethod
    def forward(
        ctx: Any,
        h0: Tensor,
        W: Tensor,
        bias: Tensor,
        paired: bool,
        d: Tensor | None,
        xs: Tensor | None,
        a: Tensor | None,
        pv: Tensor | None,
        v0: Tensor | None,
        qs: Tensor | None,
        c: Tensor | None,
        pm: Tensor | None,
        m0: Tensor | None,
    ) -> Tensor:
        ctx.set_materialize_grads(False)
        factored = d is None
        if d is None:  # factored: xs and a given
            xs, a = cast(Tensor, xs), cast(Tensor, a)
            T, B, _ = xs.shape
            N = a.shape[0]
            hs = xs.new_empty(T, B, N)
            factors = DriveFactors(xs, a, pv, v0, qs, c, pm, m0)
            drive = _FactoredDrive(factors, paired, None)
        else:
            T, B, N = d.shape
            hs = torch.empty_like(d, memory_format=torch.contiguous_format)
        h_steps = hs.unbind(0)
        rs: Tensor | None
        alphas: Tensor | None
        if paired:
            H = N // 2
            rs = hs.new_empty(T, B, H)  # |z|
            alphas = hs.new_empty(T, B, H)  # |h| / |z|
            r_steps, a_steps = rs.unbind(0), alphas.unbind(0)
            product = _ComplexProduct(W[0], W[1], B)  # W = (Re B, Im B)
        else:
            rs = alphas = None
            s = hs.new_empty(B, N)
        h = h0
        for t0, t1 in _blocks(T):
            if d is None:
                drive.forward_block(t0, t1, hs[t0:t1])
            else:
                hs[t0:t1].copy_(d[t0:t1])
            for t in range(t0, t1):
                z = h_steps[t]
                if paired:
                    h = _modrelu_step_pairs(product.acc(z, h), bias, r_steps[t], a_steps[t])
                else:
                    h = _modrelu_step_real(z.addmm_(h, W), bias, s)
        ctx.paired, ctx.factored = paired, factored
        if factored:
            ctx.save_for_backward(h0, W, bias, hs, rs, alphas, *factors)
        else:
            ctx.save_for_backward(h0, W, bias, hs, rs, alphas)
        return hs

    @staticmethod
    def backward(ctx: Any, d_hs: Tensor | None) -> tuple[Tensor | None, ...]:
        if d_hs is None:
            return (None,) * 13
        if ctx.factored:
            h0, W, bias, hs, rs, alphas, *factors = ctx.saved_tensors
            needs = [ctx.needs_input_grad[i] for i in (5, 6, 8, 9, 10, 12, 7, 11)]
            drive = _FactoredDrive(DriveFactors(*factors), ctx.paired, needs)
            drive.backward_init()
        else:
            h0, W, bias, hs, rs, alphas = ctx.saved_tensors
        paired = ctx.paired
        T, B, N = hs.shape
        L = BLOCK
        if paired:  # products with B^H = (Re B)^T - i (Im B)^T
            H = N // 2
            product = _ComplexProduct(W[0].t(), -W[1].t(), B)
            rho = hs.new_empty(L, B, H)  # 1 / |h| (0 if inactive)
            zeta = hs.new_empty(L, B, H)  # b alpha rho^3
            pg = hs.new_empty(L, B, H)  # h . g per unit
            tmp = hs.new_empty(B, 2, H)
            q = hs.new_empty(B, H)
            d_bias = hs.new_zeros(H)
        else:
            Wt = W.t()
            sgn = hs.new_empty(L, B, N)  # sign(h): d modReLU / db
            mask = hs.new_empty(L, B, N)  # |sign(h)|: d modReLU / dz
            d_bias = hs.new_zeros(N)
        # dz: gradient w.r.t. z_t = h_{t-1} W + d_t (= w.r.t. d_t). A dense drive needs all of it
        # (it is that drive's gradient); a factored one only block by block, with dW accumulated
        # per block, so no (T, B, N) buffer is allocated.
        full = not ctx.factored
        dz = torch.empty_like(hs) if full else hs.new_empty(L, B, N)
        later = None if full else hs.new_empty(B, N)  # dz of the first step of the later block
        d_W = hs.new_zeros(N, N)
        g_steps, h_steps = d_hs.unbind(0), hs.unbind(0)
        for t0, t1 in reversed(_blocks(T)):
            n = t1 - t0
            dzb = dz[t0:t1] if full else dz[:n]
            dzb_steps = dzb.unbind(0)
            if paired:
                # Per unit, with u = h / |h|: dz = alpha g - (b / |z|) u (u . g)
                # = alpha g - zeta (h . g) h, and d / db = u . g = rho (h . g).
                al = alphas[t0:t1]
                torch.mul(al, rs[t0:t1], out=rho[:n]).reciprocal_().nan_to_num_(0.0, 0.0, 0.0)
                torch.mul(rho[:n], rho[:n], out=zeta[:n]).mul_(rho[:n]).mul_(al).mul_(bias)
            else:
                torch.sign(hs[t0:t1], out=sgn[:n])
                torch.abs(sgn[:n], out=mask[:n])
            for t in range(t1 - 1, t0 - 1, -1):
                i = t - t0
                g = dzb_steps[i]
                if t == T - 1:
                    g.copy_(g_steps[t])
                else:
                    nxt = dzb_steps[i + 1] if i + 1 < n else (dz[t1] if full else cast(Tensor, later))
                    if paired:
                        product.acc(g.copy_(g_steps[t]), nxt)
                    else:
                        torch.addmm(g_steps[t], nxt, Wt, out=g)
                if paired:
                    gv, hv = g.view(B, 2, H), h_steps[t].view(B, 2, H)
                    p = torch.sum(torch.mul(gv, hv, out=tmp), 1, out=pg[i])
                    torch.mul(p, zeta[i], out=q)
                    gv.mul_(al[i].unsqueeze(1)).addcmul_(hv, q.unsqueeze(1), value=-1)
                else:
                    g.mul_(mask[i])
            if paired:
                d_bias.add_(pg[:n].mul_(rho[:n]).sum((0, 1)))
            else:
                d_bias.add_(sgn[:n].mul_(dzb).sum((0, 1)))
            if ctx.factored:
                drive.backward_block(t0, t1, dzb)
            if not full:
                # dW += h_{t-1}^T dz_t over the block
                if t0 > 0:
                    d_W.addmm_(hs[t0 - 1 : t1 - 1].flatten(0, 1).t(), dzb.flatten(0, 1))
                else:
                    d_W.addmm_(h0.t(), dzb[0])
                    if n > 1:
                        d_W.addmm_(hs[: n - 1].flatten(0, 1).t(), dzb[1:].flatten(0, 1))
                cast(Tensor, later).copy_(dzb[0])
        dz0 = dz[0]  # (the first step's dz: in the block buffer, the first block was done last)
        d_h0 = product.acc(torch.zeros_like(h0), dz0) if paired else dz0 @ Wt
        if full:
            d_W.addmm_(h0.t(), dz[0])
            if T > 1:
                d_W.addmm_(hs[:-1].flatten(0, 1).t(), dz[1:].flatten(0, 1))
        if paired:  # the pair matrix [[Br, Bi], [-Bi, Br]] -> (dBr, dBi)
            d_W = torch.stack([d_W[:H, :H] + d_W[H:, H:], d_W[:H, H:] - d_W[H:, :H]])
        if ctx.factored:
            dxs, da, dv0, dqs, dc, dm0, dpv, dpm = drive.backward_result()
            return d_h0, d_W, d_bias, None, None, dxs, da, dpv, dv0, dqs, dc, dpm, dm0
        return d_h0, d_W, d_bias, None, dz, None, None, None, None, None, None, None, None


class ModReLULookahead:
    """The lookahead (Nesterov) recurrence on a modReLU host:
    ``p_t = h_{t-1} W + x_t a^T`` (``a = -epsilon W_ih``), ``g_t = ca_t p_t - cb_t p_{t-1}``
    (``ca = 1 + mu_k``, ``cb = mu_k``), ``h_t = modReLU(g_t)``. One GEMM and the modReLU per step,
    forward and backward; returns ``(hs, ps)``."""

    @staticmethod
    def forward(
        ctx: Any,
        h0: Tensor,
        W: Tensor,
        bias: Tensor,
        paired: bool,
        x: Tensor,
        a: Tensor,
        ca: Tensor,
        cb: Tensor,
        p0: Tensor,
        valid: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        ctx.set_materialize_grads(False)
        T, B, _ = x.shape
        N = a.shape[0]
        ps = torch.matmul(x, a.t())  # the input part of p_t; the loop adds h_{t-1} W in place
        hs = ps.new_empty(T, B, N)
        p_steps, h_steps = ps.unbind(0), hs.unbind(0)
        ca_steps, cb_steps = ca.unbind(0), cb.unbind(0)
        rs: Tensor | None
        alphas: Tensor | None
        if paired:
            H = N // 2
            rs, alphas = hs.new_empty(T, B, H), hs.new_empty(T, B, H)
            product = _ComplexProduct(W[0], W[1], B)
        else:
            rs = alphas = None
            s = hs.new_empty(B, N)
        h, p_prev = h0, p0
        for t in range(T):
            p = p_steps[t]
            if paired:
                product.acc(p, h)
            else:
                p.addmm_(h, W)
            g = torch.mul(p, ca_steps[t], out=h_steps[t]).addcmul_(p_prev, cb_steps[t], value=-1)
            if paired:  # rs and alphas made
                h = _modrelu_step_pairs(g, bias, cast(Tensor, rs)[t], cast(Tensor, alphas)[t])
            else:
                h = _modrelu_step_real(g, bias, s)
            p_prev = p
        ctx.paired = paired
        ctx.save_for_backward(h0, W, bias, x, a, ca, cb, hs, rs, alphas, valid)
        return hs, ps

    @staticmethod
    def backward(ctx: Any, d_hs: Tensor | None, d_ps: Tensor | None) -> tuple[Tensor | None, ...]:
        h0, W, bias, x, a, ca, cb, hs, rs, alphas, valid = ctx.saved_tensors
        paired = ctx.paired
        T, B, N = hs.shape
        dg = torch.zeros_like(hs)  # gradient w.r.t. g_t
        dp = torch.empty_like(hs)  # gradient w.r.t. p_t
        ca_steps, cb_steps = ca.unbind(0), cb.unbind(0)
        if paired:
            H = N // 2
            product = _ComplexProduct(W[0].t(), -W[1].t(), B)  # products with B^H
            rho = hs.new_empty(B, H)
            zeta = hs.new_empty(B, H)
            q = hs.new_empty(B, H)
            d_bias = hs.new_zeros(H)
        else:
            Wt = W.t()
            d_bias = hs.new_zeros(N)
        for t in range(T - 1, -1, -1):
            g = dg[t]
            if d_hs is not None:
                g.copy_(d_hs[t])
            if t + 1 < T:
                if paired:
                    product.acc(g, dp[t + 1])
                else:
                    g.addmm_(dp[t + 1], Wt)
            h = hs[t]
            if paired:  # dz = alpha g - zeta (h . g) h, d/db = rho (h . g)
                al = alphas[t]
                torch.mul(al, rs[t], out=rho).reciprocal_().nan_to_num_(0.0, 0.0, 0.0)
                torch.mul(rho, rho, out=zeta).mul_(rho).mul_(al).mul_(bias)
                gv, hv = g.view(B, 2, H), h.view(B, 2, H)
                hg = (gv * hv).sum(1)
                d_bias.add_((hg * rho).sum(0))
                torch.mul(hg, zeta, out=q)
                gv.mul_(al.unsqueeze(1)).addcmul_(hv, q.unsqueeze(1), value=-1)
            else:
                sgn = torch.sign(h)
                d_bias.add_((sgn * g).sum(0))
                g.mul_(sgn.abs_())
            dpt = torch.mul(g, ca_steps[t], out=dp[t])
            if t + 1 < T:
                dpt.addcmul_(dg[t + 1], cb_steps[t + 1], value=-1)
            if d_ps is not None:
                dpt.add_(d_ps[t])
        d_p0 = dg[0] * (-cb_steps[0])
        d_h0 = product.acc(torch.zeros_like(h0), dp[0]) if paired else dp[0] @ Wt
        h_prev = torch.cat([h0.unsqueeze(0), hs[:-1]], 0)
        if valid is not None:
            h_prev = torch.where(valid, h_prev, 0)
        d_W = h_prev.reshape(T * B, N).t().mm(dp.reshape(T * B, N))
        if paired:  # the pair matrix [[Br, Bi], [-Bi, Br]] -> (dBr, dBi)
            d_W = torch.stack([d_W[:H, :H] + d_W[H:, H:], d_W[:H, H:] - d_W[H:, :H]])
        dp2 = dp.reshape(T * B, N)
        d_x = dp2.mm(a).view_as(x) if ctx.needs_input_grad[4] else None
        d_a = dp2.t().mm(x.reshape(T * B, x.shape[2])) if ctx.needs_input_grad[5] else None
        return d_h0, d_W, d_bias, None, d_x, d_a, None, None, d_p0, None
