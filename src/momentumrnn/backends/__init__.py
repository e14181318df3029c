"""Backends: how one direction of one layer is computed, chosen in one table.

A layer's host belongs to a *family* (``"gated"``: RNN / LSTM / GRU cells with ``torch.nn``'s
weights; ``"modrelu"``: ``h_t = modReLU(h_{t-1} B + d_t)`` with a structured ``B``), and its scheme,
with the values at hand, gives the *drive* (from the scheme table, never from the scheme's name):

* ``"trivial"``: the values make the scheme the plain cell (no momentum, or heavy ball with
  ``mu = 0, epsilon = 1``) and nothing is learned or carried;
* ``"linear"``: a causal linear filter of the inputs (heavy ball, scheduled-restart heavy ball);
* ``"normalized"``: a non-linear function of the inputs alone (Adam, RMSProp);
* ``"lookahead"``: depends on ``h_{t-1}`` too (Nesterov).

:data:`DISPATCH` maps ``(family, drive, device type)`` to a backend of :data:`BACKENDS`.
A backend can be forced per layer (``layer.backend = "stepwise"``) or for a block of code
(``with momentumrnn.backends.force("fused"): ...``), e.g. to test every path against the
reference; forcing one that cannot run a layer raises a ``ValueError`` that says which can.
"""

from __future__ import annotations

import contextlib
from typing import Callable, NamedTuple, Optional

from torch import Tensor

from . import compiled, fused, graph_loop, modrelu, native, precomputed, stepwise

__all__ = ["Backend", "BACKENDS", "DISPATCH", "DRIVES", "drive_of", "select", "run", "force"]

DRIVES = ("trivial", "linear", "normalized", "lookahead")
_ALL = frozenset(DRIVES)


class Backend(NamedTuple):
    """``run(layer, params, x, seq, hidden0, mom0, hp) -> (out, hidden_final, momentum)`` for
    one direction (``x`` ``(T, N, I)`` in time order, states in the internal form)."""

    run: Callable
    families: frozenset
    drives: frozenset
    summary: str


BACKENDS = {
    "native": Backend(native.run_native, frozenset({"gated"}), frozenset({"trivial"}),
                      "the torch.nn kernel itself (oneDNN / cuDNN)"),
    "filtered_native": Backend(native.run_filtered, frozenset({"gated"}), frozenset({"trivial", "linear"}),
                               "the torch.nn kernel on the filtered input [filter(x), filter(1)]"),
    "fused": Backend(fused.run, frozenset({"gated"}), _ALL,
                     "fused per-step recurrence with a hand-written backward"),
    "compiled_loop": Backend(compiled.run, frozenset({"gated"}), frozenset({"normalized", "lookahead"}),
                             "the fused recurrence as a C++ loop built at first use (falls back to fused)"),
    "precomputed_native": Backend(precomputed.run, frozenset({"gated"}), frozenset({"trivial", "linear", "normalized"}),
                                  "the drive for the whole sequence by the filters, then the torch.nn kernel "
                                  "with an identity input map"),
    "graph_loop": Backend(graph_loop.run, frozenset({"gated"}), frozenset({"lookahead"}),
                          "the lookahead loop in few operations per step, captured into CUDA graphs on a GPU"),
    "modrelu": Backend(modrelu.run, frozenset({"modrelu"}), _ALL,
                       "modReLU recurrence with a hand-written backward, drive formed block-wise"),
    "stepwise": Backend(stepwise.run, frozenset({"gated", "modrelu"}), _ALL,
                        "the literal one-step update in a Python loop, differentiated by autograd"),
}

#: (host family, drive, device type) -> backend name; device ``"*"`` matches any device
DISPATCH = {
    ("gated", "trivial", "*"): "native",
    ("gated", "linear", "*"): "filtered_native",
    ("gated", "normalized", "*"): "fused",
    ("gated", "lookahead", "*"): "fused",
    ("gated", "normalized", "cpu"): "compiled_loop",
    ("gated", "lookahead", "cpu"): "compiled_loop",
    ("gated", "normalized", "cuda"): "precomputed_native",
    ("gated", "lookahead", "cuda"): "graph_loop",
    ("modrelu", "trivial", "*"): "modrelu",
    ("modrelu", "linear", "*"): "modrelu",
    ("modrelu", "normalized", "*"): "modrelu",
    ("modrelu", "lookahead", "*"): "modrelu",
}

_forced: Optional[str] = None


def drive_of(layer, mom0, hp) -> str:
    """The drive class of a layer's scheme for one call (see the module docstring)."""
    spec = layer.scheme.spec
    learned = any(isinstance(v, Tensor) for v in hp)
    if layer.scheme.trivial and not learned and mom0.v is None:
        return "trivial"
    if spec.lookahead:
        return "lookahead"
    return "normalized" if spec.normalized else "linear"


def select(family: str, drive: str, device_type: str, forced: Optional[str] = None) -> str:
    """The backend for a family, drive and device type (``forced`` if given, checked)."""
    if forced is not None:
        if forced not in BACKENDS:
            raise ValueError(f"unknown backend {forced!r}; expected one of {', '.join(BACKENDS)}")
        b = BACKENDS[forced]
        if family not in b.families or drive not in b.drives:
            able = [n for n, c in BACKENDS.items() if family in c.families and drive in c.drives]
            raise ValueError(f"backend {forced!r} cannot run a {drive} drive on a {family} host; "
                             f"use one of {', '.join(able)}")
        return forced
    name = DISPATCH.get((family, drive, device_type)) or DISPATCH[(family, drive, "*")]
    return name


def run(layer, params, x, seq, hidden0, mom0, hp):
    """Run one direction of ``layer`` with the backend the table (or a forced one) picks."""
    drive = drive_of(layer, mom0, hp)
    name = select(layer.family, drive, x.device.type, layer.backend or _forced)
    return BACKENDS[name].run(layer, params, x, seq, hidden0, mom0, hp)


@contextlib.contextmanager
def force(name: Optional[str]):
    """Run every layer with backend ``name`` inside the block (``None``: the table's choice);
    a layer's own ``layer.backend`` still wins."""
    global _forced
    if name is not None and name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")
    before, _forced = _forced, name
    try:
        yield
    finally:
        _forced = before
