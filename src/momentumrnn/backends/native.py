"""Gated hosts on ``torch.nn``'s own kernels (oneDNN on CPU, cuDNN on GPU).

* :func:`run_native`: a trivial drive (no momentum, heavy ball with ``mu = 0, epsilon = 1``) is
  the plain cell: the native kernel unchanged, bit-identical to ``torch.nn``.
* :func:`run_filtered`: a linear drive (heavy ball, scheduled-restart heavy ball) is a causal
  linear filter of the inputs, ``v_t = sum_k (prod a) epsilon (W_ih x_k + b_ih)``: ``W_ih``
  applied to the filtered input plus ``b_ih`` times a filtered constant channel. The native kernel
  runs on ``[filter(x), filter(1)]`` with input weights ``epsilon [W_ih, b_ih]`` and ``b_hh`` as
  its only bias. A carried momentum ``v_0`` adds ``pi_t v_0`` (``pi_t`` the product of the
  coefficients): exact, through extra input channels.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, cast

import torch
from torch import _VF, Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from ..filters import cumulative_decay, linear_filter
from ..lengths import at_last_step
from ..schemes import MomentumState
from . import schedules

if TYPE_CHECKING:
    from .._typing import GatedLayer, Hidden, HyperParameters, Layer, StepResult
    from ..lengths import SeqInfo

__all__ = ["GatedParams", "flat_weights", "native_call", "run_native", "run_filtered", "capable"]


class GatedParams(NamedTuple):
    """One layer and direction of a gated host (``torch.nn``'s names; biases may be None;
    ``w_hr``: the LSTM's projection ``(proj_size, hidden_size)``, None without one)."""

    w_ih: Tensor
    w_hh: Tensor
    b_ih: Tensor | None
    b_hh: Tensor | None
    w_hr: Tensor | None = None


#: a native RNN kernel of ``_VF`` (``lstm``, ``gru``, ``rnn_tanh``, ``rnn_relu``): ``(out, h_T[, c_T])``
_Kernel = Callable[..., tuple[Tensor, ...]]


class _Cell(Protocol):
    """What :func:`native_call` reads of a layer (a :class:`~momentumrnn._typing.GatedLayer`, or the
    stand-in of :func:`_probe`)."""

    host: str
    nonlinearity: str | None
    hidden_size: int
    training: bool


def flat_weights(p: GatedParams, w_ih: Tensor | None = None, b_ih: Tensor | None = None) -> list[Tensor]:
    """The weights of one direction in the native kernels' order, ``[w_ih, w_hh, (b_ih, b_hh), (w_hr)]``
    (torch.nn's ``_flat_weights``), with ``w_ih`` / ``b_ih`` replaced where given."""
    weights = [p.w_ih if w_ih is None else w_ih, p.w_hh]
    if p.b_hh is not None:
        # torch.nn's biases: both or neither
        weights += [cast(Tensor, p.b_ih) if b_ih is None else b_ih, p.b_hh]
    if p.w_hr is not None:
        weights.append(p.w_hr)
    return weights


def native_call(
    layer: _Cell,
    x: Tensor,
    lengths: Tensor | None,
    h0: Tensor | None,
    c0: Tensor | None,
    weights: list[Tensor],
) -> tuple[Tensor, Tensor, Any]:
    """One native single-layer, single-direction call on :func:`flat_weights`; returns
    ``(out, h_T, c_T)`` (``c_T`` the LSTM's, else None). An LSTM with projections (a fifth / third
    weight ``w_hr``) is told by the kernel from ``h0`` being narrower than ``c0`` (ATen's ``lstm``:
    ``has_projections``)."""
    has_biases = len(weights) in (4, 5)
    T, B, _ = x.shape
    H = layer.hidden_size
    if h0 is None:
        h0 = x.new_zeros(B, weights[1].shape[1])  # the width of h: W_hh's columns
    # the LSTM's kernel takes hx = (h, c), the others one tensor: called through one signature
    hx: Tensor | tuple[Tensor, ...]
    if layer.host == "lstm":
        hx = (h0.unsqueeze(0), (c0 if c0 is not None else x.new_zeros(B, H)).unsqueeze(0))
        fn = cast(_Kernel, _VF.lstm)
    else:
        hx = h0.unsqueeze(0)
        fn = cast(
            _Kernel,
            _VF.gru if layer.host == "gru" else (_VF.rnn_tanh if layer.nonlinearity == "tanh" else _VF.rnn_relu),
        )
    if lengths is None:
        res = fn(x, hx, weights, has_biases, 1, 0.0, layer.training, False, False)
        out, state = res[0], res[1:]
    else:
        packed = pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)
        # both set: enforce_sorted=False
        si, ui = cast(Tensor, packed.sorted_indices), cast(Tensor, packed.unsorted_indices)
        hx = tuple(t.index_select(1, si) for t in hx) if isinstance(hx, tuple) else hx.index_select(1, si)
        res = fn(packed.data, packed.batch_sizes, hx, weights, has_biases, 1, 0.0, layer.training, False)
        out = pad_packed_sequence(PackedSequence(res[0], packed.batch_sizes, si, ui), total_length=T)[0]
        state = tuple(t.index_select(1, ui) for t in res[1:])
    hT = state[0][0]
    cT = state[1][0] if layer.host == "lstm" else None
    return out, hT, cT


_CAPABLE: dict[tuple[str, str | None, str, torch.dtype], bool] = {}


def capable(layer: Layer, x: Tensor) -> bool:
    """Whether the native kernel of ``layer``'s host runs, forward and backward, on ``x``'s
    device and dtype. float32 / float64: always. Other dtypes (bfloat16, float16: oneDNN's RNN
    primitives depend on the CPU's instruction set) are probed once with a tiny call and the
    answer is kept; while torch.compile / torch.export / jit.trace trace, a dtype not probed yet
    counts as capable (no probe runs inside a trace)."""
    dtype = x.dtype
    if dtype in (torch.float32, torch.float64):
        return True
    gated = cast("GatedLayer", layer)  # the probe of the gated hosts' native backends (backends.FALLBACK)
    key = (gated.host, gated.nonlinearity, x.device.type, dtype)
    if key not in _CAPABLE:
        if torch.compiler.is_compiling() or torch.jit.is_tracing():
            return True
        _CAPABLE[key] = _probe(gated.host, gated.nonlinearity, x.device, dtype)
    return _CAPABLE[key]


def _probe(host: str, nonlinearity: str | None, device: torch.device, dtype: torch.dtype) -> bool:
    G = {"rnn": 1, "lstm": 4, "gru": 3}[host] * 2
    tiny = SimpleNamespace(host=host, nonlinearity=nonlinearity, hidden_size=2, training=True)
    try:
        with torch.enable_grad():
            x = torch.randn(3, 2, 2, device=device, dtype=dtype, requires_grad=True)
            weights = [
                torch.randn(*shape, device=device, dtype=dtype, requires_grad=True)
                for shape in ((G, 2), (G, 2), (G,), (G,))
            ]
            out = native_call(tiny, x, None, None, None, weights)[0]
            out.float().sum().backward()
        return bool(torch.isfinite(out).all()) and x.grad is not None
    except RuntimeError:
        return False


def _finals(layer: GatedLayer, hT: Tensor, cT: Tensor | None) -> dict:
    return {"h": hT, "c": cT} if layer.host == "lstm" else {"h": hT}


def run_native(
    layer: GatedLayer,
    p: GatedParams,
    x: Tensor,
    seq: SeqInfo,
    hidden0: Hidden,
    mom0: MomentumState,
    hp: HyperParameters,
) -> StepResult:
    """A trivial drive: the native kernel, and the momentum state of a plain cell (``v_t = u_t``,
    the restart counter running)."""
    out, hT, cT = native_call(layer, x, seq.lengths, hidden0["h"], hidden0.get("c"), flat_weights(p))
    fields = layer.scheme.state_fields
    v = step = None
    if "v" in fields:
        x_last = at_last_step(x, seq.last)
        v = torch.addmm(p.b_ih, x_last, p.w_ih.t()) if p.b_ih is not None else x_last @ p.w_ih.t()
    if "step" in fields:
        T, B = x.shape[:2]
        _, k = layer.scheme.schedule(T, mom0.step, x.dtype, x.device)
        step = at_last_step(k.expand(T, B), seq.last)
    return out, _finals(layer, hT, cT), MomentumState(v=v, step=step)


def run_filtered(
    layer: GatedLayer,
    p: GatedParams,
    x: Tensor,
    seq: SeqInfo,
    hidden0: Hidden,
    mom0: MomentumState,
    hp: HyperParameters,
) -> StepResult:
    """A linear drive: the native kernel on the filtered input."""
    mu, eps = hp
    T, B, _ = x.shape
    GH = p.w_ih.shape[0]
    coeff, k, system = schedules.velocity(layer.scheme, mu, T, mom0.step, x.dtype, x.device)
    # [x, 1] filtered by one call: the filter's fixed cost (some 25 operations forward, as many
    # backward) is most of its time at small sizes
    cols = [linear_filter(torch.cat([x, x.new_ones(T, B, 1)], 2) if p.b_ih is not None else x, coeff, None, system)]
    w_in = (torch.cat([p.w_ih, p.b_ih.unsqueeze(1)], 1) if p.b_ih is not None else p.w_ih) * eps
    v0 = mom0.v
    if v0 is not None:
        # v_t gains pi_t v0: one extra input channel per batch element (v0 as weights) or per
        # gate unit (v0 as input), whichever is fewer.
        pi = cumulative_decay(coeff, T)
        if B <= GH:
            cols.append(pi * torch.eye(B, dtype=x.dtype, device=x.device))
            w_in = torch.cat([w_in, v0.t()], 1)
        else:
            cols.append(pi * v0)
            w_in = torch.cat([w_in, torch.eye(GH, dtype=x.dtype, device=x.device)], 1)
    x_in = torch.cat(cols, 2) if len(cols) > 1 else cols[0]
    weights = flat_weights(p, w_in, torch.zeros_like(p.b_hh) if p.b_hh is not None else None)
    out, hT, cT = native_call(layer, x_in, seq.lengths, hidden0["h"], hidden0.get("c"), weights)
    v_T = at_last_step(x_in, seq.last) @ w_in.t()
    step = None
    if k is not None:  # (a tensor of its own: k may be kept by schedules)
        step = at_last_step(k.expand(T, B), seq.last).clone()
    return out, _finals(layer, hT, cT), MomentumState(v=v_T, step=step)
