"""The compiled gated time loop as registered operators: ``momentumrnn::gated_loop`` and its
backward ``momentumrnn::gated_loop_backward`` (``torch.library.custom_op``, fake implementations
for ``torch.compile`` / ``torch.export``, autograd through ``register_autograd``).

The operators run the C++ loop of ``csrc/gated_loop.cpp`` (built by :mod:`._build`): normalized
drives (Adam, RMSProp: ``mode=0``), the lookahead drive (Nesterov: ``mode=1``) and the linear drive
(heavy ball, scheduled restart: ``mode=2``, ``v_t = mu_t v_{t-1} + eps u_t``) on the RNN
(``host`` 0: tanh, 1: ReLU), LSTM (2) and GRU (3) cells, float32 / float64 on CPU. Arguments as
:func:`momentumrnn.backends.fused.fused_recurrence`: ``x`` ``(T, B, I)``; ``bias_e`` the part of
``b_hh`` added to the pre-activation directly, ``b_hn`` the GRU's candidate bias; ``alpha`` /
``beta_k`` ``(T, B')`` the Nesterov coefficients ``g_t = alpha_t p_t - beta_t p_{t-1}``, or
``alpha`` the linear drive's ``mu_t`` (``None``: ``mu`` every step); ``last``
``(B,)`` each sequence's last step (``None``: all full length); ``block`` the steps per input /
weight-gradient GEMM (:func:`block_steps`).

Outputs (absent ones are empty tensors): ``hs`` ``(T, B, H)`` (0 on padded steps), ``cs``, the
gate activations, the GRU's ``W_hn h + b_hn``, the drive-state checkpoints of each block, the
final ``v``, ``m``, ``p`` at each sequence's last step, and ``u = W_ih x + b_ih`` where ``keep_u`` asks
to keep it for the backward (normalized drives; else the backward recomputes it block by block).
``keep_states`` (normalized drives): the checkpoints are every step's ``m``, ``v`` (``T + 1`` rows:
the initial state, then each step's), which the backward reads instead of recomputing them from
each block's first.

Double backward: when the backward runs with grad mode on (``create_graph=True``) it recomputes
the forward with :func:`literal_loop` (the equations step by step, plain autograd) and
differentiates that, so higher derivatives are exact.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor

from ..schemes import ADAM_EPS as _ADAM_EPS
from . import _build
from .ops import autocast_off, call, invoke, kernel_op

if TYPE_CHECKING:
    from torch._ops import _OpNamespace

__all__ = [
    "gated_loop",
    "gated_loop_backward",
    "call_gated_loop",
    "literal_loop",
    "block_steps",
    "autocast_off",
    "call",
    "HOST_CODES",
    "GATES_OF",
    "NORMALIZED",
    "LOOKAHEAD",
    "LINEAR",
]

HOST_CODES = {("rnn", "tanh"): 0, ("rnn", "relu"): 1, ("lstm", None): 2, ("gru", None): 3}
NORMALIZED, LOOKAHEAD, LINEAR = 0, 1, 2
#: gates per host code
GATES_OF = {0: 1, 1: 1, 2: 4, 3: 3}
#: the backward's recurrent weight gradient is one GEMM per this many (time x batch) rows at least
WEIGHT_ROWS = 4096


def block_steps(T: int, B: int, G: int, element_size: int) -> int:
    """Steps per block: about 1 MB of ``(B, G)`` rows per block buffer (cache-sized), and at least
    256 rows per weight-gradient GEMM (efficient at small batches); between 1 and 64."""
    per_step = max(1, B * G * element_size)
    k = max((1 << 20) // per_step, -(-256 // max(B, 1)))
    return int(max(1, min(64, T, k)))


def _ops() -> _OpNamespace:
    ops = _build.load()
    if ops is None:
        raise RuntimeError(f"momentumrnn::gated_loop needs the compiled loop: {_build.status()['reason']}")
    return ops


@kernel_op("momentumrnn::gated_loop", device_types="cpu")
def gated_loop(
    x: Tensor,
    w_ih: Tensor,
    b_ih: Tensor | None,
    bias_e: Tensor,
    w_hh: Tensor,
    b_hn: Tensor | None,
    h0: Tensor,
    c0: Tensor | None,
    v0: Tensor | None,
    m0: Tensor | None,
    p0: Tensor | None,
    alpha: Tensor | None,
    beta_k: Tensor | None,
    last: Tensor | None,
    host: int,
    mode: int,
    velocity: bool,
    mu: float,
    eps: float,
    beta: float,
    block: int,
    keep_u: bool,
    keep_states: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    out = _ops().forward(
        host,
        mode,
        velocity,
        x,
        w_ih,
        b_ih,
        bias_e,
        w_hh,
        b_hn,
        h0,
        c0,
        v0,
        m0,
        p0,
        alpha,
        beta_k,
        last,
        mu,
        eps,
        beta,
        block,
        keep_u,
        keep_states,
    )
    return tuple(out)


@gated_loop.register_fake
def _(
    x: Tensor,
    w_ih: Tensor,
    b_ih: Tensor | None,
    bias_e: Tensor,
    w_hh: Tensor,
    b_hn: Tensor | None,
    h0: Tensor,
    c0: Tensor | None,
    v0: Tensor | None,
    m0: Tensor | None,
    p0: Tensor | None,
    alpha: Tensor | None,
    beta_k: Tensor | None,
    last: Tensor | None,
    host: int,
    mode: int,
    velocity: bool,
    mu: float,
    eps: float,
    beta: float,
    block: int,
    keep_u: bool,
    keep_states: bool,
) -> tuple[Tensor, ...]:
    T, B, _ = x.shape
    G, H = w_hh.shape
    norm = mode == NORMALIZED
    nb = T + 1 if norm and keep_states else -(-T // block)
    e = x.new_empty(0)
    return (
        x.new_empty(T, B, H),
        x.new_empty(T, B, H) if host == 2 else e,
        x.new_empty(T, B, G) if host in (2, 3) else x.new_empty(0),
        x.new_empty(T, B, H) if host == 3 else x.new_empty(0),
        x.new_empty(nb, B, G) if norm and velocity else x.new_empty(0),
        x.new_empty(nb, B, G) if norm else x.new_empty(0),
        x.new_empty(B, G) if (norm and velocity) or mode == LINEAR else x.new_empty(0),
        x.new_empty(B, G) if norm else x.new_empty(0),
        x.new_empty(B, G) if mode == LOOKAHEAD else x.new_empty(0),
        x.new_empty(T, B, G) if norm and keep_u else x.new_empty(0),
    )


@kernel_op("momentumrnn::gated_loop_backward", device_types="cpu")
def gated_loop_backward(
    x: Tensor,
    w_ih: Tensor,
    b_ih: Tensor | None,
    bias_e: Tensor,
    w_hh: Tensor,
    b_hn: Tensor | None,
    h0: Tensor,
    c0: Tensor | None,
    alpha: Tensor | None,
    beta_k: Tensor | None,
    last: Tensor | None,
    hs: Tensor,
    cs: Tensor,
    acts: Tensor,
    rn: Tensor,
    ck_v: Tensor,
    ck_m: Tensor,
    u_all: Tensor,
    d_hs: Tensor | None,
    d_cs: Tensor | None,
    d_v_last: Tensor | None,
    d_m_last: Tensor | None,
    d_p_last: Tensor | None,
    host: int,
    mode: int,
    velocity: bool,
    mu: float,
    eps: float,
    beta: float,
    block: int,
    rows: int,
    need_x: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(d_x, d_w_ih, d_b_ih, d_bias_e, d_w_hh, d_b_hn, d_h0, d_c0, d_v0, d_m0, d_p0)`` (absent ones empty)."""
    out = _ops().backward(
        host,
        mode,
        velocity,
        x,
        w_ih,
        b_ih,
        bias_e,
        w_hh,
        b_hn,
        h0,
        c0,
        alpha,
        beta_k,
        last,
        hs,
        cs,
        acts,
        rn,
        ck_v,
        ck_m,
        u_all,
        d_hs,
        d_cs,
        d_v_last,
        d_m_last,
        d_p_last,
        mu,
        eps,
        beta,
        block,
        rows,
        need_x,
    )
    return tuple(out)


@gated_loop_backward.register_fake
def _(
    x: Tensor,
    w_ih: Tensor,
    b_ih: Tensor | None,
    bias_e: Tensor,
    w_hh: Tensor,
    b_hn: Tensor | None,
    h0: Tensor,
    c0: Tensor | None,
    alpha: Tensor | None,
    beta_k: Tensor | None,
    last: Tensor | None,
    hs: Tensor,
    cs: Tensor,
    acts: Tensor,
    rn: Tensor,
    ck_v: Tensor,
    ck_m: Tensor,
    u_all: Tensor,
    d_hs: Tensor | None,
    d_cs: Tensor | None,
    d_v_last: Tensor | None,
    d_m_last: Tensor | None,
    d_p_last: Tensor | None,
    host: int,
    mode: int,
    velocity: bool,
    mu: float,
    eps: float,
    beta: float,
    block: int,
    rows: int,
    need_x: bool,
) -> tuple[Tensor, ...]:
    T, B, I = x.shape
    G, H = w_hh.shape
    e = x.new_empty(0)
    norm = mode == NORMALIZED
    return (
        x.new_empty(T, B, I) if need_x else e,
        w_ih.new_empty(G, I),
        x.new_empty(G) if b_ih is not None else x.new_empty(0),
        x.new_empty(G),
        x.new_empty(G, H),
        x.new_empty(H) if host == 3 else x.new_empty(0),
        x.new_empty(B, H),
        x.new_empty(B, H) if host == 2 else x.new_empty(0),
        x.new_empty(B, G) if (norm and velocity) or mode == LINEAR else x.new_empty(0),
        x.new_empty(B, G) if norm else x.new_empty(0),
        x.new_empty(B, G) if mode == LOOKAHEAD else x.new_empty(0),
    )


_TENSOR_INPUTS = (
    "x",
    "w_ih",
    "b_ih",
    "bias_e",
    "w_hh",
    "b_hn",
    "h0",
    "c0",
    "v0",
    "m0",
    "p0",
    "alpha",
    "beta_k",
    "last",
)
_CONFIG = ("host", "mode", "velocity", "mu", "eps", "beta", "block", "keep_u", "keep_states")


def _setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
    ctx.set_materialize_grads(False)
    named = dict(zip(_TENSOR_INPUTS + _CONFIG, inputs))
    ctx.config = {k: named[k] for k in _CONFIG}
    ctx.present = tuple(named[k] is not None for k in _TENSOR_INPUTS)
    saved = [named[k] for k in _TENSOR_INPUTS if named[k] is not None]
    hs, cs, acts, rn, ck_v, ck_m = output[:6]
    ctx.save_for_backward(*saved, hs, cs, acts, rn, ck_v, ck_m, output[9])


def _backward(
    ctx: Any,
    d_hs: Tensor | None,
    d_cs: Tensor | None,
    d_acts: Tensor | None,
    d_rn: Tensor | None,
    d_ck_v: Tensor | None,
    d_ck_m: Tensor | None,
    d_v_last: Tensor | None,
    d_m_last: Tensor | None,
    d_p_last: Tensor | None,
    d_u: Tensor | None,
) -> tuple[Tensor | None, ...]:
    saved = list(ctx.saved_tensors)
    # the tensor inputs by name, None where absent
    named: dict[str, Any] = {k: (saved.pop(0) if present else None) for k, present in zip(_TENSOR_INPUTS, ctx.present)}
    hs, cs, acts, rn, ck_v, ck_m, u_all = saved
    cfg = ctx.config
    needs = dict(zip(_TENSOR_INPUTS, ctx.needs_input_grad))
    if torch.is_grad_enabled():  # create_graph=True: differentiate the literal loop instead
        return _double_backward(named, cfg, needs, (d_hs, d_cs, d_v_last, d_m_last, d_p_last))
    empty = lambda g: None if g is None or g.numel() == 0 else g  # noqa: E731
    grads = invoke(
        gated_loop_backward,
        named["x"],
        named["w_ih"],
        named["b_ih"],
        named["bias_e"],
        named["w_hh"],
        named["b_hn"],
        named["h0"],
        named["c0"],
        named["alpha"],
        named["beta_k"],
        named["last"],
        hs,
        cs,
        acts,
        rn,
        ck_v,
        ck_m,
        u_all,
        empty(d_hs),
        empty(d_cs),
        empty(d_v_last),
        empty(d_m_last),
        empty(d_p_last),
        cfg["host"],
        cfg["mode"],
        cfg["velocity"],
        cfg["mu"],
        cfg["eps"],
        cfg["beta"],
        cfg["block"],
        WEIGHT_ROWS,
        needs["x"],
    )
    by_name = dict(zip(("x", "w_ih", "b_ih", "bias_e", "w_hh", "b_hn", "h0", "c0", "v0", "m0", "p0"), grads))
    out = []
    for k in _TENSOR_INPUTS:
        g = by_name.get(k)
        out.append(g if g is not None and needs[k] and named[k] is not None and g.numel() > 0 else None)
    return (*out, *(None for _ in _CONFIG))


torch.library.register_autograd("momentumrnn::gated_loop", _backward, setup_context=_setup_context)


class _GatedLoopFunction(torch.autograd.Function):
    @staticmethod
    def forward(*args: Any) -> Any:
        return invoke(gated_loop, *args)

    setup_context = staticmethod(_setup_context)
    backward = staticmethod(_backward)


def call_gated_loop(*args: Any) -> Any:
    """``momentumrnn::gated_loop`` with autograd (arguments and outputs as the operator)."""
    return call(_GatedLoopFunction, gated_loop, args)


def _double_backward(
    named: dict[str, Any], cfg: dict[str, Any], needs: dict[str, bool], grad_outs: tuple[Tensor | None, ...]
) -> tuple[Tensor | None, ...]:
    outs = literal_loop(**named, **{k: cfg[k] for k in ("host", "mode", "velocity", "mu", "eps", "beta")})
    pairs = [(o, g) for o, g in zip(outs, grad_outs) if o is not None and g is not None and g.numel() > 0]
    wrt = [k for k in _TENSOR_INPUTS if named[k] is not None and needs[k]]
    got = (
        torch.autograd.grad(
            [o for o, _ in pairs], [named[k] for k in wrt], [g for _, g in pairs], allow_unused=True, create_graph=True
        )
        if pairs and wrt
        else []
    )
    by_name = dict(zip(wrt, got))
    return (*(by_name.get(k) for k in _TENSOR_INPUTS), *(None for _ in _CONFIG))


def literal_loop(
    x: Tensor,
    w_ih: Tensor,
    b_ih: Tensor | None,
    bias_e: Tensor,
    w_hh: Tensor,
    b_hn: Tensor | None,
    h0: Tensor,
    c0: Tensor | None,
    v0: Tensor | None,
    m0: Tensor | None,
    p0: Tensor | None,
    alpha: Tensor | None,
    beta_k: Tensor | None,
    last: Tensor | None,
    host: int,
    mode: int,
    velocity: bool,
    mu: float,
    eps: float,
    beta: float,
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None, Tensor | None]:
    """The operator's equations one step at a time with plain autograd (docs/equations.md):
    ``(hs, cs, v_last, m_last, p_last)`` with ``None`` for absent ones."""
    T, B, _ = x.shape
    G, H = w_hh.shape
    u = F.linear(x, w_ih, b_ih)
    zeros = x.new_zeros(B, G)
    h = h0
    c = (c0 if c0 is not None else x.new_zeros(B, H)) if host == 2 else None
    m = m0 if m0 is not None else zeros
    v = v0 if v0 is not None else zeros
    p = p0 if p0 is not None else zeros
    steps = torch.arange(T, device=x.device)
    hs, cs = [], []
    combine: Callable[[Tensor, slice], Tensor]  # the drive's part of a slice of the pre-activation
    for t in range(T):
        r = h @ w_hh.t()
        ut = u[t]
        if mode == NORMALIZED:
            m_new = beta * m + (1 - beta) * ut * ut
            v_new = mu * v + eps * ut if velocity else v
            d = (v_new if velocity else eps * ut) / torch.sqrt(m_new + _ADAM_EPS) + bias_e
            parts: dict[int, Tensor] = {}

            def combine(base: Tensor, sl: slice, d: Tensor = d) -> Tensor:
                return base + d[:, sl]
        elif mode == LINEAR:  # mu_t: alpha (scheduled) or mu
            m_new = m
            mu_t = alpha[t].view(-1, 1) if alpha is not None else mu
            v_new = mu_t * v + eps * ut
            d = v_new + bias_e
            parts = {}

            def combine(base: Tensor, sl: slice, d: Tensor = d) -> Tensor:
                return base + d[:, sl]
        else:  # lookahead: alpha and beta_k given
            a, bb = cast(Tensor, alpha)[t].view(-1, 1), cast(Tensor, beta_k)[t].view(-1, 1)
            d = bias_e - eps * ut
            parts = {}

            def combine(
                base: Tensor,
                sl: slice,
                d: Tensor = d,
                a: Tensor = a,
                bb: Tensor = bb,
                parts: dict[int, Tensor] = parts,
                p: Tensor = p,
            ) -> Tensor:
                p_part = base + d[:, sl]
                parts[sl.start] = p_part
                return a * p_part - bb * p[:, sl]

        if host == 2:
            i, f, g, o = combine(r, slice(0, G)).chunk(4, 1)
            c_new = torch.sigmoid(f) * cast(Tensor, c) + torch.sigmoid(i) * torch.tanh(g)
            h_new = torch.sigmoid(o) * torch.tanh(c_new)
        elif host == 3:
            rz = torch.sigmoid(combine(r[:, : 2 * H], slice(0, 2 * H)))
            rg, z = rz.chunk(2, 1)
            n = torch.tanh(combine(rg * (r[:, 2 * H :] + cast(Tensor, b_hn)), slice(2 * H, G)))
            h_new = n + z * (h - n)
        else:
            pre = combine(r, slice(0, G))
            h_new = torch.tanh(pre) if host == 0 else torch.relu(pre)
        p_new = torch.cat([parts[k] for k in sorted(parts)], 1) if parts else p
        keep = (steps[t] <= last).view(B, 1) if last is not None else None
        # (B023: the lambda runs within this step)
        pick = (lambda new, old: new) if keep is None else (lambda new, old: torch.where(keep, new, old))  # noqa: B023
        hs.append(h_new if keep is None else torch.where(keep, h_new, 0))
        h = pick(h_new, h)
        if host == 2:
            cs.append(c_new if keep is None else torch.where(keep, c_new, 0))
            c = pick(c_new, c)
        if mode == LOOKAHEAD:
            p = pick(p_new, p)
        else:
            m, v = pick(m_new, m), pick(v_new, v)
    norm = mode == NORMALIZED
    return (
        torch.stack(hs),
        torch.stack(cs) if host == 2 else None,
        v if (norm and velocity) or mode == LINEAR else None,
        m if norm else None,
        p if mode == LOOKAHEAD else None,
    )
