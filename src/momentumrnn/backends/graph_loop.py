"""The ``graph_loop`` backend: the lookahead (Nesterov) gated recurrence as a loop of few generic
tensor operations per step, captured into CUDA graphs on a GPU.

On a GPU a Python loop of small kernels is launch-bound: each operation costs a CPU-side launch
(several microseconds, more than the kernel). This loop is written for the fewest operations per step
(LSTM: 8 forward, 9 backward; GRU: 8 / 13; RNN: 3 / 5; ``benchmarks/speed.py`` counts them), with the
input drive ``D = b - epsilon (W_ih x + b_ih)`` formed for the whole sequence by one GEMM, the LSTM
gates reordered to ``[o, i, f, g]`` (one sigmoid and one tanh per step), and the activation
derivatives of the backward formed for blocks of steps. On CUDA the whole forward loop and the whole
backward loop are each captured once per shape into a CUDA graph (``torch.cuda.CUDAGraph``) and
replayed: one launch per sequence instead of one per operation and step. Inputs are copied into the
graph's buffers and outputs copied out, so calls (layers, directions, micro-batches) never share
state. The same code runs eagerly on the CPU (where the tests compare it with the reference in
float64) and on CUDA when ``MOMENTUMRNN_CUDA_GRAPHS=0`` or inside a capture of the caller's own.

Operators: ``momentumrnn::lookahead_loop`` / ``momentumrnn::lookahead_loop_backward`` (same arguments
as ``momentumrnn::gated_loop`` in the lookahead mode; double backward through
:func:`.loop_ops.literal_loop`).
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import torch
from torch import Tensor

from ..lengths import at_last_step
from ..schemes import MomentumState
from . import fused
from .loop_ops import HOST_CODES, LOOKAHEAD, literal_loop
from .ops import call, invoke, kernel_op

if TYPE_CHECKING:
    from .._typing import GatedLayer, Hidden, HyperParameters, StepResult
    from ..lengths import SeqInfo
    from .native import GatedParams

__all__ = ["run", "lookahead_loop", "lookahead_loop_backward", "clear_graphs"]

_BLOCK = 16
_MAX_GRAPHS = 8
_graphs: collections.OrderedDict[tuple, _Graph] = collections.OrderedDict()


def _perm(host: int, H: int, device: torch.device) -> Tensor | None:
    """The LSTM's gate order [o, i, f, g] (from torch's [i, f, g, o]); None otherwise."""
    if host != 2:
        return None
    # made on the device: a copy from host memory is not allowed while a CUDA graph captures
    return torch.cat([torch.arange(3 * H, 4 * H, device=device), torch.arange(0, 3 * H, device=device)])


def _inverse(perm: Tensor) -> Tensor:
    return torch.empty_like(perm).scatter_(0, perm, torch.arange(perm.numel(), device=perm.device))


# ---------------------------------------------------------------------------- forward
def _forward(
    x: Tensor,
    w_ih: Tensor,
    b_ih: Tensor | None,
    bias_e: Tensor,
    w_hh: Tensor,
    b_hn: Tensor | None,
    h0: Tensor,
    c0: Tensor | None,
    p0: Tensor,
    alpha: Tensor,
    beta_k: Tensor,
    last: Tensor | None,
    host: int,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The loop on tensors (no autograd, no host synchronisation: capturable)."""
    T, B, I = x.shape
    G, H = w_hh.shape
    perm = _perm(host, H, x.device)
    if perm is not None:
        w_ih, w_hh, bias_e = w_ih[perm], w_hh[perm], bias_e[perm]
        b_ih = b_ih[perm] if b_ih is not None else None
        p0 = p0[:, perm]
    # D = bias_e - eps (x W_ih^T + b_ih) for every step: one GEMM
    shift = bias_e - eps * b_ih if b_ih is not None else bias_e
    D = torch.addmm(shift, x.reshape(T * B, I), w_ih.t(), alpha=-eps).view(T, B, G)
    P = x.new_empty(T, B, G)
    hs = x.new_empty(T, B, H)
    A = x.new_empty(T, B, G) if host in (2, 3) else x.new_empty(0)
    cs = x.new_empty(T, B, H) if host == 2 else x.new_empty(0)
    tc = x.new_empty(T, B, H) if host == 2 else x.new_empty(0)
    rn = x.new_empty(T, B, H) if host == 3 else x.new_empty(0)
    wt = w_hh.t()
    h, p_prev = h0, p0
    if host == 2:
        c = cast(Tensor, c0)  # the LSTM's
        for t in range(T):
            torch.addmm(D[t], h, wt, out=P[t])
            a = torch.lerp(p_prev, P[t], alpha[t], out=A[t])  # alpha p_t - beta p_{t-1}
            a[:, : 3 * H].sigmoid_()
            a[:, 3 * H :].tanh_()
            c = torch.mul(a[:, 2 * H : 3 * H], c, out=cs[t]).addcmul_(a[:, H : 2 * H], a[:, 3 * H :])
            h = torch.mul(torch.tanh(c, out=tc[t]), a[:, :H], out=hs[t])
            p_prev = P[t]
    elif host == 3:
        w_rz, w_n = wt[:, : 2 * H], wt[:, 2 * H :]
        b_hn = cast(Tensor, b_hn)  # the GRU's
        for t in range(T):
            torch.addmm(b_hn, h, w_n, out=rn[t])
            torch.addmm(D[t, :, : 2 * H], h, w_rz, out=P[t, :, : 2 * H])
            torch.lerp(p_prev[:, : 2 * H], P[t, :, : 2 * H], alpha[t], out=A[t, :, : 2 * H]).sigmoid_()
            torch.addcmul(D[t, :, 2 * H :], A[t, :, :H], rn[t], out=P[t, :, 2 * H :])
            torch.lerp(p_prev[:, 2 * H :], P[t, :, 2 * H :], alpha[t], out=A[t, :, 2 * H :]).tanh_()
            h = torch.lerp(A[t, :, 2 * H :], h, A[t, :, H : 2 * H], out=hs[t])  # n + z (h_prev - n)
            p_prev = P[t]
    else:
        relu = host == 1
        for t in range(T):
            torch.addmm(D[t], h, wt, out=P[t])
            g = torch.lerp(p_prev, P[t], alpha[t], out=hs[t])
            h = g.relu_() if relu else g.tanh_()
            p_prev = P[t]
    p_last = at_last_step(P, last)
    if perm is not None:
        p_last = p_last[:, _inverse(perm)]
    if last is not None:  # padded steps: zero outputs (they ran on padding)
        valid = torch.arange(T, device=x.device).view(T, 1, 1) <= last.view(1, B, 1)
        hs = torch.where(valid, hs, 0)
    return hs, cs, p_last, A, tc, rn


# ---------------------------------------------------------------------------- backward
def _backward(
    x: Tensor,
    w_ih: Tensor,
    b_ih: Tensor | None,
    bias_e: Tensor,
    w_hh: Tensor,
    b_hn: Tensor | None,
    h0: Tensor,
    c0: Tensor | None,
    alpha: Tensor,
    beta_k: Tensor,
    last: Tensor | None,
    hs: Tensor,
    cs: Tensor,
    A: Tensor,
    tc: Tensor,
    rn: Tensor,
    d_hs: Tensor | None,
    d_cs: Tensor | None,
    d_p_last: Tensor | None,
    host: int,
    eps: float,
    need_x: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    T, B, I = x.shape
    G, H = w_hh.shape
    perm = _perm(host, H, x.device)
    if perm is not None:
        w_ih, w_hh = w_ih[perm], w_hh[perm]
    d_hs = d_hs if d_hs is not None else x.new_zeros(T, B, H)
    valid = None
    if last is not None:
        valid = torch.arange(T, device=x.device).view(T, 1, 1) <= last.view(1, B, 1)
        d_hs = torch.where(valid, d_hs, 0)
    inj = None
    if d_p_last is not None:  # the final p's gradient enters at each sequence's last step
        d_p = d_p_last[:, perm] if perm is not None else d_p_last
        at = torch.arange(T, device=x.device).view(T, 1, 1) == (last.view(1, B, 1) if last is not None else T - 1)
        inj = torch.where(at, d_p.unsqueeze(0), 0)
    dG = x.new_empty(T, B, G)  # gradient of the total pre-activation g_t
    dP = x.new_empty(T, B, G)  # gradient of p_t (= of D_t)
    # (typed as tensors: they are None only for the hosts that do not read them)
    dR = cast(Tensor, x.new_empty(T, B, H) if host == 3 else None)  # GRU: of W_hn h + b_hn
    dh = x.new_empty(B, H)
    dH = x.new_zeros(B, H)
    dc = cast(Tensor, (d_cs[T - 1].clone() if d_cs is not None else x.new_zeros(B, H)) if host == 2 else None)

    def lookahead(t: int, lo: int, hi: int) -> None:
        torch.mul(dG[t, :, lo:hi], alpha[t], out=dP[t, :, lo:hi])
        if t + 1 < T:
            dP[t, :, lo:hi].addcmul_(dG[t + 1, :, lo:hi], beta_k[t + 1], value=-1)
        if inj is not None:
            dP[t, :, lo:hi].add_(inj[t, :, lo:hi])

    for t1 in range(T, 0, -_BLOCK):
        t0 = max(t1 - _BLOCK, 0)
        # activation derivatives of the block (they do not depend on the backward recurrence)
        if host == 2:
            o, i, f, g = A[t0:t1].split(H, 2)
            tcb = tc[t0:t1]
            c_prev = cs[t0 - 1 : t1 - 1] if t0 > 0 else torch.cat([cast(Tensor, c0).unsqueeze(0), cs[: t1 - 1]])
            k_c = (1 - tcb * tcb).mul_(o)
            k_o = (o - o * o).mul_(tcb)
            k_ifg = torch.stack([(i - i * i).mul_(g), (f - f * f).mul_(c_prev), (1 - g * g).mul_(i)], 2)
        elif host == 3:
            r, z, n = A[t0:t1].split(H, 2)
            h_prev = hs[t0 - 1 : t1 - 1] if t0 > 0 else torch.cat([h0.unsqueeze(0), hs[: t1 - 1]])
            k_z = (h_prev - n).mul_(z - z * z)
            k_n = (1 - z).mul_(1 - n * n)
            k_r = (r - r * r).mul_(rn[t0:t1])
        else:
            hb = hs[t0:t1]
            k_g = (1 - hb * hb) if host == 0 else (hb > 0).to(hb.dtype)
        for t in range(t1 - 1, t0 - 1, -1):
            j = t - t0
            torch.add(d_hs[t], dH, out=dh)
            if host == 2:
                if d_cs is not None and t < T - 1:
                    dc.add_(d_cs[t])
                dc.addcmul_(dh, k_c[j])
                torch.mul(dh, k_o[j], out=dG[t, :, :H])
                torch.mul(k_ifg[j], dc.unsqueeze(1), out=dG[t, :, H:].view(B, 3, H))
                dc.mul_(A[t, :, 2 * H : 3 * H])
                lookahead(t, 0, G)
                torch.mm(dP[t], w_hh, out=dH)
            elif host == 3:
                torch.mul(dh, k_z[j], out=dG[t, :, H : 2 * H])
                torch.mul(dh, k_n[j], out=dG[t, :, 2 * H :])
                lookahead(t, 2 * H, G)
                torch.mul(dP[t, :, 2 * H :], k_r[j], out=dG[t, :, :H])
                torch.mul(dP[t, :, 2 * H :], A[t, :, :H], out=dR[t])
                lookahead(t, 0, 2 * H)
                torch.mul(dh, A[t, :, H : 2 * H], out=dH)
                dH.addmm_(dP[t, :, : 2 * H], w_hh[: 2 * H]).addmm_(dR[t], w_hh[2 * H :])
            else:
                torch.mul(dh, k_g[j], out=dG[t])
                lookahead(t, 0, G)
                torch.mm(dP[t], w_hh, out=dH)
    # parameter and input gradients, all steps at once
    h_prev = torch.cat([h0.unsqueeze(0), hs[:-1]])
    if valid is not None:
        h_prev = torch.where(valid, h_prev, 0)
    rec = torch.cat([dP[:, :, : 2 * H], dR], 2) if host == 3 else dP
    d_w_hh = rec.reshape(T * B, G).t().mm(h_prev.reshape(T * B, H))
    dP2 = dP.view(T * B, G)
    d_x = dP2.mm(w_ih).mul_(-eps).view(T, B, I) if need_x else x.new_empty(0)
    d_w_ih = dP2.t().mm(x.reshape(T * B, I)).mul_(-eps)
    d_bias_e = dP2.sum(0)
    d_b_ih = d_bias_e * -eps if b_ih is not None else x.new_empty(0)
    d_p0 = dG[0] * -beta_k[0]
    if perm is not None:
        inv = _inverse(perm)
        d_w_hh, d_w_ih, d_bias_e, d_p0 = d_w_hh[inv], d_w_ih[inv], d_bias_e[inv], d_p0[:, inv]
        d_b_ih = d_b_ih[inv] if b_ih is not None else d_b_ih
    d_b_hn = rec[:, :, 2 * H :].sum((0, 1)) if host == 3 else x.new_empty(0)
    return (d_x, d_w_ih, d_b_ih, d_bias_e, d_w_hh, d_b_hn, dH, dc if host == 2 else x.new_empty(0), d_p0)


# ---------------------------------------------------------------------------- CUDA graphs
class _Graph:
    """One captured call: static inputs, the graph, static outputs."""

    def __init__(self, fn: Callable[..., tuple[Tensor, ...]], tensors: list[Tensor | None], config: dict[str, Any]):
        with torch.no_grad(), torch.cuda.device(cast(Tensor, tensors[0]).device):  # tensors[0]: x
            self.inputs = [t.detach().clone() if t is not None else None for t in tensors]
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):  # warm-up (library handles, workspaces) off the graph
                fn(*self.inputs, **config)
            torch.cuda.current_stream().wait_stream(stream)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.outputs = fn(*self.inputs, **config)

    def __call__(self, tensors: list[Tensor | None]) -> tuple[Tensor, ...]:
        with torch.no_grad(), torch.cuda.device(cast(Tensor, tensors[0]).device):
            for s, t in zip(self.inputs, tensors):
                if s is not None:
                    s.copy_(cast(Tensor, t))  # a static input for each tensor given
            self.graph.replay()
            return tuple(o.clone() for o in self.outputs)


def _graphs_enabled() -> bool:
    return os.environ.get("MOMENTUMRNN_CUDA_GRAPHS", "1") not in ("0", "")


_Outputs = TypeVar("_Outputs", bound="tuple[Tensor, ...]")


def _call(fn: Callable[..., _Outputs], tensors: list[Tensor | None], config: dict[str, Any]) -> _Outputs:
    """``fn(*tensors, **config)``, through a cached CUDA graph on CUDA."""
    dev = cast(Tensor, tensors[0]).device  # x
    if dev.type != "cuda" or not _graphs_enabled() or torch.cuda.is_current_stream_capturing():
        return fn(*tensors, **config)
    key = (
        fn.__name__,
        tuple(sorted(config.items())),
        str(dev),
        tuple(None if t is None else (tuple(t.shape), t.dtype) for t in tensors),
    )
    graph = _graphs.get(key)
    if graph is None:
        graph = _graphs[key] = _Graph(fn, tensors, config)
        while len(_graphs) > _MAX_GRAPHS:
            _graphs.popitem(last=False)
    else:
        _graphs.move_to_end(key)
    return cast(_Outputs, graph(tensors))  # (copies of) fn's outputs


def clear_graphs() -> None:
    """Drop every captured graph (and the memory its buffers hold)."""
    _graphs.clear()


# ---------------------------------------------------------------------------- operators
@kernel_op("momentumrnn::lookahead_loop", device_types=("cpu", "cuda"))
def lookahead_loop(
    x: Tensor,
    w_ih: Tensor,
    b_ih: Tensor | None,
    bias_e: Tensor,
    w_hh: Tensor,
    b_hn: Tensor | None,
    h0: Tensor,
    c0: Tensor | None,
    p0: Tensor,
    alpha: Tensor,
    beta_k: Tensor,
    last: Tensor | None,
    host: int,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(hs, cs, p_last, gates, tanh(c), W_hn h + b_hn)`` (absent ones empty)."""
    return _call(
        _forward, [x, w_ih, b_ih, bias_e, w_hh, b_hn, h0, c0, p0, alpha, beta_k, last], {"host": host, "eps": eps}
    )


@lookahead_loop.register_fake
def _(
    x: Tensor,
    w_ih: Tensor,
    b_ih: Tensor | None,
    bias_e: Tensor,
    w_hh: Tensor,
    b_hn: Tensor | None,
    h0: Tensor,
    c0: Tensor | None,
    p0: Tensor,
    alpha: Tensor,
    beta_k: Tensor,
    last: Tensor | None,
    host: int,
    eps: float,
) -> tuple[Tensor, ...]:
    T, B, _ = x.shape
    G, H = w_hh.shape
    return (
        x.new_empty(T, B, H),
        x.new_empty(T, B, H) if host == 2 else x.new_empty(0),
        x.new_empty(B, G),
        x.new_empty(T, B, G) if host in (2, 3) else x.new_empty(0),
        x.new_empty(T, B, H) if host == 2 else x.new_empty(0),
        x.new_empty(T, B, H) if host == 3 else x.new_empty(0),
    )


@kernel_op("momentumrnn::lookahead_loop_backward", device_types=("cpu", "cuda"))
def lookahead_loop_backward(
    x: Tensor,
    w_ih: Tensor,
    b_ih: Tensor | None,
    bias_e: Tensor,
    w_hh: Tensor,
    b_hn: Tensor | None,
    h0: Tensor,
    c0: Tensor | None,
    alpha: Tensor,
    beta_k: Tensor,
    last: Tensor | None,
    hs: Tensor,
    cs: Tensor,
    gates: Tensor,
    tc: Tensor,
    rn: Tensor,
    d_hs: Tensor | None,
    d_cs: Tensor | None,
    d_p_last: Tensor | None,
    host: int,
    eps: float,
    need_x: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(d_x, d_w_ih, d_b_ih, d_bias_e, d_w_hh, d_b_hn, d_h0, d_c0, d_p0)`` (absent ones empty)."""
    return _call(
        _backward,
        [x, w_ih, b_ih, bias_e, w_hh, b_hn, h0, c0, alpha, beta_k, last, hs, cs, gates, tc, rn, d_hs, d_cs, d_p_last],
        {"host": host, "eps": eps, "need_x": need_x},
    )


@lookahead_loop_backward.register_fake
def _(
    x: Tensor,
    w_ih: Tensor,
    b_ih: Tensor | None,
    bias_e: Tensor,
    w_hh: Tensor,
    b_hn: Tensor | None,
    h0: Tensor,
    c0: Tensor | None,
    alpha: Tensor,
    beta_k: Tensor,
    last: Tensor | None,
    hs: Tensor,
    cs: Tensor,
    gates: Tensor,
    tc: Tensor,
    rn: Tensor,
    d_hs: Tensor | None,
    d_cs: Tensor | None,
    d_p_last: Tensor | None,
    host: int,
    eps: float,
    need_x: bool,
) -> tuple[Tensor, ...]:
    T, B, I = x.shape
    G, H = w_hh.shape
    e = x.new_empty(0)
    return (
        x.new_empty(T, B, I) if need_x else e,
        x.new_empty(G, I),
        x.new_empty(G) if b_ih is not None else x.new_empty(0),
        x.new_empty(G),
        x.new_empty(G, H),
        x.new_empty(H) if host == 3 else x.new_empty(0),
        x.new_empty(B, H),
        x.new_empty(B, H) if host == 2 else x.new_empty(0),
        x.new_empty(B, G),
    )


_INPUTS = ("x", "w_ih", "b_ih", "bias_e", "w_hh", "b_hn", "h0", "c0", "p0", "alpha", "beta_k", "last")


def _setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
    ctx.set_materialize_grads(False)
    named = dict(zip(_INPUTS, inputs))
    ctx.host, ctx.eps = inputs[len(_INPUTS) :]
    ctx.present = tuple(named[k] is not None for k in _INPUTS)
    hs, cs, _, gates, tc, rn = output
    ctx.save_for_backward(*(named[k] for k in _INPUTS if named[k] is not None), hs, cs, gates, tc, rn)


def _backward_rule(
    ctx: Any, d_hs: Tensor | None, d_cs: Tensor | None, d_p_last: Tensor | None, *unused: Tensor | None
) -> tuple[Tensor | None, ...]:
    saved = list(ctx.saved_tensors)
    # the tensor inputs by name, None where absent
    named: dict[str, Any] = {k: (saved.pop(0) if present else None) for k, present in zip(_INPUTS, ctx.present)}
    hs, cs, gates, tc, rn = saved
    needs = dict(zip(_INPUTS, ctx.needs_input_grad))
    if torch.is_grad_enabled():  # create_graph=True: differentiate the literal loop
        outs = literal_loop(
            named["x"],
            named["w_ih"],
            named["b_ih"],
            named["bias_e"],
            named["w_hh"],
            named["b_hn"],
            named["h0"],
            named["c0"],
            None,
            None,
            named["p0"],
            named["alpha"],
            named["beta_k"],
            named["last"],
            ctx.host,
            LOOKAHEAD,
            False,
            0.0,
            ctx.eps,
            0.0,
        )
        pairs = [
            (o, g)
            for o, g in zip((outs[0], outs[1], outs[4]), (d_hs, d_cs, d_p_last))
            if o is not None and g is not None
        ]
        wrt = [k for k in _INPUTS if named[k] is not None and needs[k]]
        got = (
            torch.autograd.grad(
                [o for o, _ in pairs],
                [named[k] for k in wrt],
                [g for _, g in pairs],
                allow_unused=True,
                create_graph=True,
            )
            if pairs and wrt
            else []
        )
        by_name = dict(zip(wrt, got))
        return (*(by_name.get(k) for k in _INPUTS), None, None)
    grads = invoke(
        lookahead_loop_backward,
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
        gates,
        tc,
        rn,
        d_hs,
        d_cs,
        d_p_last,
        ctx.host,
        ctx.eps,
        needs["x"],
    )
    by_name = dict(zip(("x", "w_ih", "b_ih", "bias_e", "w_hh", "b_hn", "h0", "c0", "p0"), grads))
    return (*(by_name[k] if k in by_name and needs[k] and named[k] is not None else None for k in _INPUTS), None, None)


torch.library.register_autograd("momentumrnn::lookahead_loop", _backward_rule, setup_context=_setup_context)


class _LookaheadFunction(torch.autograd.Function):
    @staticmethod
    def forward(*args: Any) -> Any:
        return invoke(lookahead_loop, *args)

    setup_context = staticmethod(_setup_context)
    backward = staticmethod(_backward_rule)


# ---------------------------------------------------------------------------- backend
def run(
    layer: GatedLayer,
    p: GatedParams,
    x: Tensor,
    seq: SeqInfo,
    hidden0: Hidden,
    mom0: MomentumState,
    hp: HyperParameters,
) -> StepResult:
    """A gated host's direction with the lookahead drive (learnable epsilon: the Python loop)."""
    _mu, eps = hp
    if isinstance(eps, Tensor) or x.shape[1] == 0:
        return fused.run(layer, p, x, seq, hidden0, mom0, hp)
    T, B, _ = x.shape
    H, GH = layer.hidden_size, p.w_ih.shape[0]
    host = layer.host
    bias_e, b_hn = fused.split_hh_bias(p, host, H, x)
    beta_k, k = layer.scheme.schedule(T, mom0.step, x.dtype, x.device)
    beta_k = beta_k.expand(T, B, 1).contiguous()
    alpha = 1 + beta_k
    code = HOST_CODES[(host, layer.nonlinearity if host == "rnn" else None)]
    h0 = hidden0["h"] if hidden0["h"] is not None else x.new_zeros(B, H)
    c0 = (hidden0.get("c") if hidden0.get("c") is not None else x.new_zeros(B, H)) if host == "lstm" else None
    p0 = mom0.p if mom0.p is not None else x.new_zeros(B, GH)
    hs, cs, p_T, _, _, _ = call(
        _LookaheadFunction,
        lookahead_loop,
        (x, p.w_ih, p.b_ih, bias_e, p.w_hh, b_hn, h0, c0, p0, alpha, beta_k, seq.last, code, float(eps)),
    )
    finals = {"h": at_last_step(hs, seq.last)}
    if host == "lstm":
        finals["c"] = at_last_step(cs, seq.last)
    return hs, finals, MomentumState(p=p_T, step=at_last_step(k.expand(T, B), seq.last))
