"""The ``compiled_loop`` backend: a gated host's direction with a linear (heavy ball, scheduled
restart), normalized (Adam, RMSProp) or lookahead (Nesterov) drive on the C++ time loop
(:mod:`.loop_ops`, built at first use by :mod:`._build`): one GEMM and one fused, vectorized
element-wise pass per step, forward and backward, no Python per step.

Where the compiled loop does not apply (:func:`capable`: no compiler, see ``_build.status()``; a
device other than the CPU; a dtype other than float32 / float64; learnable ``mu`` / ``epsilon``,
whose drive needs autograd; an LSTM with projections; an empty batch; for the linear drive, a step
its threads would share by panels of units, or split by rows at ``H > 128``: :func:`team`) the
dispatch table's fallback (``backends.FALLBACK``) runs the direction elsewhere: the linear drive on the native
kernel (``filtered_native``), the others on the Python loop. Forced here anyway, it hands the
direction to the Python loop (:func:`momentumrnn.backends.fused.run`, the same equations).

The linear drive moved here from ``filtered_native`` (the native kernel on the filtered input):
one thread, forward + backward, in-process interleaved, ours / nn.LSTM, native kernel -> compiled
loop: heavy ball T = 64, B = 16 / 32, H = 32: 1.33 / 1.28 -> 1.06 / 1.10, B = 32, H = 64: 1.21
-> 1.09, T = 256: 1.09 -> 0.92; the restart schedule 1.22-1.37 -> 0.96-1.23 (glibc's default
allocator). Large shapes with freed memory kept (benchmarks/versus.py): smnist128 1.03 -> 1.04,
smnist256 1.01 -> 1.05, PTB 1.03 -> 0.99. The native kernel's LSTM costs 8 %
more with two input channels than with one (the filtered constant channel of the bias), and the
filter, the weight concatenations and their backward are a fixed cost per call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor

from ..lengths import at_last_step
from ..schemes import MomentumState
from . import _build, fused, schedules
from .loop_ops import GATES_OF, HOST_CODES, LINEAR, LOOKAHEAD, NORMALIZED, block_steps, call_gated_loop

if TYPE_CHECKING:
    from .._typing import GatedLayer, Hidden, HyperParameters, Layer, StepResult
    from ..lengths import SeqInfo
    from .native import GatedParams

__all__ = ["run", "applies"]

#: from this many input features on, the normalized loop keeps u = W_ih x + b_ih for the backward
#: (T * B * G floats) instead of recomputing it (a GEMM as large as the forward's input GEMM)
_KEEP_U_INPUTS = 16
#: up to this many bytes of them, the normalized loop keeps every step's m (and v) for the backward
#: instead of recomputing them from each block's checkpoint (the same arithmetic: bit-identical).
#: Adam, one thread, in-process interleaved, forward + backward / nn.LSTM's, recomputed -> kept:
#: T = 64, B = 32, H = 32 1.50 -> 1.33 (backward 1384 -> 1150 us), H = 64 1.22 -> 1.17; at 16 MB
#: (T = 256, B = 32, H = 64) no gain (the forward's writes of the larger arrays cost what the
#: backward saves), and the states would double the memory the layer keeps for its backward
_KEEP_STATES_BYTES = 8 << 20


def _same_dtype(layer: GatedLayer, x: Tensor) -> bool:
    return all(t.dtype == x.dtype for t in layer.parameters() if t.is_floating_point())


def applies(layer: GatedLayer, x: Tensor, hp: HyperParameters) -> bool:
    """Whether the compiled loop runs this direction (else: the Python loop)."""
    spec = layer.scheme.spec
    return (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and x.shape[1] > 0
        and _same_dtype(layer, x)
        and not any(isinstance(v, Tensor) for v in hp)
        and (spec.normalized or spec.lookahead or spec.velocity is not None)
        and _build.load() is not None
    )


def team(layer: GatedLayer, x: Tensor) -> str:
    """How the C++ loop runs this direction's steps (``team_for`` in ``csrc/panels.h``; a change
    there must follow here): ``"alone"`` (one thread; or while torch.compile traces, where the
    thread count is not traced), ``"rows"`` (a team of threads, each with its own rows of the batch:
    ``H <= 256``, at least 4 rows, about ``2^20`` multiply-adds a call) or ``"panels"`` (a team
    sharing each step by panels of units, a barrier every step: a step of ``B G (H + 32) >= 2^18``
    multiply-adds otherwise)."""
    T, B, H = x.shape[0], x.shape[1], layer.hidden_size
    G = GATES_OF[HOST_CODES[(layer.host, layer.nonlinearity if layer.host == "rnn" else None)]] * H
    if torch.compiler.is_compiling() or torch.get_num_threads() == 1:
        return "alone"
    work = B * G * (H + 32)
    if H <= 256 and B >= 4:
        return "rows" if T * work >= (1 << 20) else "alone"
    return "panels" if work >= (1 << 18) else "alone"


def capable(layer: Layer, x: Tensor) -> bool:
    """The dispatch table's probe (``backends.FALLBACK``): whether the compiled loop runs this
    layer on ``x``: :func:`applies` with constant ``mu`` / ``epsilon`` (not learned), and no LSTM
    projection (``proj_size``). The linear drive (heavy ball, restart) where the loop runs alone,
    or in a team of rows (:func:`team`) at ``H <= 128``; elsewhere the native kernel's own
    threading, which it replaces, was faster. Measured (two threads, ours / nn.LSTM, native kernel
    -> C++ loop): in a team of panels smnist128 1.04 -> 1.51, smnist256 1.00 -> 1.12, PTB 1.06 ->
    1.08, small models at T = 64, B = 32 1.24-1.33 -> 1.37-1.52; in a team of rows (versus.py)
    smnist128 1.00-1.08 -> 0.90-0.99, smnist256 0.96 -> 1.05-1.06 (as AVX2 1.01-1.02 -> 1.13-1.15),
    long (T = 20000, B = 8) 1.05-1.16 -> 0.81-0.86, small models (small.py) 0.91-1.26 -> 0.66-1.15.
    Alone, the loop gains (one thread, small models 1.05-1.36 -> 0.86-1.08)."""
    gated = cast("GatedLayer", layer)
    learned = getattr(gated, "learn_mu", False) or getattr(gated, "learn_epsilon", False)
    spec = gated.scheme.spec
    linear = not (spec.normalized or spec.lookahead)
    if learned or getattr(gated, "proj_size", 0) or not applies(gated, x, (0.0, 1.0)):
        return False
    if not linear:
        return True
    how = team(gated, x)
    return how == "alone" or (how == "rows" and gated.hidden_size <= 128)


def run(
    layer: GatedLayer,
    p: GatedParams,
    x: Tensor,
    seq: SeqInfo,
    hidden0: Hidden,
    mom0: MomentumState,
    hp: HyperParameters,
) -> StepResult:
    if not applies(layer, x, hp):
        return fused.run(layer, p, x, seq, hidden0, mom0, hp)
    mu, eps = hp
    T, B, _ = x.shape
    H, GH = layer.hidden_size, p.w_ih.shape[0]
    host, scheme = layer.host, layer.scheme
    spec = scheme.spec
    bias_e, b_hn = fused.split_hh_bias(p, host, H, x)
    alpha = beta_k = k = None
    mode = LOOKAHEAD if spec.lookahead else NORMALIZED if spec.normalized else LINEAR
    if spec.lookahead:
        alpha, beta_k, k = schedules.lookahead(scheme, T, mom0.step, x.dtype, x.device)
    elif mode == LINEAR and spec.velocity == "scheduled":  # mu_t of the restart schedule
        mu_k, k, _ = schedules.velocity(scheme, mu, T, mom0.step, x.dtype, x.device)
        alpha = mu_k.squeeze(2)
    code = HOST_CODES[(host, layer.nonlinearity if host == "rnn" else None)]
    velocity = spec.velocity is not None
    h0 = hidden0["h"] if hidden0["h"] is not None else x.new_zeros(B, H)
    c0 = hidden0.get("c") if host == "lstm" else None
    hs, cs, _, _, _, _, v_T, m_T, p_T, _ = call_gated_loop(
        x,
        p.w_ih,
        p.b_ih,
        bias_e,
        p.w_hh,
        b_hn,
        h0,
        c0,
        mom0.v if velocity else None,
        mom0.m if mode == NORMALIZED else None,
        mom0.p if mode == LOOKAHEAD else None,
        alpha,
        beta_k,
        seq.last,
        code,
        mode,
        velocity,
        float(mu) if velocity and alpha is None else 0.0,
        float(eps),
        float(scheme.beta),
        block_steps(T, B, GH, x.element_size()),
        x.shape[2] >= _KEEP_U_INPUTS,
        mode == NORMALIZED and (T + 1) * B * GH * x.element_size() * (2 if velocity else 1) <= _KEEP_STATES_BYTES,
    )
    finals = {"h": at_last_step(hs, seq.last)}
    if host == "lstm":
        finals["c"] = at_last_step(cs, seq.last)
    if mode == LOOKAHEAD:
        assert k is not None  # (the lookahead schedule above)
        mom = MomentumState(p=p_T, step=at_last_step(k.expand(T, B), seq.last).clone())
    elif mode == LINEAR:  # (counters of their own: k may be kept by schedules)
        mom = MomentumState(v=v_T, step=None if k is None else at_last_step(k.expand(T, B), seq.last).clone())
    else:
        mom = MomentumState(v=v_T if velocity else None, m=m_T)
    return hs, finals, mom
