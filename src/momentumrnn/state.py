"""The state contract of the layers and cells, and the one parser of a user's state.

By default a layer or cell takes and returns exactly what its ``torch.nn`` counterpart does:
``(h, c)`` on the LSTM host, a tensor ``h`` on every other host (the modReLU hosts take the RNN
host's contract), with ``torch.nn``'s shapes; the momentum starts at zero at every call (as the
authors' layers do when no velocity is passed).

With ``carry_momentum=True`` the state also carries the momentum: a flat plain tuple
``(h, [c,] *fields)`` with the scheme's momentum fields in the order of the scheme table (``v``,
``m``, ``p``, ``step``; :func:`state_names` lists them for a layer). A plain tuple of tensors, so
that a recursive detach, ``.to()``, pytree flattening, ``torch.compile`` / ``torch.export`` /
``torch.jit.trace``, DDP and ``torch.load(weights_only=True)`` handle it like ``torch.nn``'s
``(h, c)``. A layer without momentum fields (the plain scheme) has ``torch.nn``'s state either way.

Shapes: ``h``, ``c`` ``(D * num_layers, N, H)``, ``v`` / ``m`` / ``p`` ``(D * num_layers, N, W)``
(``W`` the drive's width: ``G * H`` on gated hosts), ``step`` an int64 ``(D * num_layers, N)``;
unbatched input drops ``N``, cells drop ``D * num_layers``. :func:`parse_state` checks a state
against a host's :class:`Slot` layout and turns it into the internal form the backends use
(batch dimension present, complex units as ``[Re, Im]`` pairs of real numbers, absent momentum
fields ``None``); :func:`pack_state` turns the backends' results back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, overload

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

from . import _checks
from .schemes import MomentumState, Scheme

__all__ = ["Slot", "state_names", "parse_state", "pack_state", "to_external", "autocast_inputs"]

#: a state as a layer or cell returns it: ``h``, ``(h, c)`` or the flat ``(h, [c,] *fields)``
State = Tensor | tuple[Tensor, ...]
#: a state as a layer or cell takes it (``hx``): as returned, or any sequence of its tensors
StateInput = Tensor | Sequence[Tensor]


@dataclass(frozen=True)
class Slot:
    """One state tensor: ``width`` entries per sequence (complex numbers when ``complex``; kept
    internally as ``2 * width`` reals ``[Re, Im]``)."""

    width: int
    complex: bool = False

    @property
    def internal_width(self) -> int:
        return 2 * self.width if self.complex else self.width


_MESSAGE_NAMES = {
    "h": "h0 (state h)",
    "c": "c0 (state c)",
    "v": "momentum v",
    "m": "momentum m",
    "p": "momentum p",
    "step": "momentum step",
}


def state_names(hidden: Mapping[str, object], fields: tuple, carry: bool) -> tuple[str, ...]:
    """The names of a state's tensors in order: ``("h", "c")`` (LSTM host) or ``("h",)``, then the
    scheme's momentum ``fields`` when the momentum is carried."""
    return tuple(hidden) + (tuple(fields) if carry else ())


def _describe(names: tuple[str, ...]) -> str:
    if len(names) == 1:
        return "a tensor h_0"
    return "a tuple (" + ", ".join(f"{n}_0" if n in ("h", "c") else n for n in names) + ")"


def _split(owner: str, state: object, hidden: Mapping[str, Slot], fields: tuple, carry: bool) -> dict[str, Any]:
    """``{name: value}`` of a user's state (see the module docstring for the accepted forms)."""
    native = tuple(hidden)
    full = state_names(hidden, fields, carry)
    want = _describe(native) + (
        f" (torch.nn's form; momentum from zero) or {_describe(full)} (a previous call's state, momentum carried)"
        if full != native
        else ""
    )
    if isinstance(state, Tensor):
        if len(native) == 1:
            return {"h": state}
        raise TypeError(f"{owner}: hx must be {want}, got a single tensor")
    if isinstance(state, (tuple, list)):
        n = len(state)
        if n == len(full) > 1 or n == len(native) > 1:  # torch.nn takes a tensor h, never (h,)
            return dict(zip(full, state))
        hint = ""
        if not carry and fields and n == len(native) + len(fields):
            hint = f"; a state with the momentum {fields} is taken only by a layer built with carry_momentum=True"
        raise TypeError(f"{owner}: hx must be {want}, got a {type(state).__name__} of length {n}{hint}")
    raise TypeError(f"{owner}: hx must be {want}, got {type(state).__name__}")


def _take(
    name: str, value: object, slot: Slot, lead: tuple, batch_dim: int | None, dtype: torch.dtype, device: torch.device
) -> Tensor:
    """Check one tensor of the state; return it with a batch dimension, complex as pairs."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if slot.complex and not value.is_complex():
        raise TypeError(f"{name} must be complex for this host (complex hidden state), got {value.dtype}")
    if not slot.complex and value.is_complex():
        raise TypeError(f"{name} must be real for this layer, got complex dtype {value.dtype}")
    _checks.check_tensor(name, value.real if value.is_complex() else value, dtype, device)
    _checks.check_shape(name, value, (*lead, slot.width))
    if batch_dim is not None:
        value = value.unsqueeze(batch_dim)
    if slot.complex:
        value = torch.cat([value.real, value.imag], -1)
    return value


def parse_state(
    owner: str,
    state: object,
    hidden: Mapping[str, Slot],
    momentum: Mapping[str, Slot],
    scheme: Scheme,
    carry: bool,
    lead: tuple,
    batch_dim: int | None,
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[dict[str, Tensor | None], MomentumState]:
    """Split and check a user's state.

    Args:
        owner: the layer's or cell's class name (for messages).
        state: ``None`` (zeros), ``torch.nn``'s ``h`` / ``(h, c)``, or, with ``carry``, the flat
            ``(h, [c,] *fields)`` a previous call returned.
        hidden / momentum: ``{name: Slot}`` of the host's hidden state (``h``, with ``c`` for
            the LSTM) and of the scheme's momentum fields among ``v``, ``m``, ``p``.
        scheme: the layer's :class:`~momentumrnn.schemes.Scheme` (its fields and restart period).
        carry: whether the layer carries its momentum (``carry_momentum=True``).
        lead: the expected leading shape (``(L*D, N)``, ``(L*D,)`` unbatched, ``(N,)`` or ``()``
            for a cell).
        batch_dim: where to insert the batch dimension of an unbatched state (``None``: batched).
        dtype, device: the parameters' real dtype and device.

    Returns ``(hidden_values, MomentumState)``: ``{name: tensor or None}`` and the momentum, in
    the internal form (``None`` for what starts at zero).
    """
    if state is None:
        return dict.fromkeys(hidden), MomentumState()
    fields = scheme.state_fields
    values = _split(owner, state, hidden, fields, carry)
    out: dict[str, Tensor | None]
    out = {
        name: _take(_MESSAGE_NAMES[name], values[name], slot, lead, batch_dim, dtype, device)
        for name, slot in hidden.items()
    }
    if not any(f in values for f in fields):
        return out, MomentumState()
    for f in fields:
        if not isinstance(values[f], Tensor):
            raise TypeError(f"{_MESSAGE_NAMES[f]} must be a torch.Tensor, got {type(values[f]).__name__}")
    mom = _checks.check_momentum_state(MomentumState(step=values.get("step")), scheme, lead, batch_dim, device)
    taken = {
        name: _take(_MESSAGE_NAMES[name], values[name], slot, lead, batch_dim, dtype, device)
        for name, slot in momentum.items()
    }
    return out, MomentumState(v=taken.get("v"), m=taken.get("m"), p=taken.get("p"), step=mom.step)


def pack_state(hidden: Mapping[str, Tensor], momentum: MomentumState | None, fields: tuple, carry: bool) -> State:
    """The state a layer or cell returns: ``torch.nn``'s ``(h, c)`` / ``h``, or with ``carry``
    the flat tuple ``(h, [c,] *fields)`` (``momentum`` holds every field as a tensor then)."""
    if carry and fields:
        return (*hidden.values(), *(getattr(momentum, f) for f in fields))
    if "c" in hidden:
        return hidden["h"], hidden["c"]
    return hidden["h"]


@overload
def to_external(value: Tensor, slot: Slot) -> Tensor: ...
@overload
def to_external(value: None, slot: Slot) -> None: ...


def to_external(value: Tensor | None, slot: Slot) -> Tensor | None:
    """The inverse of the internal form of one tensor: pairs ``[Re, Im]`` back to complex."""
    if value is None or not slot.complex:
        return value
    return torch.complex(value[..., : slot.width], value[..., slot.width :])


def autocast_inputs(value: Any, device_type: str, dtype: torch.dtype) -> Any:
    """Under autocast, a layer or cell computes in its parameters' ``dtype`` (autocast's float32
    policy for numerically sensitive operations: a state carried over many steps, and the
    ``sqrt(m + 1e-16)`` of Adam / RMSProp); tensors in the autocast dtype (the output of an
    autocast layer before it) are cast to ``dtype``. Tuples, lists and PackedSequences are
    walked; integer tensors (``step``) and other dtypes are left as they are."""
    low = torch.get_autocast_dtype(device_type)
    if isinstance(value, Tensor):
        return value.to(dtype) if value.dtype == low and low != dtype else value
    if isinstance(value, PackedSequence):
        return value._replace(data=autocast_inputs(value.data, device_type, dtype))
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a user's NamedTuple
        return type(value)(*(autocast_inputs(v, device_type, dtype) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(autocast_inputs(v, device_type, dtype) for v in value)
    return value
