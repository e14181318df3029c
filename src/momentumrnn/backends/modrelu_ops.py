"""The modReLU recurrences (:mod:`.modrelu_loop`'s plain and lookahead bodies) as registered
custom operators, with the conventions of :mod:`.ops` (tensor outputs only, autograd registered
on the operator and on an ``autograd.Function``, double backward through the literal loop)."""

from collections.abc import Sequence
from typing import Any, TypeVar, cast

import torch
from torch import Tensor

from . import literal
from .modrelu_loop import DriveFactors, ModReLULookahead, ModReLURecurrence
from .ops import (
    _T,
    _Ctx,
    _differentiable,
    _grads_fake,
    _grads_out,
    _out,
    _Tensors9,
    _Tensors12,
    call,
    invoke,
    kernel_op,
)

__all__ = ["modrelu_recurrence", "modrelu_lookahead"]


_E = TypeVar("_E")


def _with_paired(tensors: Sequence[_E], paired: _E) -> tuple[_E, ...]:
    return (*tensors[:3], paired, *tensors[3:])


@kernel_op("momentumrnn::modrelu_recurrence")
def _modrelu_op(
    h0: Tensor,
    W: Tensor,
    bias: Tensor,
    paired: bool,
    d: _T,
    xs: _T,
    a: _T,
    pv: _T,
    v0: _T,
    qs: _T,
    c: _T,
    pm: _T,
    m0: _T,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(hs, rs, alphas)``: hidden states, and for complex pairs ``|z|`` and ``|h| / |z|``."""
    ctx = _Ctx()
    hs = ModReLURecurrence.forward(ctx, h0, W, bias, paired, d, xs, a, pv, v0, qs, c, pm, m0)
    rs, alphas = ctx.saved_tensors[4:6]
    return _out(hs, h0), _out(rs, h0), _out(alphas, h0)


@_modrelu_op.register_fake
def _(
    h0: Tensor,
    W: Tensor,
    bias: Tensor,
    paired: bool,
    d: _T,
    xs: _T,
    a: _T,
    pv: _T,
    v0: _T,
    qs: _T,
    c: _T,
    pm: _T,
    m0: _T,
) -> tuple[Tensor, Tensor, Tensor]:
    xs, a = cast(Tensor, xs), cast(Tensor, a)  # given where read below: without d
    T, B, N = d.shape if d is not None else (xs.shape[0], xs.shape[1], a.shape[0])
    half = (T, B, N // 2) if paired else (0,)
    return h0.new_empty(T, B, N), h0.new_empty(half), h0.new_empty(half)


@kernel_op("momentumrnn::modrelu_recurrence_backward")
def _modrelu_backward_op(
    h0: Tensor,
    W: Tensor,
    bias: Tensor,
    paired: bool,
    d: _T,
    xs: _T,
    a: _T,
    pv: _T,
    v0: _T,
    qs: _T,
    c: _T,
    pm: _T,
    m0: _T,
    hs: Tensor,
    rs: Tensor,
    alphas: Tensor,
    d_hs: Tensor,
    needs: list[bool],
) -> _Tensors12:
    ctx = _Ctx(paired=paired, factored=d is None, needs_input_grad=_with_paired(needs, False))
    factors = () if d is not None else (xs, a, pv, v0, qs, c, pm, m0)
    ctx.saved_tensors = (h0, W, bias, hs, rs if paired else None, alphas if paired else None, *factors)
    grads = ModReLURecurrence.backward(ctx, d_hs)
    grads = grads[:3] + grads[4:]
    return cast(_Tensors12, _grads_out(grads, (h0, W, bias, d, xs, a, pv, v0, qs, c, pm, m0), needs))


@_modrelu_backward_op.register_fake
def _(
    h0: Tensor,
    W: Tensor,
    bias: Tensor,
    paired: bool,
    d: _T,
    xs: _T,
    a: _T,
    pv: _T,
    v0: _T,
    qs: _T,
    c: _T,
    pm: _T,
    m0: _T,
    hs: Tensor,
    rs: Tensor,
    alphas: Tensor,
    d_hs: Tensor,
    needs: list[bool],
) -> tuple[Tensor, ...]:
    return _grads_fake((h0, W, bias, d, xs, a, pv, v0, qs, c, pm, m0), needs)


def _modrelu_setup(ctx: Any, inputs: tuple, output: tuple) -> None:
    ctx.paired = inputs[3]
    hs, rs, alphas = output
    ctx.set_materialize_grads(False)
    ctx.mark_non_differentiable(rs, alphas)
    ctx.save_for_backward(*inputs[:3], *inputs[4:], hs, rs, alphas)


def _modrelu_backward(ctx: Any, d_hs: _T, *_: Tensor | None) -> tuple[Tensor | None, ...]:
    saved = ctx.saved_tensors
    tensors, kept = saved[:12], saved[12:]
    flags = ctx.needs_input_grad
    needs = [bool(n) and t is not None for n, t in zip(flags[:3] + flags[4:], tensors)]
    if d_hs is None or not any(needs):
        return (None,) * 13
    paired = ctx.paired
    if torch.is_grad_enabled():
        res = _differentiable(lambda *ts: literal.modrelu_reference(*_with_paired(ts, paired)), tensors, (d_hs,), needs)
        return _with_paired(res, None)
    out = invoke(_modrelu_backward_op, *_with_paired(tensors, paired), *kept, d_hs, needs)
    return _with_paired([g if n else None for g, n in zip(out, needs)], None)


_modrelu_op.register_autograd(_modrelu_backward, setup_context=_modrelu_setup)


class _ModReLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(*args: Any) -> Any:
        return invoke(_modrelu_op, *args)

    setup_context = staticmethod(_modrelu_setup)
    backward = staticmethod(_modrelu_backward)


def modrelu_recurrence(
    d: Tensor | None,
    h0: Tensor,
    W: Tensor,
    bias: Tensor,
    paired: bool = False,
    factors: DriveFactors | None = None,
) -> Tensor:
    """All hidden states ``(T, B, N)`` of ``h_t = modReLU(h_{t-1} W + d_t)``
    (``momentumrnn::modrelu_recurrence``).

    Args:
        d: dense drive ``(T, B, N)``, or None with ``factors``.
        h0: initial state ``(B, N)``.
        W: recurrent matrix ``(N, N)``; with ``paired``, ``(2, H, H)``: real and imaginary parts
            of the complex ``B``.
        bias: modReLU bias, ``(N,)``, or ``(N/2,)`` with ``paired``.
        paired: complex units stored as ``[real parts, imaginary parts]`` (``N = 2H``).
        factors: a :class:`.DriveFactors` drive, formed block by block in the loop (no
            ``(T, B, N)`` drive nor drive gradient is materialized).
    """
    args: tuple
    if d is not None:
        args = (h0, W, bias, paired, d) + (None,) * 8
    else:
        factors = cast(DriveFactors, factors)  # given without d
        args = (h0, W, bias, paired, None, *(None if t is None else t.contiguous() for t in factors))
    return call(_ModReLUFunction, _modrelu_op, args)[0]


# ================================================================ modReLU lookahead recurrence
# tensor inputs: h0, W, bias, x, a, ca, cb, p0, valid (``paired`` after bias)
@kernel_op("momentumrnn::modrelu_lookahead")
def _lookahead_op(
    h0: Tensor,
    W: Tensor,
    bias: Tensor,
    paired: bool,
    x: Tensor,
    a: Tensor,
    ca: Tensor,
    cb: Tensor,
    p0: Tensor,
    valid: _T,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(hs, ps, rs, alphas)``."""
    ctx = _Ctx()
    hs, ps = ModReLULookahead.forward(ctx, h0, W, bias, paired, x, a, ca, cb, p0, valid)
    rs, alphas = ctx.saved_tensors[8:10]
    return _out(hs, h0), _out(ps, h0), _out(rs, h0), _out(alphas, h0)


@_lookahead_op.register_fake
def _(
    h0: Tensor,
    W: Tensor,
    bias: Tensor,
    paired: bool,
    x: Tensor,
    a: Tensor,
    ca: Tensor,
    cb: Tensor,
    p0: Tensor,
    valid: _T,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    T, B, N = x.shape[0], x.shape[1], a.shape[0]
    half = (T, B, N // 2) if paired else (0,)
    return h0.new_empty(T, B, N), h0.new_empty(T, B, N), h0.new_empty(half), h0.new_empty(half)


@kernel_op("momentumrnn::modrelu_lookahead_backward")
def _lookahead_backward_op(
    h0: Tensor,
    W: Tensor,
    bias: Tensor,
    paired: bool,
    x: Tensor,
    a: Tensor,
    ca: Tensor,
    cb: Tensor,
    p0: Tensor,
    valid: _T,
    hs: Tensor,
    rs: Tensor,
    alphas: Tensor,
    d_hs: _T,
    d_ps: _T,
    needs: list[bool],
) -> _Tensors9:
    ctx = _Ctx(paired=paired, needs_input_grad=_with_paired(needs, False))
    ctx.saved_tensors = (h0, W, bias, x, a, ca, cb, hs, rs if paired else None, alphas if paired else None, valid)
    grads = ModReLULookahead.backward(ctx, d_hs, d_ps)
    return cast(_Tensors9, _grads_out(grads[:3] + grads[4:], (h0, W, bias, x, a, ca, cb, p0, valid), needs))


@_lookahead_backward_op.register_fake
def _(
    h0: Tensor,
    W: Tensor,
    bias: Tensor,
    paired: bool,
    x: Tensor,
    a: Tensor,
    ca: Tensor,
    cb: Tensor,
    p0: Tensor,
    valid: _T,
    hs: Tensor,
    rs: Tensor,
    alphas: Tensor,
    d_hs: _T,
    d_ps: _T,
    needs: list[bool],
) -> tuple[Tensor, ...]:
    return _grads_fake((h0, W, bias, x, a, ca, cb, p0, valid), needs)


def _lookahead_setup(ctx: Any, inputs: tuple, output: tuple) -> None:
    ctx.paired = inputs[3]
    hs, _ps, rs, alphas = output
    ctx.set_materialize_grads(False)
    ctx.mark_non_differentiable(rs, alphas)
    ctx.save_for_backward(*inputs[:3], *inputs[4:], hs, rs, alphas)


def _lookahead_backward(ctx: Any, d_hs: _T, d_ps: _T, *_: Tensor | None) -> tuple[Tensor | None, ...]:
    saved = ctx.saved_tensors
    tensors, kept = saved[:9], saved[9:]
    flags = ctx.needs_input_grad
    needs = [bool(n) and t is not None for n, t in zip(flags[:3] + flags[4:], tensors)]
    needs[-1] = False  # valid
    if (d_hs is None and d_ps is None) or not any(needs):
        return (None,) * 10
    paired = ctx.paired
    if torch.is_grad_enabled():
        res = _differentiable(
            lambda *ts: literal.lookahead_reference(*_with_paired(ts, paired)), tensors, (d_hs, d_ps), needs
        )
        return _with_paired(res, None)
    out = invoke(_lookahead_backward_op, *_with_paired(tensors, paired), *kept, d_hs, d_ps, needs)
    return _with_paired([g if n else None for g, n in zip(out, needs)], None)


_lookahead_op.register_autograd(_lookahead_backward, setup_context=_lookahead_setup)


class _LookaheadFunction(torch.autograd.Function):
    @staticmethod
    def forward(*args: Any) -> Any:
        return invoke(_lookahead_op, *args)

    setup_context = staticmethod(_lookahead_setup)
    backward = staticmethod(_lookahead_backward)


def modrelu_lookahead(
    x: Tensor,
    a: Tensor,
    h0: Tensor,
    W: Tensor,
    bias: Tensor,
    ca: Tensor,
    cb: Tensor,
    p0: Tensor,
    paired: bool = False,
    valid: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """``(hs, ps)`` ``(T, B, N)`` of the lookahead recurrence (``momentumrnn::modrelu_lookahead``):
    ``p_t = h_{t-1} W + x_t a^T``, ``g_t = ca_t p_t - cb_t p_{t-1}``, ``h_t = modReLU(g_t)``;
    ``x`` ``(T, B, I)``, ``a`` ``(N, I)`` (``-epsilon W_ih``), ``ca``, ``cb`` ``(T, B', 1)``,
    ``p0`` ``(B, N)``; ``W`` and ``paired`` as in :func:`modrelu_recurrence`."""
    args = (h0, W, bias, paired, x.contiguous(), a, ca, cb, p0, valid)
    return tuple(call(_LookaheadFunction, _lookahead_op, args)[:2])
