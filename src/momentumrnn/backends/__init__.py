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

Three situations replace the table's choice, all decided here:

* while torch.compile traces a layer (dynamo; not torch.export, not torch.jit.trace),
  :data:`DISPATCH_COMPILING` overrides :data:`DISPATCH`: the native RNN kernels do not compile.
  On CPU their oneDNN operator (``aten.mkldnn_rnn_layer``) fails inside AOTAutograd ("expected
  Tensor() for op", or a ``None`` among the saved tensors); ``torch.nn.LSTM`` fails the same way
  with ``torch._dynamo.config.allow_rnn = True`` and runs under torch.compile only because dynamo
  graph-breaks around it (pytorch/pytorch#158007; the fix, pytorch/pytorch#185163, is not in
  torch 2.13). On CUDA, that fix notes, the compiled path would decompose cuDNN's kernel into
  per-step cell operations. So the gated trivial and linear drives (and CUDA's normalized drive,
  whose ``precomputed_native`` ends in cuDNN's kernel) run on the fused operator, one opaque node
  in the graph (same results to rounding);
* while ``torch.onnx.export`` traces (the torch.export-based exporter, torch's default;
  :func:`momentumrnn.exporting.onnx_exporting`), :data:`DISPATCH_ONNX` replaces :data:`DISPATCH`:
  every family and drive runs on ``scan``, the literal step as the body of torch's scan operator.
  The exporter translates it into one ONNX ``Scan`` of standard operations, so the exported model
  keeps a dynamic sequence length, where the hand-written kernels are custom operators without an
  ONNX translation and the native kernels fix the length (``torch.nn.LSTM``'s export does; the
  plain layers forced to ``native`` export as it does: ONNX's own ``LSTM`` / ``GRU`` / ``RNN``
  operator, faster on long sequences of little work per step, docs/benchmarks.md). A forced
  backend outside :data:`ONNX_EXPORTABLE` raises a ``ValueError`` there;
* a backend whose capability probe fails for the layer and input is replaced by its
  :data:`FALLBACK`: a device and dtype its kernel lacks (e.g. a CPU whose oneDNN has no bfloat16
  RNN; probed once per host, device type and dtype, see
  :func:`!momentumrnn.backends.native.capable`), or an LSTM with projections (``proj_size > 0``) on
  a backend without them (:attr:`Backend.projections`: the C++ loop and the lookahead graph loop
  have none; their Python twin ``fused`` runs the same equations with the projection), or the C++
  loop where it cannot run (:func:`!momentumrnn.backends.compiled.capable`: no compiler, a learned
  ``mu`` / ``epsilon``, ...; for the linear drive also a step its threads would share by panels
  of units, or a team splitting the batch at ``H > 128``, where the native kernel's threading is
  faster), by drive: the linear drive on
  ``filtered_native``, the others on ``fused``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, NamedTuple, cast

import torch
from torch import Tensor

from .. import exporting
from . import compiled, fused, graph_loop, modrelu, native, precomputed, scan, stepwise

if TYPE_CHECKING:
    from .._typing import Hidden, HyperParameters, Layer, StepResult
    from ..lengths import SeqInfo
    from ..schemes import MomentumState

__all__ = [
    "Backend",
    "BACKENDS",
    "DISPATCH",
    "DISPATCH_COMPILING",
    "DISPATCH_ONNX",
    "ONNX_EXPORTABLE",
    "FALLBACK",
    "DRIVES",
    "drive_of",
    "select",
    "choose",
    "run",
    "force",
    "compiling",
]

#: the drive shapes of the scheme table, the second key of DISPATCH
DRIVES = ("trivial", "linear", "normalized", "lookahead")
_ALL = frozenset(DRIVES)


class Backend(NamedTuple):
    """``run(layer, params, x, seq, hidden0, mom0, hp) -> (out, hidden_final, momentum)`` for
    one direction (``x`` ``(T, N, I)`` in time order, states in the internal form)."""

    run: Callable
    families: frozenset
    drives: frozenset
    summary: str
    #: whether it runs an LSTM with projections (``proj_size > 0``, ``h_t = W_hr (o_t tanh(c_t))``)
    projections: bool = True


#: backend name -> Backend (what it runs: host families and drives)
BACKENDS = {
    "native": Backend(
        native.run_native, frozenset({"gated"}), frozenset({"trivial"}), "the torch.nn kernel itself (oneDNN / cuDNN)"
    ),
    "filtered_native": Backend(
        native.run_filtered,
        frozenset({"gated"}),
        frozenset({"trivial", "linear"}),
        "the torch.nn kernel on the filtered input [filter(x), filter(1)]",
    ),
    "fused": Backend(fused.run, frozenset({"gated"}), _ALL, "fused per-step recurrence with a hand-written backward"),
    "compiled_loop": Backend(
        compiled.run,
        frozenset({"gated"}),
        frozenset({"linear", "normalized", "lookahead"}),
        "the fused recurrence as a C++ loop built at first use (falls back to fused)",
        projections=False,
    ),
    "precomputed_native": Backend(
        precomputed.run,
        frozenset({"gated"}),
        frozenset({"trivial", "linear", "normalized"}),
        "the drive for the whole sequence by the filters, then the torch.nn kernel with an identity input map",
    ),
    "graph_loop": Backend(
        graph_loop.run,
        frozenset({"gated"}),
        frozenset({"lookahead"}),
        "the lookahead loop in few operations per step, captured into CUDA graphs on a GPU",
        projections=False,
    ),
    "modrelu": Backend(
        modrelu.run,
        frozenset({"modrelu"}),
        _ALL,
        "modReLU recurrence with a hand-written backward, drive formed block-wise",
    ),
    "stepwise": Backend(
        stepwise.run,
        frozenset({"gated", "modrelu"}),
        _ALL,
        "the literal one-step update in a Python loop, differentiated by autograd",
    ),
    "scan": Backend(
        scan.run,
        frozenset({"gated", "modrelu"}),
        _ALL,
        "the literal one-step update as the body of torch's scan operator (one traced step, "
        "a symbolic number of steps: an ONNX Scan)",
    ),
}

#: (host family, drive, device type) -> backend name; device ``"*"`` matches any device
DISPATCH = {
    ("gated", "trivial", "*"): "native",
    ("gated", "linear", "*"): "filtered_native",
    ("gated", "normalized", "*"): "fused",
    ("gated", "lookahead", "*"): "fused",
    ("gated", "linear", "cpu"): "compiled_loop",
    ("gated", "normalized", "cpu"): "compiled_loop",
    ("gated", "lookahead", "cpu"): "compiled_loop",
    ("gated", "normalized", "cuda"): "precomputed_native",
    ("gated", "lookahead", "cuda"): "graph_loop",
    ("modrelu", "trivial", "*"): "modrelu",
    ("modrelu", "linear", "*"): "modrelu",
    ("modrelu", "normalized", "*"): "modrelu",
    ("modrelu", "lookahead", "*"): "modrelu",
}

#: overrides of DISPATCH while torch.compile (dynamo) traces; see the module docstring
DISPATCH_COMPILING = {
    ("gated", "trivial", "*"): "fused",
    ("gated", "linear", "*"): "fused",
    ("gated", "linear", "cpu"): "compiled_loop",  # the table's CPU choice: an operator, it compiles
    ("gated", "normalized", "cuda"): "fused",  # precomputed_native ends in cuDNN's kernel
}


def _no_projection(layer: Layer, x: Tensor) -> bool:
    """The probe of the backends without projections (:attr:`Backend.projections` False)."""
    return not getattr(layer, "proj_size", 0)


#: replaces DISPATCH while torch.onnx.export traces (every family and drive, every device); see
#: the module docstring
DISPATCH_ONNX = {(family, drive, "*"): "scan" for family in ("gated", "modrelu") for drive in DRIVES}

#: the backends whose operations torch's ONNX exporter translates (native: ONNX's LSTM / GRU / RNN
#: operator, the length fixed; the others run custom operators, or, for filtered_native, a product
#: over blocks of steps that the exporter does not translate)
ONNX_EXPORTABLE = frozenset({"scan", "stepwise", "native"})

#: backend -> (capability probe ``capable(layer, x) -> bool``, replacement when it fails: a
#: backend, or ``{drive: backend}`` with ``"*"`` for the other drives); a replacement's own probe
#: is checked in turn
FALLBACK: dict[str, tuple[Callable[[Layer, Tensor], bool], str | dict[str, str]]] = {
    "native": (native.capable, "fused"),
    "filtered_native": (native.capable, "fused"),
    "precomputed_native": (native.capable, "fused"),
    # the C++ loop: CPU, float32 / float64, constant mu / epsilon, a compiler, no projection. Else
    # the linear drive runs on the native kernel (the filters differentiate a learnable mu; one
    # kernel call), the others on the Python loop (fused; it has the projection)
    "compiled_loop": (compiled.capable, {"linear": "filtered_native", "*": "fused"}),
    # no projection in the graph loop: the Python loop (fused) has it
    "graph_loop": (_no_projection, "fused"),
    "scan": (scan.available, "stepwise"),
}

#: the backends that end in a native RNN kernel (which does not compile; see the module docstring)
_NATIVE_KERNEL = frozenset({"native", "filtered_native", "precomputed_native"})

_forced: str | None = None


def compiling() -> bool:
    """Whether torch.compile's dynamo is tracing (torch.export and jit.trace are not)."""
    return torch.compiler.is_compiling() and not torch.compiler.is_exporting()


def drive_of(layer: Layer, mom0: MomentumState, hp: HyperParameters) -> str:
    """The drive class of a layer's scheme for one call (see the module docstring)."""
    spec = layer.scheme.spec
    learned = any(isinstance(v, Tensor) for v in hp)
    if layer.scheme.trivial and not learned and mom0.v is None:
        return "trivial"
    if spec.lookahead:
        return "lookahead"
    return "normalized" if spec.normalized else "linear"


def select(
    family: str,
    drive: str,
    device_type: str,
    forced: str | None = None,
    under_compile: bool = False,
    projection: bool = False,
    onnx_export: bool = False,
) -> str:
    """The backend for a family, drive and device type (``forced`` if given, checked);
    ``under_compile``: while torch.compile traces (:data:`DISPATCH_COMPILING`); ``projection``:
    an LSTM with projections (checked for a forced backend; the table's choice goes through
    :data:`FALLBACK` in :func:`run`); ``onnx_export``: while torch.onnx.export traces
    (:data:`DISPATCH_ONNX`)."""
    if forced is not None:
        if forced not in BACKENDS:
            raise ValueError(f"unknown backend {forced!r}; expected one of {', '.join(BACKENDS)}")
        b = BACKENDS[forced]
        if family not in b.families or drive not in b.drives:
            able = [n for n, c in BACKENDS.items() if family in c.families and drive in c.drives]
            raise ValueError(
                f"backend {forced!r} cannot run a {drive} drive on a {family} host; use one of {', '.join(able)}"
            )
        if projection and not b.projections:
            able = [n for n, c in BACKENDS.items() if family in c.families and drive in c.drives and c.projections]
            raise ValueError(
                f"backend {forced!r} cannot run an LSTM with projections (proj_size > 0); use one of {', '.join(able)}"
            )
        if under_compile and forced in _NATIVE_KERNEL:
            replacement = select(family, drive, device_type, None, under_compile=True)
            raise ValueError(
                f"backend {forced!r} cannot run under torch.compile: the native RNN kernels do not "
                "compile (on CPU, aten.mkldnn_rnn_layer fails in AOTAutograd; torch.nn.LSTM too, when "
                "dynamo does not graph-break around it); leave the choice to the table "
                f"({replacement!r} under torch.compile) or run this layer eagerly"
            )
        if onnx_export and forced not in ONNX_EXPORTABLE:
            raise ValueError(
                f"backend {forced!r} cannot run under torch.onnx.export: its kernel has no ONNX "
                "translation; leave the choice to the table ('scan' under torch.onnx.export) or force "
                f"one of {', '.join(sorted(ONNX_EXPORTABLE))}"
            )
        return forced
    # (DISPATCH and DISPATCH_ONNX have an entry for every family and drive)
    if onnx_export:
        return cast(str, _lookup(DISPATCH_ONNX, family, drive, device_type))
    if under_compile:
        override = _lookup(DISPATCH_COMPILING, family, drive, device_type)
        if override is not None:
            return override
    return cast(str, _lookup(DISPATCH, family, drive, device_type))


def _lookup(table: dict, family: str, drive: str, device_type: str) -> str | None:
    return table.get((family, drive, device_type)) or table.get((family, drive, "*"))


def choose(layer: Layer, x: Tensor, mom0: MomentumState, hp: HyperParameters) -> str:
    """The name of the backend that runs one direction of ``layer`` on ``x`` (time-major) from
    momentum state ``mom0`` with hyper-parameters ``hp``: the forced one (checked), or the table's
    choice through :data:`FALLBACK`."""
    drive = drive_of(layer, mom0, hp)
    forced = layer.backend or _forced
    name = select(
        layer.family,
        drive,
        x.device.type,
        forced,
        compiling(),
        bool(getattr(layer, "proj_size", 0)),
        exporting.onnx_exporting(),
    )
    while forced is None and name in FALLBACK and not FALLBACK[name][0](layer, x):
        replacement = FALLBACK[name][1]
        name = replacement if isinstance(replacement, str) else replacement.get(drive, replacement["*"])
    return name


def run(
    layer: Layer, params: tuple, x: Tensor, seq: SeqInfo, hidden0: Hidden, mom0: MomentumState, hp: HyperParameters
) -> StepResult:
    """Run one direction of ``layer`` with the backend the table (or a forced one) picks."""
    return BACKENDS[choose(layer, x, mom0, hp)].run(layer, params, x, seq, hidden0, mom0, hp)


@contextlib.contextmanager
def force(name: str | None) -> Iterator[None]:
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
