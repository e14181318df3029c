"""The orthogonal recurrence ``h_t = modReLU(h_{t-1} W + d_t)`` with a hand-written backward.

The drive ``d`` (``(T, B, N)``) is computed for the whole sequence beforehand (every scheme of an
orthogonal host depends on the inputs alone), and ``W`` (the orthogonal matrix, evaluated once per
forward) is fixed during the loop. Per time step the forward does one ``addmm`` plus four in-place
element-wise ops into preallocated buffers; the backward loop does one ``addmm`` and one product
with a precomputed mask. ``dW``, the modReLU bias gradient and everything else are computed for
all steps at once, outside the loops.

Complex hidden states (scuRNN) run as real vectors ``[Re h, Im h]`` (``N = 2H``) with the real
``2H x 2H`` matrix ``[[Re B, Im B], [-Im B, Re B]]``, so ``[Re h, Im h] W = [Re hB, Im hB]``; the
modReLU then acts on the modulus of each pair ``(h_j, h_{j+H})``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["modrelu_recurrence"]


class _ModReLURecurrence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, d, h0, W, bias, paired):
        ctx.set_materialize_grads(False)
        T, B, N = d.shape
        hs = d.new_empty(T, B, N)
        h_steps, d_steps = hs.unbind(0), d.unbind(0)
        h = h0
        if not paired:
            s = d.new_empty(B, N)
            for t in range(T):
                z = torch.addmm(d_steps[t], h, W, out=h_steps[t])
                torch.sign(z, out=s)
                torch.addcmul(bias, z, s, out=z)  # |z| + b
                h = z.relu_().mul_(s)
            rs = None
        else:
            H = N // 2
            rs = d.new_empty(T, B, H)  # |z| per complex unit, needed by the backward
            r_steps = rs.unbind(0)
            sc = d.new_empty(B, H)
            for t in range(T):
                z = torch.addmm(d_steps[t], h, W, out=h_steps[t])
                zv = z.view(B, 2, H)
                r = torch.hypot(zv[:, 0], zv[:, 1], out=r_steps[t])
                torch.add(r, bias, out=sc).relu_().div_(r).nan_to_num_(0.0, 0.0, 0.0)
                zv.mul_(sc.unsqueeze(1))
                h = z
        ctx.paired = paired
        ctx.save_for_backward(h0, W, bias, hs, rs)
        return hs

    @staticmethod
    def backward(ctx, d_hs):
        h0, W, bias, hs, rs = ctx.saved_tensors
        T, B, N = hs.shape
        if d_hs is None:
            return None, None, None, None, None
        Wt = W.t()
        dz = torch.empty_like(hs)  # gradient w.r.t. the pre-activation z_t = h_{t-1} W + d_t
        dz_steps, g_steps = dz.unbind(0), d_hs.unbind(0)
        if not ctx.paired:
            # d modReLU / dz = 1 where h != 0 (0 elsewhere), d / db = sign(h).
            mask = (hs != 0).to(hs.dtype)
            m_steps = mask.unbind(0)
            torch.mul(g_steps[T - 1], m_steps[T - 1], out=dz_steps[T - 1])
            for t in range(T - 2, -1, -1):
                torch.addmm(g_steps[t], dz_steps[t + 1], Wt, out=dz_steps[t]).mul_(m_steps[t])
            d_bias = torch.sign(hs, out=mask).mul_(dz).sum((0, 1))
        else:
            # Per unit, with r = |z|, u = z / r: h = z (r + b) / r on active units (r + b > 0), and
            # dz = s g - (b / r) u (u . g) with s = (r + b) / r; d / db = u . g.
            H = N // 2
            active = (rs + bias > 0) & (rs > 0)
            r_safe = torch.where(active, rs, 1)
            s = torch.where(active, (rs + bias) / r_safe, 0)
            c = torch.where(active, -bias / r_safe, 0)
            u = hs.view(T, B, 2, H) / torch.where(active, rs + bias, 1).unsqueeze(2)
            u = u.mul_(active.unsqueeze(2))
            ug = hs.new_empty(T, B, H)
            s_steps, c_steps, u_steps, ug_steps = s.unbind(0), c.unbind(0), u.unbind(0), ug.unbind(0)
            tmp = hs.new_empty(B, 2, H)
            q = hs.new_empty(B, H)

            def local(t, g):
                # g: (B, 2H) total gradient on h_t, overwritten by dz_t
                gv = g.view(B, 2, H)
                p = torch.sum(torch.mul(gv, u_steps[t], out=tmp), 1, out=ug_steps[t])
                torch.mul(p, c_steps[t], out=q)
                gv.mul_(s_steps[t].unsqueeze(1)).addcmul_(u_steps[t], q.unsqueeze(1))

            dz_steps[T - 1].copy_(g_steps[T - 1])
            local(T - 1, dz_steps[T - 1])
            for t in range(T - 2, -1, -1):
                local(t, torch.addmm(g_steps[t], dz_steps[t + 1], Wt, out=dz_steps[t]))
            d_bias = ug.sum((0, 1))
        d_h0 = dz[0] @ Wt
        d_W = h0.t() @ dz[0]
        if T > 1:
            d_W.addmm_(hs[:-1].reshape(-1, N).t(), dz[1:].reshape(-1, N))
        return dz, d_h0, d_W, d_bias, None


def modrelu_recurrence(d: Tensor, h0: Tensor, W: Tensor, bias: Tensor, paired: bool = False) -> Tensor:
    """All hidden states ``(T, B, N)`` of ``h_t = modReLU(h_{t-1} W + d_t)``.

    Args:
        d: drive ``(T, B, N)``.
        h0: initial state ``(B, N)``.
        W: recurrent matrix ``(N, N)``.
        bias: modReLU bias, ``(N,)``, or ``(N/2,)`` with ``paired``.
        paired: complex units stored as ``[real parts, imaginary parts]`` (``N = 2H``).
    """
    return _ModReLURecurrence.apply(d, h0, W, bias, paired)
