"""The scan backend: the host's literal one-step update as the body of torch's ``scan`` operator
(``torch._higher_order_ops.scan``), on the internal real form of the state.

This is what runs while ``torch.onnx.export`` traces a layer (``DISPATCH_ONNX`` in the dispatch
table). ``scan`` is a higher-order operator: torch.export records the step once, as a subgraph,
with a symbolic number of steps, and torch's ONNX exporter translates it into an ONNX ``Scan``
whose body is that step. So an exported model keeps a dynamic sequence length, and every
operation in it is a standard one (matmul, sigmoid, tanh, sqrt, where, ...): no custom operator
needs an ONNX translation. The step is the same literal update the ``stepwise`` backend and the
cells run (the scheme's step from the scheme table, the host's cell); complex units (scuRNN) run
as ``[Re, Im]`` pairs of reals, the second moment of Adam / RMSProp on their modulus
(:func:`momentumrnn.schemes.pair_square`), since ONNX has too few complex operations.

Variable lengths (``PackedSequence``): past a sequence's end the carried state is kept
(``where(valid_t, new, old)``) and the output is 0, so the final carry is the state after each
sequence's last step. Eagerly, ``scan`` runs its body through ``torch.compile`` (one compilation
per layer and shape), and autograd differentiates it (``tests/test_scan_backend.py`` checks
outputs, states and gradients against the literal references in float64).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import Tensor

from .. import exporting

from ..lengths import at_last_step
from ..schemes import MomentumState, next_steps

__all__ = ["run", "available", "RealStep"]

try:  # torch >= 2.6 (the ONNX exporter translates it from torch 2.8 on)
    from torch._higher_order_ops.scan import scan as _scan
except ImportError:  # pragma: no cover - older torch: the capability fallback runs stepwise
    _scan = None


def _same(mom: MomentumState) -> MomentumState:
    return mom


class RealStep(NamedTuple):
    """A host's literal step on the internal real form (``layer._real_step(p)``):
    ``step(x_t, hidden, mom, hp) -> (output_t, hidden, mom)`` on the carried layout of the
    momentum, ``enter`` / ``leave`` from / to the internal form (e.g. scuRNN carries its second
    moment in the pair layout, both halves equal)."""

    step: Callable
    enter: Callable = _same
    leave: Callable = _same


def _detached(values):
    """A tuple / NamedTuple with its tensors detached."""
    out = [v.detach() if isinstance(v, Tensor) else v for v in values]
    return type(values)(*out) if hasattr(values, "_fields") else type(values)(out)


def available(layer=None, x=None) -> bool:
    """Whether this torch has the ``scan`` operator (the capability probe of the dispatch table)."""
    return _scan is not None


def run(layer, p, x: Tensor, seq, hidden0, mom0, hp):
    if _scan is None:
        raise RuntimeError(f"the scan backend needs torch's scan operator (torch >= 2.6), this is torch "
                           f"{torch.__version__}; use layer.backend = 'stepwise'")
    if exporting.onnx_exporting():
        # An ONNX graph is for inference: everything entering scan is detached, so that neither the
        # capture nor the exporter's decompositions (which replay the graph with the parameters'
        # requires_grad, not the grad mode) trace scan's autograd: half the export's time (12 s
        # -> 5 s for an AdamLSTM here), and its forward-backward partition fails with a dynamic
        # batch in torch 2.13 (a SymInt among the saved values)
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
    hidden = {name: t if t is not None else x.new_zeros(B, hidden_slots[name].internal_width)
              for name, t in hidden0.items()}
    mom = {f: getattr(mom0, f) if getattr(mom0, f) is not None else x.new_zeros(B, mom_slots[f].internal_width)
           for f in carried}
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

    def body(carry, xs_t):
        hidden, mom = carry
        state = MomentumState(**mom, step=xs_t.get("k_prev"))
        out_t, new_hidden, new_mom = real.step(xs_t["x"], hidden, state, hp)
        new_mom = {f: getattr(new_mom, f) for f in carried}
        new_hidden = {name: new_hidden[name] for name in hidden}
        if "valid" in xs_t:  # past a sequence's end: keep its state, output 0
            keep = xs_t["valid"]
            new_hidden = {n: torch.where(keep, v, hidden[n]) for n, v in new_hidden.items()}
            new_mom = {f: torch.where(keep, v, mom[f]) for f, v in new_mom.items()}
            out_t = torch.where(keep, out_t, 0)
        # scan's outputs may not alias its carry (out_t is h for every host)
        return (new_hidden, new_mom), out_t.clone()

    (hidden_T, mom_T), out = _scan(body, (hidden, mom), xs)
    mom_T = real.leave(MomentumState(**mom_T))
    if k is not None:
        mom_T = mom_T._replace(step=at_last_step(k, seq.last))
    return out, hidden_T, mom_T
