"""State types of the layers and cells, and the one parser of a user's state.

A layer's state is ``LSTMState(h, c, momentum)`` (LSTM host) or ``RNNState(h, momentum)`` (every
other host) with ``(num_layers * num_directions, N, width)`` tensors; a cell's is the same without
the layer dimension. :func:`parse_state` checks any of them (and ``torch.nn``'s ``h`` / ``(h, c)``)
against a host's :class:`Slot` layout and turns it into the internal form the backends use:
batch dimension present, complex units as ``[Re, Im]`` pairs of real numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

from . import _checks
from .schemes import MomentumState

__all__ = ["LSTMState", "RNNState", "MomentumState", "Slot", "parse_state", "to_external", "for_trace",
           "autocast_inputs"]


class LSTMState(NamedTuple):
    """State of an LSTM layer: ``h``, ``c`` as in ``torch.nn.LSTM`` plus the momentum state."""

    h: Tensor
    c: Tensor
    momentum: MomentumState


class RNNState(NamedTuple):
    """State of every other layer: ``h`` as in ``torch.nn`` plus the momentum state."""

    h: Tensor
    momentum: MomentumState


@dataclass(frozen=True)
class Slot:
    """One state tensor: ``width`` entries per sequence (complex numbers when ``complex``; kept
    internally as ``2 * width`` reals ``[Re, Im]``)."""

    width: int
    complex: bool = False

    @property
    def internal_width(self) -> int:
        return 2 * self.width if self.complex else self.width


_MESSAGE_NAMES = {"h": "h0 (state h)", "c": "c0 (state c)", "v": "momentum v", "m": "momentum m",
                  "p": "momentum p"}


def _split(owner: str, state, has_c: bool):
    """``(h, c, momentum)`` of any accepted form of a state."""
    want = "(h, c) or (h, c, momentum)" if has_c else "h or (h, momentum)"
    if isinstance(state, Tensor):
        if has_c:
            raise TypeError(f"{owner}: LSTM state must be {want}, got a single tensor")
        return state, None, None
    if isinstance(state, MomentumState):
        raise TypeError(f"{owner} state must be {want}, got a bare MomentumState")
    if isinstance(state, (tuple, list)):
        n = len(state)
        if has_c and n in (2, 3):
            return state[0], state[1], state[2] if n == 3 else None
        if not has_c and n in (1, 2):
            return state[0], None, state[1] if n == 2 else None
        raise TypeError(f"{owner} state must be {want}, got a sequence of length {n}")
    raise TypeError(f"state must be a tensor or a tuple of tensors, got {type(state).__name__}")


def _take(name: str, value, slot: Slot, lead: tuple, batch_dim: Optional[int], dtype, device):
    """Check one tensor of the state; return it with a batch dimension, complex as pairs."""
    if value is None:
        return None
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if slot.complex and not value.is_complex():
        raise TypeError(f"{name} must be complex for this host (complex hidden state), got {value.dtype}")
    if not slot.complex and value.is_complex():
        raise TypeError(f"{name} must be real for this layer, got complex dtype {value.dtype}")
    _checks.check_tensor(name, value.real if value.is_complex() else value, dtype, device)
    _checks.check_shape(name, value, lead + (slot.width,))
    if batch_dim is not None:
        value = value.unsqueeze(batch_dim)
    if slot.complex:
        value = torch.cat([value.real, value.imag], -1)
    return value


def parse_state(owner: str, state, hidden: dict, momentum: dict, scheme, lead: tuple,
                batch_dim: Optional[int], dtype: torch.dtype, device: torch.device):
    """Split and check a user's state.

    Args:
        owner: the layer's or cell's class name (for messages).
        state: ``None``, ``h``, ``(h, c)``, ``(h, momentum)``, ``(h, c, momentum)`` or a state
            type of the library.
        hidden / momentum: ``{name: Slot}`` of the host's hidden state (``h``, with ``c`` for
            the LSTM) and momentum fields (``v``, ``m``, ``p``).
        scheme: the :class:`~momentumrnn.schemes.Scheme` whose fields the momentum may hold.
        lead: the expected leading shape (``(L*D, N)``, ``(L*D,)`` unbatched, ``(N,)`` or ``()``
            for a cell).
        batch_dim: where to insert the batch dimension of an unbatched state (``None``: batched).
        dtype, device: the parameters' real dtype and device.

    Returns ``(hidden_values, MomentumState)``: ``{name: tensor or None}`` and the momentum, in
    the internal form (``None`` for what starts at zero).
    """
    if state is None:
        return {name: None for name in hidden}, MomentumState()
    h, c, mom = _split(owner, state, "c" in hidden)
    values = {"h": h, "c": c}
    out = {name: _take(_MESSAGE_NAMES[name], values[name], slot, lead, batch_dim, dtype, device)
           for name, slot in hidden.items()}
    if mom is None:
        return out, MomentumState()
    if isinstance(mom, tuple) and len(mom) == 4:  # empty placeholders (jit.trace outputs): absent
        mom = MomentumState(*(None if _placeholder(t) else t for t in mom))
    mom = _checks.check_momentum_state(mom, scheme, lead, batch_dim, device)
    step = mom.step
    taken = {name: _take(_MESSAGE_NAMES[name], getattr(mom, name), slot, lead, batch_dim, dtype, device)
             for name, slot in momentum.items()}
    return out, MomentumState(v=taken.get("v"), m=taken.get("m"), p=taken.get("p"), step=step)


def to_external(value: Optional[Tensor], slot: Slot) -> Optional[Tensor]:
    """The inverse of the internal form of one tensor: pairs ``[Re, Im]`` back to complex."""
    if value is None or not slot.complex:
        return value
    return torch.complex(value[..., :slot.width], value[..., slot.width:])


def _placeholder(t) -> bool:
    return isinstance(t, Tensor) and t.dim() == 1 and t.shape[0] == 0


def for_trace(momentum: MomentumState, like: Tensor) -> MomentumState:
    """The momentum state as ``torch.jit.trace`` can return it: unused fields (``None``) become
    empty tensors of shape ``(0,)`` (``parse_state`` reads those as absent again). Used only
    while tracing; eager calls, torch.compile and torch.export keep ``None``."""
    return MomentumState(*(t if t is not None else
                           like.new_empty(0, dtype=torch.long if name == "step" else like.dtype)
                           for name, t in zip(MomentumState._fields, momentum)))


def autocast_inputs(value, device_type: str, dtype: torch.dtype):
    """Under autocast, a layer or cell computes in its parameters' ``dtype`` (autocast's float32
    policy for numerically sensitive operations: a state carried over many steps, and the
    ``sqrt(m + 1e-16)`` of Adam / RMSProp); tensors in the autocast dtype (the output of an
    autocast layer before it) are cast to ``dtype``. Tuples, NamedTuples and PackedSequences are
    walked; integer tensors (``step``) and other dtypes are left as they are."""
    low = torch.get_autocast_dtype(device_type)
    if isinstance(value, Tensor):
        return value.to(dtype) if value.dtype == low and low != dtype else value
    if isinstance(value, PackedSequence):
        return value._replace(data=autocast_inputs(value.data, device_type, dtype))
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(autocast_inputs(v, device_type, dtype) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(autocast_inputs(v, device_type, dtype) for v in value)
    return value
