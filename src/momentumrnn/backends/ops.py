"""The hand-written kernels as registered custom operators (namespace ``momentumrnn``): the
conventions and helpers every kernel's operators use, and the fused gated recurrence's (the modReLU
recurrences': :mod:`.modrelu_ops`; the C++ loop's: :mod:`.loop_ops`; the lookahead graph loop's:
:mod:`.graph_loop`).

Each kernel is a pair of operators, its forward and its backward, built with
``torch.library.custom_op``. To torch.compile, torch.export and torch.jit.trace each call is one
opaque node: a fake implementation gives the shapes of its outputs, so nothing data-dependent is
traced, and the numerical bodies (:mod:`.fused_kernel`, :mod:`.modrelu_loop`) run unchanged, in
eager mode, at run time. The conventions (which a new kernel follows too):

* **tensor outputs only**: what the kernel does not compute (``cs`` of a GRU, ``ps`` without
  lookahead, ...) is an empty tensor of shape ``(0,)``; the Python functions below
  (:func:`fused_recurrence`, :func:`.modrelu_ops.modrelu_recurrence`, ...) turn those
  back into ``None``. Buffers the backward needs (activations, block-start states) are extra
  outputs marked non-differentiable. Scalars are ``str`` / ``float`` / ``bool`` arguments.
* **autograd**: one ``setup_context`` and one ``backward`` per kernel, registered on the
  forward operator (``register_autograd``: used by ``torch.jit.trace`` graphs and direct calls)
  and on an ``autograd.Function`` with ``setup_context`` that the functions call (what
  ``torch.func`` transforms and torch.compile need). The backward operator returns, for each
  tensor input, its gradient if ``needs[i]`` else an empty tensor.
* **double backward**: when grad mode is on inside the backward (``create_graph=True``,
  ``torch.func.grad``), the backward does not run the hand-written code: it recomputes the
  outputs with the literal, differentiable loop of :mod:`.literal` from the saved inputs and
  differentiates that (``torch.autograd.grad(..., create_graph=True)``): exact second
  derivatives, at the speed of the stepwise backend.
"""

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

import torch
from torch import Tensor

from . import literal
from .fused_kernel import DriveSpec, FusedRecurrence, _BlockedNormalizedDrive, normalized_block_size

if TYPE_CHECKING:
    from torch.library import CustomOpDef

__all__ = ["fused_recurrence", "kernel_op", "invoke", "call", "autocast_off"]


class _Ctx:
    """What the kernel bodies expect of an autograd ctx, outside autograd."""

    saved_tensors: tuple[Tensor | None, ...]
    # the normalized drive's, for the fused kernel's backward
    blocked: _BlockedNormalizedDrive
    starts: tuple[Tensor | None, Tensor | None]

    def __init__(self, **attrs: Any) -> None:
        self.__dict__.update(attrs)

    def save_for_backward(self, *tensors: Tensor | None) -> None:
        self.saved_tensors = tensors

    def set_materialize_grads(self, value: bool) -> None:
        pass


def _out(t: Tensor | None, like: Tensor) -> Tensor:
    """An output of an operator: the tensor (contiguous), or an empty placeholder for None."""
    return like.new_empty(0) if t is None else t.contiguous()


def _grads_out(
    grads: Sequence[Tensor | None], tensors: Sequence[Tensor | None], needs: Sequence[bool]
) -> tuple[Tensor, ...]:
    """The backward operator's outputs: the gradient of each tensor input that needs one (zeros
    where the body has none), an empty placeholder for the others (an input that needs one is given)."""
    ref = next(t for t in tensors if t is not None)
    given = cast("Sequence[Tensor]", tensors)  # each one that needs a gradient is given
    return tuple(
        (g.contiguous() if g is not None else t.new_zeros(t.shape)) if n else ref.new_empty(0)
        for g, t, n in zip(grads, given, needs)
    )


def _grads_fake(tensors: Sequence[Tensor | None], needs: Sequence[bool]) -> tuple[Tensor, ...]:
    ref = next(t for t in tensors if t is not None)
    given = cast("Sequence[Tensor]", tensors)  # each one that needs a gradient is given
    return tuple(t.new_empty(t.shape) if n else ref.new_empty(0) for t, n in zip(given, needs))


_R = TypeVar("_R")


def autocast_off(kernel: Callable[..., _R]) -> Callable[..., _R]:
    """The kernels compute in their inputs' dtype: autocast is switched off inside them (it is
    on in the caller's thread e.g. when a backward runs inside an autocast region). The context
    is entered only when autocast is on: entering it costs about 10 us, twice per layer call."""

    @functools.wraps(kernel)
    def run(*args: Any) -> _R:
        device = next(a for a in args if isinstance(a, Tensor)).device.type
        if not torch.is_autocast_enabled(device):
            return kernel(*args)
        with torch.autocast(device, enabled=False):
            return kernel(*args)

    return run


_BODIES: dict["CustomOpDef", Callable[..., Any]] = {}
_PLAIN = (Tensor, torch.nn.Parameter)


def kernel_op(name: str, **kwargs: Any) -> Callable[[Callable[..., object]], "CustomOpDef"]:
    """``torch.library.custom_op(name, mutates_args=())`` over a kernel body (autocast off
    inside); the body is also kept for :func:`invoke`."""

    def wrap(kernel: Callable[..., object]) -> "CustomOpDef":
        body = autocast_off(kernel)
        op = torch.library.custom_op(name, mutates_args=(), **kwargs)(body)
        _BODIES[op] = body
        return op

    return wrap


def invoke(op: "CustomOpDef", *args: Any) -> Any:
    """Call a kernel operator from its autograd.Function (forward or backward). In eager mode
    (nothing compiling, exporting or tracing; plain tensors) the body runs directly: the custom
    operator's Python layer (schema binding, redispatch, aliasing checks) adds nothing there and
    cost about 0.3 ms per layer call, forward and backward together, at the smallest shapes (a
    third of a whole call there). Else the operator, which tracers see as one opaque node."""
    if torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.jit.is_tracing():
        return op(*args)
    if any(isinstance(a, Tensor) and type(a) not in _PLAIN for a in args):  # fake / functional / subclasses
        return op(*args)
    return _BODIES[op](*args)


def _differentiable(
    reference: Callable[..., Sequence[Tensor | None]],
    tensors: Sequence[Tensor | None],
    grads: Sequence[Tensor | None],
    needs: Sequence[bool],
) -> list[Tensor | None]:
    """Gradients of ``reference(*tensors)`` with respect to the tensors that need them, as a
    differentiable function of everything (the double-backward path)."""
    wrt = [i for i, n in enumerate(needs) if n]
    device = next(t for t in tensors if t is not None).device.type
    with torch.enable_grad(), torch.autocast(device, enabled=False):
        outs = reference(*tensors)
    pairs = [(o, g) for o, g in zip(outs, grads) if o is not None and g is not None and o.requires_grad]
    res: list[Tensor | None] = [None] * len(tensors)
    if pairs and wrt:
        got = torch.autograd.grad(
            [o for o, _ in pairs],
            [cast(Tensor, tensors[i]) for i in wrt],
            [g for _, g in pairs],
            create_graph=True,
            allow_unused=True,
        )
        for i, g in zip(wrt, got):
            res[i] = g
    return res


_transforms_active: Callable[[], bool] | None
try:  # what Function.apply itself calls (torch >= 2.1); another torch: Function.apply alone
    from torch._C import _are_functorch_transforms_active as _transforms_active
    from torch._functorch.utils import unwrap_dead_wrappers
except ImportError:  # pragma: no cover
    _transforms_active = None


def call(function: type[torch.autograd.Function], op: "CustomOpDef", args: tuple) -> Any:
    """The operator with autograd: a traced TorchScript graph records the operator itself
    (autograd from register_autograd, serializable); everything else goes through the
    autograd.Function (torch.func, compile).

    In eager mode without torch.func transforms this takes the path ``Function.apply`` takes
    there, less its first step: binding the arguments to ``forward``'s signature with
    ``inspect.signature`` at every call, for defaults our forwards (``*args``) do not have. That
    step cost 25-50 us a layer call (T = 1, batch 16, hidden 32: the autograd call 100-124 us
    against 70-76 us), a quarter of ``torch.nn.LSTM``'s whole forward at that size."""
    if torch.jit.is_tracing():
        return op(*args)
    if _transforms_active is None or torch.compiler.is_compiling() or _transforms_active():
        return function.apply(*args)
    return super(torch.autograd.Function, function).apply(*unwrap_dead_wrappers(args))  # type: ignore[misc]


# ================================================================ fused gated recurrence
# tensor inputs, in order; the first _FUSED_GRADS of them get gradients
_FUSED_TENSORS = (
    "e",
    "x",
    "w_ih",
    "b_ih",
    "bias_e",
    "h0",
    "c0",
    "p0",
    "v0",
    "m0",
    "w_hh",
    "b_hn",
    "w_hr",
    "alpha",
    "beta_k",
    "valid",
    "last",
)
_FUSED_GRADS = 13
_T = Tensor | None
# Operators' outputs, a fixed number of tensors each, spelled out for the type checker (to the
# operator's schema the same annotation as ``tuple[(Tensor,) * n]``); 13: _FUSED_GRADS
_Tensors9 = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]
_Tensors12 = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]
_Tensors13 = tuple[
    Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor
]


@kernel_op("momentumrnn::fused_recurrence")
def _fused_op(
    host: str,
    nonlinearity: str,
    kind: str,
    mu: float,
    epsilon: float,
    beta: float,
    e: _T,
    x: _T,
    w_ih: _T,
    b_ih: _T,
    bias_e: _T,
    h0: Tensor,
    c0: _T,
    p0: _T,
    v0: _T,
    m0: _T,
    w_hh: Tensor,
    b_hn: _T,
    w_hr: _T,
    alpha: _T,
    beta_k: _T,
    valid: _T,
    last: _T,
) -> _Tensors9:
    """``(hs, cs, ps, v_last, m_last, acts, rn, starts_v, starts_m)``; see :func:`fused_recurrence`.
    ``acts``, ``rn`` (GRU) and ``starts_v`` / ``starts_m`` ``(blocks, B, G)`` (Adam / RMSProp: the
    states entering each block) are for the backward."""
    ctx = _Ctx()
    spec = DriveSpec(kind, mu=mu, epsilon=epsilon, beta=beta)
    outs = FusedRecurrence.forward(
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
        beta_k,
        valid,
        last,
    )
    acts, rn = ctx.saved_tensors[10], ctx.saved_tensors[12]
    starts_v, starts_m = getattr(ctx, "starts", (None, None))
    return cast(_Tensors9, tuple(_out(t, h0) for t in (*outs, acts, rn, starts_v, starts_m)))


@_fused_op.register_fake
def _(
    host: str,
    nonlinearity: str,
    kind: str,
    mu: float,
    epsilon: float,
    beta: float,
    e: _T,
    x: _T,
    w_ih: _T,
    b_ih: _T,
    bias_e: _T,
    h0: Tensor,
    c0: _T,
    p0: _T,
    v0: _T,
    m0: _T,
    w_hh: Tensor,
    b_hn: _T,
    w_hr: _T,
    alpha: _T,
    beta_k: _T,
    valid: _T,
    last: _T,
) -> _Tensors9:
    spec = DriveSpec(kind, mu=mu, epsilon=epsilon, beta=beta)
    normalized = spec.mode == "normalized"
    x = cast(Tensor, x)  # given where read below: without a drive e, and for a normalized one
    T, B = (e.shape[0], e.shape[1]) if e is not None else (x.shape[0], x.shape[1])
    G, P = w_hh.shape  # P: the width of h; H: the cell's (they differ with a projection w_hr)
    H = w_hr.shape[1] if w_hr is not None else P

    def new(use: bool, *shape: int) -> Tensor:
        return h0.new_empty(shape if use else (0,))

    nb = -(-T // normalized_block_size(B, G, x.element_size())) if normalized else 0
    return (
        new(True, T, B, P),
        new(host == "lstm", T, B, H),
        new(alpha is not None, T, B, G),
        new(normalized and spec.velocity, B, G),
        new(normalized, B, G),
        new(host != "rnn", T, B, G),
        new(host == "gru", T, B, H),
        new(normalized and spec.velocity, nb, B, G),
        new(normalized, nb, B, G),
    )


@kernel_op("momentumrnn::fused_recurrence_backward")
def _fused_backward_op(
    host: str,
    nonlinearity: str,
    kind: str,
    mu: float,
    epsilon: float,
    beta: float,
    e: _T,
    x: _T,
    w_ih: _T,
    b_ih: _T,
    bias_e: _T,
    h0: Tensor,
    c0: _T,
    p0: _T,
    v0: _T,
    m0: _T,
    w_hh: Tensor,
    b_hn: _T,
    w_hr: _T,
    alpha: _T,
    beta_k: _T,
    valid: _T,
    last: _T,
    hs: Tensor,
    cs: Tensor,
    acts: Tensor,
    rn: Tensor,
    starts_v: Tensor,
    starts_m: Tensor,
    d_hs: _T,
    d_cs: _T,
    d_ps: _T,
    d_v_last: _T,
    d_m_last: _T,
    needs: list[bool],
) -> _Tensors13:
    """The gradients of ``e .. w_hr`` (``needs``) from those of ``hs, cs, ps, v_last, m_last``."""
    spec = DriveSpec(kind, mu=mu, epsilon=epsilon, beta=beta)
    ctx = _Ctx(
        host=host,
        nonlinearity=nonlinearity,
        lookahead=alpha is not None,
        spec=spec,
        has_b_ih=b_ih is not None,
        needs_input_grad=(False,) * 3 + tuple(needs),
    )
    ctx.saved_tensors = (
        x,
        w_ih,
        b_ih,
        h0,
        c0,
        v0,
        m0,
        w_hh,
        w_hr,
        hs,
        acts if host != "rnn" else None,
        cs if host == "lstm" else None,
        rn if host == "gru" else None,
        alpha,
        beta_k,
        valid,
        last,
    )
    if spec.mode == "normalized":
        ctx.blocked = _BlockedNormalizedDrive(spec, x, w_ih, b_ih, bias_e)
        ctx.starts = (starts_v if spec.velocity else None, starts_m)
    grads = FusedRecurrence.backward(ctx, d_hs, d_cs, d_ps, d_v_last, d_m_last)[3 : 3 + _FUSED_GRADS]
    inputs = (e, x, w_ih, b_ih, bias_e, h0, c0, p0, v0, m0, w_hh, b_hn, w_hr)
    return cast(_Tensors13, _grads_out(grads, inputs, needs))


@_fused_backward_op.register_fake
def _(
    host: str,
    nonlinearity: str,
    kind: str,
    mu: float,
    epsilon: float,
    beta: float,
    e: _T,
    x: _T,
    w_ih: _T,
    b_ih: _T,
    bias_e: _T,
    h0: Tensor,
    c0: _T,
    p0: _T,
    v0: _T,
    m0: _T,
    w_hh: Tensor,
    b_hn: _T,
    w_hr: _T,
    alpha: _T,
    beta_k: _T,
    valid: _T,
    last: _T,
    hs: Tensor,
    cs: Tensor,
    acts: Tensor,
    rn: Tensor,
    starts_v: Tensor,
    starts_m: Tensor,
    d_hs: _T,
    d_cs: _T,
    d_ps: _T,
    d_v_last: _T,
    d_m_last: _T,
    needs: list[bool],
) -> tuple[Tensor, ...]:
    return _grads_fake((e, x, w_ih, b_ih, bias_e, h0, c0, p0, v0, m0, w_hh, b_hn, w_hr), needs)


def _fused_setup(ctx: Any, inputs: tuple, output: tuple) -> None:
    ctx.scalars = inputs[:6]
    hs, cs, _ps, _v_last, _m_last, acts, rn, starts_v, starts_m = output
    ctx.set_materialize_grads(False)
    ctx.mark_non_differentiable(acts, rn, starts_v, starts_m)
    ctx.save_for_backward(*inputs[6:], hs, cs, acts, rn, starts_v, starts_m)


def _fused_backward(
    ctx: Any, d_hs: _T, d_cs: _T, d_ps: _T, d_v_last: _T, d_m_last: _T, *_: Tensor | None
) -> tuple[Tensor | None, ...]:
    saved = ctx.saved_tensors
    tensors, kept = saved[: len(_FUSED_TENSORS)], saved[len(_FUSED_TENSORS) :]
    needs = [bool(n) and t is not None for n, t in zip(ctx.needs_input_grad[6 : 6 + _FUSED_GRADS], tensors)]
    needs += [False] * (len(_FUSED_TENSORS) - _FUSED_GRADS)
    grads = (d_hs, d_cs, d_ps, d_v_last, d_m_last)
    if not any(needs) or all(g is None for g in grads):
        return (None,) * (6 + len(_FUSED_TENSORS))
    if torch.is_grad_enabled():
        scalars = ctx.scalars
        res = _differentiable(lambda *ts: literal.fused_reference(*scalars, *ts), tensors, grads, needs)
        return (None,) * 6 + tuple(res)
    out = invoke(_fused_backward_op, *ctx.scalars, *tensors, *kept, *grads, needs[:_FUSED_GRADS])
    res = [g if n else None for g, n in zip(out, needs)]
    return (None,) * 6 + tuple(res) + (None,) * (len(_FUSED_TENSORS) - _FUSED_GRADS)


_fused_op.register_autograd(_fused_backward, setup_context=_fused_setup)


class _FusedFunction(torch.autograd.Function):
    @staticmethod
    def forward(*args: Any) -> Any:
        return invoke(_fused_op, *args)

    setup_context = staticmethod(_fused_setup)
    backward = staticmethod(_fused_backward)


def fused_recurrence(
    host: str,
    h0: Tensor,
    w_hh: Tensor,
    *,
    e: Tensor | None = None,
    spec: DriveSpec | None = None,
    x: Tensor | None = None,
    w_ih: Tensor | None = None,
    b_ih: Tensor | None = None,
    bias_e: Tensor | None = None,
    v0: Tensor | None = None,
    m0: Tensor | None = None,
    c0: Tensor | None = None,
    b_hn: Tensor | None = None,
    w_hr: Tensor | None = None,
    nonlinearity: str = "tanh",
    alpha: Tensor | None = None,
    beta: Tensor | None = None,
    p0: Tensor | None = None,
    valid: Tensor | None = None,
    last: Tensor | None = None,
) -> tuple[Tensor, Any, Tensor | None, Tensor | None, Tensor | None]:
    """Run the fused recurrence (``momentumrnn::fused_recurrence``). Either ``e`` ``(T, B, G*H)``
    is the precomputed drive (``spec`` None) or ``spec`` says how to compute it in the loop from
    ``x`` ``(T, B, I)``, ``w_ih``, ``b_ih`` and ``bias_e`` ``(G*H,)``, starting from ``v0`` / ``m0``.

    Returns ``(hs, cs, ps, v, m)``: hidden states ``(T, B, H)``, LSTM cell states, the Nesterov
    ``p`` sequence and the Adam / RMSProp final states ``v`` / ``m`` ``(B, G*H)`` at each sequence's
    last step ``last`` (``(B,)``, default ``T - 1``); ``None`` where unused.
    ``alpha``/``beta`` ``(T, B', 1)`` switch on the Nesterov combination with initial ``p0``.
    ``w_hr`` ``(P, H)`` (LSTM): the projection ``h_t = (o_t tanh(c_t)) W_hr^T``; ``h`` is then
    ``P`` wide (``h0``, ``hs``, ``w_hh`` ``(G, P)``) and ``c`` ``H`` wide.
    ``valid`` ``(T, B, 1)`` marks real (unpadded) steps.
    """
    spec = spec or DriveSpec("given")
    args = (
        host,
        nonlinearity,
        spec.kind,
        float(spec.mu),
        float(spec.epsilon),
        float(spec.beta),
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
    )
    hs, cs, ps, v, m = call(_FusedFunction, _fused_op, args)[:5]
    normalized = spec.mode == "normalized"
    return (
        hs,
        cs if host == "lstm" else None,
        ps if alpha is not None else None,
        v if normalized and spec.velocity else None,
        m if normalized else None,
    )


# ================================================================ modReLU recurrence
# tensor inputs: h0, W, bias, d, xs, a, pv, v0, qs, c, pm, m0 (the bool ``paired`` sits after bias)
