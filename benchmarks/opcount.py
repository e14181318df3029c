"""Operator calls per time step: a CPU-measurable proxy for kernel launches on a GPU.

Every ATen operator that Python (or autograd) dispatches is counted with a ``TorchDispatchMode``
(views, ``detach``, ``empty`` and other metadata-only calls excluded: they launch nothing), over a
forward + backward at two sequence lengths; the difference divided by the difference in length is
the cost of one more step (what stays constant per call, e.g. one GEMM over all steps, drops out).
A registered operator (``momentumrnn::gated_loop``, ``momentumrnn::lookahead_loop``, ``aten::lstm``)
counts once however many steps it runs inside: its per-step count is 0 from the caller's side.
``inner_counts`` counts inside the Python implementations of those operators (what a GPU executes
per step inside a captured CUDA graph; for the C++ loop, its structure: 1 GEMM + 1 fused pass).
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_FREE = (
    "empty",
    "new_empty",
    "empty_like",
    "detach",
    "alias",
    "lift_fresh",
    "_to_copy.default_noop",
    "set_",
    "resize_",
    "_local_scalar_dense",
    "is_same_size",
    "sym_",
)


class _Count(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func).split(".", 1)[1] if "." in str(func) else str(func)
        if not (getattr(func, "is_view", False) or name.startswith(_FREE)):
            self.n += 1
        return func(*args, **(kwargs or {}))


def count_call(fn):
    """``(forward ops, backward ops)`` of ``fn() -> loss``."""
    with _Count() as fwd:
        loss = fn()
    with _Count() as bwd:
        loss.backward()
    return fwd.n, bwd.n


def per_step(make_model, B: int, I: int, T1: int = 32, T2: int = 96, dtype=torch.float32, device="cpu"):
    """``(forward, backward)`` operator calls per time step of ``make_model()`` at batch ``B``."""
    counts = []
    for T in (T1, T2):
        model = make_model()
        x = torch.randn(T, B, I, dtype=dtype, device=device)

        def fn(model=model, x=x):
            out, _ = model(x)
            return out.sum()

        fn().backward()  # warm-up (lazy initialisation, builds)
        counts.append(count_call(fn))
    return tuple((b - a) / (T2 - T1) for a, b in zip(*counts))


def inner_counts(host: str, B: int, I: int, H: int, T1: int = 32, T2: int = 96):
    """Per-step operator calls inside the graph loop's forward and backward (the kernels a captured
    CUDA graph replays per step)."""
    from momentumrnn.backends import graph_loop
    from momentumrnn.backends.loop_ops import HOST_CODES

    code = HOST_CODES[(host, "tanh" if host == "rnn" else None)]
    G = {"rnn": 1, "lstm": 4, "gru": 3}[host] * H
    res = []
    for T in (T1, T2):
        x = torch.randn(T, B, I)
        w_ih, w_hh, bias = torch.randn(G, I), torch.randn(G, H), torch.randn(G)
        h0, p0 = torch.zeros(B, H), torch.zeros(B, G)
        c0 = torch.zeros(B, H) if host == "lstm" else None
        b_hn = torch.zeros(H) if host == "gru" else None
        beta = torch.rand(T, B, 1)
        args = (x, w_ih, bias, bias, w_hh, b_hn, h0, c0, p0, 1 + beta, beta, None)
        with _Count() as f:
            hs, cs, _, A, tc, rn = graph_loop._forward(*args, host=code, eps=1.0)
        with _Count() as b:
            graph_loop._backward(
                x,
                w_ih,
                bias,
                bias,
                w_hh,
                b_hn,
                h0,
                c0,
                1 + beta,
                beta,
                None,
                hs,
                cs,
                A,
                tc,
                rn,
                torch.ones_like(hs),
                None,
                None,
                host=code,
                eps=1.0,
                need_x=True,
            )
        res.append((f.n, b.n))
    return tuple((b - a) / (T2 - T1) for a, b in zip(*res))
