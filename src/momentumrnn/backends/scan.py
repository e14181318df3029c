"""The scan backend: the host's literal one-step update as the body of torch's ``scan`` operator
(the higher-order operator ``torch.ops.higher_order.scan``), on the internal real form of the
state.

This is what runs while ``torch.onnx.export`` traces a layer (``DISPATCH_ONNX`` in the dispatch
table). torch.export records the step once, as a subgraph, with a symbolic number of steps, and
torch's ONNX exporter translates it into an ONNX ``Scan`` whose body is that step. So an exported
model keeps a dynamic sequence length, and every operation in it is a standard one (matmul,
sigmoid, tanh, sqrt, where, ...): no custom operator needs an ONNX translation. The step is the
same literal update the ``stepwise`` backend and the cells run (the scheme's step from the scheme
table, the host's cell: ``layer._real_step``); complex units (scuRNN) run as ``[Re, Im]`` pairs
of reals, the second moment of Adam / RMSProp on their modulus
(:func:`momentumrnn.schemes.pair_square`), since ONNX has too few complex operations.

The operator is called directly, its body a function of explicit tensors (the carry, one step of
the inputs, the parameters): ``torch._higher_order_ops.scan.scan`` would first compile the body
with dynamo, whose cache, kept from one export to the next in a process, re-checks its guards on
the symbolic sizes of a later export and silently fixes them (a dynamic batch exported after a
static one came out static). Eagerly the operator runs its body in a Python loop and autograd
differentiates it (``tests/test_backends.py`` and ``tests/orthogonal/`` check outputs, states and
gradients against the literal references in float64).

Variable lengths (``PackedSequence``): past a sequence's end the carried state is kept
(``where(valid_t, new, old)``) and the output is 0, so the final carry is the state after each
sequence's last step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar

import torch
from torch import Tensor
from torch.utils import _pytree as pytree

from .. import exporting
from ..lengths import at_last_step
from ..schemes import MomentumState, next_steps

if TYPE_CHECKING:
    from .._typing import Hidden, HyperParameters, Layer, StepResult
    from ..lengths import SeqInfo

    class _ScanLayer(Layer, Protocol):
        def _real_step(self, p: Any) -> RealStep: ...


__all__ = ["run", "available", "RealStep"]

try:
    from torch._higher_order_ops.scan import scan_op as _scan_op
except ImportError:  # pragma: no cover - a torch without the operator: the capability fallback runs stepwise
    _scan_op = None  # type: ignore[assignment]  # (the module's name for the missing operator)


_T = TypeVar("_T", bound=tuple)


def _same(mom: MomentumState) -> MomentumState:
    return mom


class RealStep(NamedTuple):
    """A host's literal step on the internal real form (``layer._real_step(p)``):
    ``step(params, x_t, hidden, mom, hp) -> (output_t, hidden, mom)``, with ``params`` the tensors
    (or ``None``) it reads, passed in by the backend (scan's body takes its tensors as arguments);
    ``mom`` on the carried layout, ``enter`` / ``leave`` from / to the internal form (e.g. scuRNN
    carries its second moment in the pair layout, both halves equal)."""

    step: Callable
    params: tuple
    enter: Callable = _same
    leave: Callable = _same


def available(layer: object = None, x: object = None) -> bool:
    """Whether this torch has the ``scan`` operator (the capability probe of the dispatch table)."""
    return _scan_op is not None


def _detached(values: _T) -> _T:
    """A tuple / NamedTuple with its tensors detached."""
    out = [v.detach() if isinstance(v, Tensor) else v for v in values]
    return type(values)(*out) if hasattr(values, "_fields") else type(values)(out)


def _split(values: tuple) -> tuple[list[Tensor], Callable[[Sequence[Tensor]], tuple]]:
    """``(tensors, rebuild)``: the tensors among ``values``, and ``rebuild(tensors)`` -> the values
    with those tensors replaced (the operator's extra inputs are tensors only)."""
    where = [i for i, v in enumerate(values) if isinstance(v, Tensor)]

    def rebuild(tensors: Sequence[Tensor]) -> tuple:
        out = list(values)
        for i, t in zip(where, tensors):
            out[i] = t
        return tuple(out)

    return [values[i] for i in where], rebuild


def run(
    layer: _ScanLayer, p: tuple, x: Tensor, seq: SeqInfo, hidden0: Hidden, mom0: MomentumState, hp: HyperParameters
) -> StepResult:
    if _scan_op is None:
        raise RuntimeError(
            f"the scan backend needs torch's scan operator, which torch {torch.__version__} lacks; "
            "use layer.backend = 'stepwise'"
        )
    if exporting.onnx_exporting():
        # An ONNX graph is for inference: everything entering scan is detached, so that neither the
        # capture nor the exporter's decompositions (which replay the graph with the parameters'
        # requires_grad, not the grad mode) trace scan's autograd. It costs time (an AdamLSTM's
        # export: 2.4 s of CPU, 1.0 s detached) and its forward-backward partition fails with a
        # dynamic batch in torch 2.13 ("'SymInt' object has no attribute 'unsqueeze'": the toolkit's
        # PTB word model with a NesterovGRU)
        p, x, hp = _detached(p), x.detach(), _detached(hp)
        hidden0 = {k: None if t is None else t.detach() for k, t in hidden0.items()}
        mom0 = _detached(mom0)
    T, B, _ = x.shape
    real = layer._real_step(p)
    hidden_slots, mom_slots = layer._slots()
    scheme = layer.scheme
    # the carry holds floating tensors only (scan's autograd differentiates every carry): what
    # starts at zero starts as zeros (the literal step's own default); the restart counter is no
    # carry but an input, the counters before each step (known in advance: next_steps)
    carried = [f for f in scheme.state_fields if f != "step"]
    hidden = {
        name: t if t is not None else x.new_zeros(B, hidden_slots[name].internal_width) for name, t in hidden0.items()
    }
    mom = {
        f: getattr(mom0, f) if getattr(mom0, f) is not None else x.new_zeros(B, mom_slots[f].internal_width)
        for f in carried
    }
    entered = real.enter(MomentumState(**mom))
    mom = {f: getattr(entered, f) for f in carried}
    xs = {"x": x}
    if seq.valid is not None:
        xs["valid"] = seq.valid
    k = None
    if scheme.scheduled:
        step0 = mom0.step if mom0.step is not None else torch.zeros(B, dtype=torch.long, device=x.device)
        k = next_steps(step0, T, scheme.restart).expand(T, B)  # the counter after each step
        # before each step: k_{t-1} (step0 at t = 1, as its wrapped twin F where step0 = 0: the
        # step's own k = k_{t-1} + 1 wraps both to 1). No slice of k: k[:-1] makes torch.export
        # guard T - 1 != 1
        xs["k_prev"] = next_steps(step0 - 1, T, scheme.restart).expand(T, B)

    init, init_spec = pytree.tree_flatten((hidden, mom))
    xs_leaves, xs_spec = pytree.tree_flatten(xs)
    params, rebuild_params = _split(tuple(real.params))
    hps, rebuild_hp = _split(tuple(hp))
    n_init, n_xs, n_params = len(init), len(xs_leaves), len(params)

    def body(*args: Tensor) -> list[Tensor]:
        hidden, mom = pytree.tree_unflatten(list(args[:n_init]), init_spec)
        xs_t = pytree.tree_unflatten(list(args[n_init : n_init + n_xs]), xs_spec)
        q = rebuild_params(args[n_init + n_xs : n_init + n_xs + n_params])
        h_p = rebuild_hp(args[n_init + n_xs + n_params :])
        state = MomentumState(**mom, step=xs_t.get("k_prev"))
        out_t, new_hidden, new_mom = real.step(q, xs_t["x"], hidden, state, h_p)
        new_mom = {f: getattr(new_mom, f) for f in carried}
        new_hidden = {name: new_hidden[name] for name in hidden}
        if "valid" in xs_t:  # past a sequence's end: keep its state, output 0
            keep = xs_t["valid"]
            new_hidden = {n: torch.where(keep, v, hidden[n]) for n, v in new_hidden.items()}
            new_mom = {f: torch.where(keep, v, mom[f]) for f, v in new_mom.items()}
            out_t = torch.where(keep, out_t, 0)
        # scan's outputs may not alias its carry (out_t is h for every host)
        return [*pytree.tree_leaves((new_hidden, new_mom)), out_t.clone()]

    result = _scan_op(body, init, xs_leaves, (*params, *hps))
    hidden_T, mom_T = pytree.tree_unflatten(list(result[:n_init]), init_spec)
    out = result[n_init]
    mom_T = real.leave(MomentumState(**mom_T))
    if k is not None:
        mom_T = mom_T._replace(step=at_last_step(k, seq.last))
    return out, hidden_T, mom_T
