"""The literal backend: the host's one-step update (which calls the scheme's, from the scheme
table) in a Python loop, differentiated by autograd.

Slow (a Python iteration and an autograd node per step), but it runs every host with every scheme
and supports whatever autograd supports (double backward, ``torch.func`` transforms); the cells
take exactly the same steps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, overload

import torch
from torch import Tensor

from ..lengths import at_last_step
from ..schemes import MomentumState
from ..state import Slot, to_external

if TYPE_CHECKING:
    from .._typing import Hidden, HyperParameters, Layer, StepResult
    from ..lengths import SeqInfo

__all__ = ["run", "internal"]


@overload
def internal(value: Tensor, slot: Slot) -> Tensor: ...
@overload
def internal(value: None, slot: Slot) -> None: ...


def internal(value: Tensor | None, slot: Slot) -> Tensor | None:
    """A state tensor in the internal form (complex as ``[Re, Im]`` pairs)."""
    if value is None or not slot.complex:
        return value
    return torch.cat([value.real, value.imag], -1)


def run(
    layer: Layer, p: tuple, x: Tensor, seq: SeqInfo, hidden0: Hidden, mom0: MomentumState, hp: HyperParameters
) -> StepResult:
    hidden_slots, mom_slots = layer._slots()
    hidden: Hidden = {name: to_external(t, hidden_slots[name]) for name, t in hidden0.items()}
    mom = MomentumState(
        *(t if name == "step" else to_external(t, mom_slots[name]) for name, t in zip(MomentumState._fields, mom0))
    )
    outs: list[Tensor] = []
    seqs: dict[str, list[Tensor]] = {name: [] for name in hidden}
    fields = layer.scheme.state_fields
    mom_seqs: dict[str, list[Tensor]] = {name: [] for name in fields}
    for x_t in x.unbind(0):
        out_t, hidden, mom = layer._literal_step(p, x_t, hidden, mom, hp)
        outs.append(out_t)
        for name, t in hidden.items():
            seqs[name].append(t)
        for name in fields:
            mom_seqs[name].append(getattr(mom, name))
    out = torch.stack(outs)
    if seq.valid is not None:
        out = torch.where(seq.valid, out, 0)
    finals = {name: internal(at_last_step(torch.stack(v), seq.last), hidden_slots[name]) for name, v in seqs.items()}
    mom_T = {name: at_last_step(torch.stack(v), seq.last) for name, v in mom_seqs.items()}
    mom_T = {name: t if name == "step" else internal(t, mom_slots[name]) for name, t in mom_T.items()}
    return out, finals, MomentumState(**mom_T)
