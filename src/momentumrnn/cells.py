"""Step-wise momentum cells, for users who write their own loop or stream inputs one step at a
time (``torch.nn.LSTMCell`` and friends, plus the momentum state).

A cell's state is the layer's state without the layer dimension: ``LSTMState(h, c, momentum)`` /
``RNNState(h, momentum)`` with ``h`` of shape ``(B, H)`` (or ``(H,)`` unbatched). A cell takes the
literal step of its host with its scheme (the scheme table's one-step update) and checks its state
with the layers' parser. Running a cell over a sequence equals the one-layer, one-direction layer
of the same scheme; the state of one can be handed to the other (index the layer dimension away or
add it).
"""

from __future__ import annotations

import math
from typing import ClassVar, Optional

import torch
from torch import Tensor, nn

from . import _checks, registry
from .backends.native import GatedParams
from .hosts.gated import GATES, gated_step
from .schemes import ADAM, HEAVY_BALL, NESTEROV, NONE, RESTART, RMSPROP, MomentumState, Scheme, SchemeSpec
from .state import LSTMState, RNNState, Slot, autocast_inputs, for_trace, parse_state

__all__ = ["MomentumCellBase", "CELL_NAMES", "CELL_ALIASES", "cell_class"]

CELL_NAMES = registry.CELL_NAMES
CELL_ALIASES = registry.CELL_ALIASES
cell_class = registry.cell_class


class MomentumCellBase(nn.Module):
    """Base of the gated cells; see the paper-named classes (``MomentumLSTMCell``, ...)."""

    host: ClassVar[str] = ""
    scheme_kind: ClassVar[Optional[str]] = None

    def __init_subclass__(cls, host: Optional[str] = None, scheme: Optional[SchemeSpec] = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if host is not None and scheme is not None:
            cls.host, cls.scheme_kind = host, scheme.kind
            if cls.__dict__.get("__doc__") is None:
                cls.__doc__ = (f"One step of the {registry.paper_name(host, scheme.kind)} layer ({scheme.summary}); "
                               "``forward(input, state) -> new state``.")
            registry.register_cell(cls)

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: Optional[str] = None,
                 device=None, dtype=None, *, mu=None, epsilon=None, beta=None, restart=None):
        super().__init__()
        if self.host not in GATES:
            raise TypeError(f"{type(self).__name__} has no host; use a paper-named cell (MomentumLSTMCell, ...)")
        factory = {"device": device, "dtype": dtype}
        self._name = type(self).__name__
        self.input_size = _checks.check_size("input_size", input_size)
        self.hidden_size = _checks.check_size("hidden_size", hidden_size)
        self.bias = bool(bias)
        self.nonlinearity = _checks.check_nonlinearity(self.host, nonlinearity)
        self.scheme = Scheme.create(self.scheme_kind, mu=mu, epsilon=epsilon, beta=beta, restart=restart)
        G = GATES[self.host] * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(G, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(G, hidden_size, **factory))
        if self.bias:
            self.bias_ih = nn.Parameter(torch.empty(G, **factory))
            self.bias_hh = nn.Parameter(torch.empty(G, **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -stdv, stdv)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        if self.host == "rnn" and self.nonlinearity != "tanh":
            s += f", nonlinearity={self.nonlinearity!r}"
        return s + "".join(f", {k}={v}" for k, v in self.scheme.hyper_parameters.items())

    def forward(self, input: Tensor, state=None):
        """One step. ``input``: ``(B, input_size)`` or ``(input_size,)``. Returns the new state.
        Under ``torch.autocast``: as the layers (computes in the parameters' dtype)."""
        device_type = self.weight_ih.device.type
        if torch.is_autocast_enabled(device_type):
            dtype = self.weight_ih.dtype
            with torch.autocast(device_type, enabled=False):
                return self._step(autocast_inputs(input, device_type, dtype), autocast_inputs(state, device_type, dtype))
        return self._step(input, state)

    def _step(self, input: Tensor, state):
        p = self.weight_ih
        _checks.check_precision(self._name, self.scheme, p.dtype)
        _checks.check_tensor("input", input, p.dtype, p.device)
        if input.dim() not in (1, 2) or input.shape[-1] != self.input_size:
            raise ValueError(f"{self._name}: expected input of shape (B, {self.input_size}) or "
                             f"({self.input_size},), got {tuple(input.shape)}")
        batched = input.dim() == 2
        x = input if batched else input.unsqueeze(0)
        H, GH = self.hidden_size, self.weight_hh.shape[0]
        hidden_slots = {"h": Slot(H), "c": Slot(H)} if self.host == "lstm" else {"h": Slot(H)}
        mom_slots = {f: Slot(GH) for f in ("v", "m", "p") if f in self.scheme.state_fields}
        hidden, mom = parse_state(self._name, state, hidden_slots, mom_slots, self.scheme,
                                  (x.shape[0],) if batched else (), None if batched else 0, p.dtype, p.device)
        params = GatedParams(self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        _, hidden, momentum = gated_step(self.host, self.nonlinearity, params, x, hidden, mom, self.scheme,
                                         (self.scheme.mu, self.scheme.epsilon))
        if not batched:
            hidden = {k: v.squeeze(0) for k, v in hidden.items()}
            momentum = MomentumState(*(None if t is None else t.squeeze(0) for t in momentum))
        if torch.jit.is_tracing():  # a traced graph returns tensors only (see state.for_trace)
            momentum = for_trace(momentum, hidden["h"])
        if self.host == "lstm":
            return LSTMState(hidden["h"], hidden["c"], momentum)
        return RNNState(hidden["h"], momentum)


# fmt: off
class RNNCell(MomentumCellBase, host="rnn", scheme=NONE): ...
class MomentumRNNCell(MomentumCellBase, host="rnn", scheme=HEAVY_BALL): ...
class AdamRNNCell(MomentumCellBase, host="rnn", scheme=ADAM): ...
class RMSPropRNNCell(MomentumCellBase, host="rnn", scheme=RMSPROP): ...
class RestartMomentumRNNCell(MomentumCellBase, host="rnn", scheme=RESTART): ...
class NesterovRNNCell(MomentumCellBase, host="rnn", scheme=NESTEROV): ...

class LSTMCell(MomentumCellBase, host="lstm", scheme=NONE): ...
class MomentumLSTMCell(MomentumCellBase, host="lstm", scheme=HEAVY_BALL): ...
class AdamLSTMCell(MomentumCellBase, host="lstm", scheme=ADAM): ...
class RMSPropLSTMCell(MomentumCellBase, host="lstm", scheme=RMSPROP): ...
class RestartMomentumLSTMCell(MomentumCellBase, host="lstm", scheme=RESTART): ...
class NesterovLSTMCell(MomentumCellBase, host="lstm", scheme=NESTEROV): ...

class GRUCell(MomentumCellBase, host="gru", scheme=NONE): ...
class MomentumGRUCell(MomentumCellBase, host="gru", scheme=HEAVY_BALL): ...
class AdamGRUCell(MomentumCellBase, host="gru", scheme=ADAM): ...
class RMSPropGRUCell(MomentumCellBase, host="gru", scheme=RMSPROP): ...
class RestartMomentumGRUCell(MomentumCellBase, host="gru", scheme=RESTART): ...
class NesterovGRUCell(MomentumCellBase, host="gru", scheme=NESTEROV): ...
# fmt: on

# The paper's names (aliases): SR<host>Cell is Nesterov with scheduled restart.
SRRNNCell = NesterovRNNCell
SRLSTMCell = NesterovLSTMCell
SRGRUCell = NesterovGRUCell

__all__ += [name for name in CELL_NAMES] + list(CELL_ALIASES)
