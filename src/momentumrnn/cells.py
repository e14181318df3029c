"""Step-wise momentum cells, for users who write their own loop or stream inputs one step at a
time: drop-ins for ``torch.nn.RNNCell`` / ``LSTMCell`` / ``GRUCell``.

A cell takes and returns ``torch.nn``'s state by default (``(h, c)`` for the LSTM host, a tensor
``h`` otherwise): its momentum then starts at zero at every call, i.e. at every step, which
reduces a momentum cell to a rescaled input. **In a step loop, build momentum cells with
``carry_momentum=True``**: the state becomes ``(h, [c,] *momentum fields)`` (the layer's carried
state without the layer dimension, see :mod:`momentumrnn.state`) and the loop computes the layer's
recurrence exactly. A cell takes the literal step of its host with its scheme (the scheme table's
one-step update) and checks its state with the layers' parser. Running a carrying cell over a
sequence equals the one-layer, one-direction carrying layer of the same scheme; their states
interchange (index the layer dimension away or add it).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar, cast

import torch
from torch import Tensor, nn

from . import _checks, registry
from .backends.native import GatedParams
from .hosts.gated import GATES, gated_step
from .pickling import PicklableLayer
from .schemes import ADAM, HEAVY_BALL, NESTEROV, NONE, RESTART, RMSPROP, MomentumState, Scheme, SchemeSpec
from .state import Slot, State, StateInput, autocast_inputs, pack_state, parse_state, state_names

if TYPE_CHECKING:
    from torch.types import Device

__all__ = ["MomentumCellBase", "CELL_NAMES", "CELL_ALIASES", "cell_class"]

#: torch.nn's positional arguments after ``bias``, per host (``nn.RNNCell`` takes ``nonlinearity``)
_POSITIONAL = {"rnn": ("nonlinearity", "device", "dtype"), "lstm": ("device", "dtype"), "gru": ("device", "dtype")}

CELL_NAMES = registry.CELL_NAMES
CELL_ALIASES = registry.CELL_ALIASES
cell_class = registry.cell_class


def _cell_doc(host: str, spec: SchemeSpec) -> str:
    torch_name = registry.HOSTS[host].title + "Cell"
    names = state_names({"h": 0, "c": 0} if host == "lstm" else {"h": 0}, spec.fields, True)
    native = "``(h, c)``" if host == "lstm" else "a tensor ``h``"
    doc = (
        f"One step of the {registry.paper_name(host, spec.kind)} layer: {spec.summary}.\n\n"
        f"    A drop-in replacement for ``torch.nn.{torch_name}``: the same arguments (plus the\n"
        f"    scheme's hyper-parameters {', '.join(spec.defaults) or '(none)'}) and "
        f"``forward(input, hx=None)`` returning {native}\n"
        "    as ``torch.nn``. Each step of the loop::\n\n"
        f"        u = W_ih @ x + b_ih\n" + "\n".join("        " + line for line in spec.loop.splitlines())
    )
    if spec.fields:
        doc += (
            "\n\n    By default the momentum restarts from zero at every call (every step): build the cell\n"
            f"    with ``carry_momentum=True`` in a step loop; its state is then ``({', '.join(names)})``."
        )
    return doc + "\n"


class MomentumCellBase(PicklableLayer, nn.Module):
    """Base of the gated cells; see the paper-named classes (``MomentumLSTMCell``, ...)."""

    _rebuild_attributes = ("carry_momentum",)

    host: ClassVar[str] = ""
    scheme_kind: ClassVar[str | None] = None

    bias_ih: Tensor | None
    bias_hh: Tensor | None

    def __init_subclass__(cls, host: str | None = None, scheme: SchemeSpec | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if host is not None and scheme is not None:
            cls.host, cls.scheme_kind = host, scheme.kind
            if cls.__dict__.get("__doc__") is None:
                cls.__doc__ = _cell_doc(host, scheme)
            registry.register_cell(cls)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *args: Any,
        nonlinearity: str | None = None,
        device: Device = None,
        dtype: torch.dtype | None = None,
        mu: float | None = None,
        epsilon: float | None = None,
        beta: float | None = None,
        restart: int | None = None,
        carry_momentum: bool = False,
    ) -> None:
        super().__init__()
        if self.host not in GATES:
            raise TypeError(f"{type(self).__name__} has no host; use a paper-named cell (MomentumLSTMCell, ...)")
        self._name = type(self).__name__
        names = _POSITIONAL[self.host]
        if len(args) > len(names):
            raise TypeError(
                f"{self._name}() takes at most {3 + len(names)} positional arguments (input_size, "
                f"hidden_size, bias, {', '.join(names)}), got {3 + len(args)}"
            )
        given: dict[str, Any] = {"nonlinearity": nonlinearity, "device": device, "dtype": dtype}
        for name, value in zip(names, args):
            if given[name] is not None:
                raise TypeError(f"{self._name}() got multiple values for argument {name!r}")
            given[name] = value
        nonlinearity = given["nonlinearity"]
        factory = {"device": given["device"], "dtype": given["dtype"]}
        #: whether the state carries the momentum (module docstring); may be changed later
        self.carry_momentum = bool(carry_momentum)
        self.input_size = _checks.check_size("input_size", input_size)
        self.hidden_size = _checks.check_size("hidden_size", hidden_size)
        self.bias = bool(bias)
        self.nonlinearity = _checks.check_nonlinearity(self.host, nonlinearity)
        # (the kind is set with the host: checked above)
        self.scheme = Scheme.create(cast(str, self.scheme_kind), mu=mu, epsilon=epsilon, beta=beta, restart=restart)
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

    @property
    def state_names(self) -> tuple[str, ...]:
        """Names of the state's tensors in order (as a layer's ``state_names``)."""
        return state_names(self._hidden_slots(), self.scheme.state_fields, self.carry_momentum)

    def _hidden_slots(self) -> dict[str, Slot]:
        H = self.hidden_size
        return {"h": Slot(H), "c": Slot(H)} if self.host == "lstm" else {"h": Slot(H)}

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
        s += "".join(f", {k}={v}" for k, v in self.scheme.hyper_parameters.items())
        return s + (", carry_momentum=True" if self.carry_momentum else "")

    def forward(self, input: Tensor, hx: StateInput | None = None) -> State:
        """One step: ``input`` ``(B, input_size)`` or ``(input_size,)``; returns the new state
        (``torch.nn``'s ``(h, c)`` / ``h``, or the carried state with ``carry_momentum``).
        Under ``torch.autocast``: as the layers (computes in the parameters' dtype)."""
        device_type = self.weight_ih.device.type
        if torch.is_autocast_enabled(device_type):
            dtype = self.weight_ih.dtype
            with torch.autocast(device_type, enabled=False):
                return self._step(autocast_inputs(input, device_type, dtype), autocast_inputs(hx, device_type, dtype))
        return self._step(input, hx)

    def _step(self, input: Tensor, state: object) -> State:
        p = self.weight_ih
        _checks.check_precision(self._name, self.scheme, p.dtype)
        _checks.check_tensor("input", input, p.dtype, p.device)
        if input.dim() not in (1, 2):
            raise ValueError(f"{self._name}: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if input.shape[-1] != self.input_size:
            raise ValueError(
                f"{self._name}: input has inconsistent input_size: got {input.shape[-1]} expected {self.input_size}"
            )
        batched = input.dim() == 2
        x = input if batched else input.unsqueeze(0)
        GH = self.weight_hh.shape[0]
        mom_slots = {f: Slot(GH) for f in ("v", "m", "p") if f in self.scheme.state_fields}
        hidden0, mom = parse_state(
            self._name,
            state,
            self._hidden_slots(),
            mom_slots,
            self.scheme,
            self.carry_momentum,
            (x.shape[0],) if batched else (),
            None if batched else 0,
            p.dtype,
            p.device,
        )
        params = GatedParams(self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        _, hidden, momentum = gated_step(
            self.host, self.nonlinearity, params, x, hidden0, mom, self.scheme, (self.scheme.mu, self.scheme.epsilon)
        )
        if not batched:
            hidden = {k: v.squeeze(0) for k, v in hidden.items()}
            momentum = MomentumState(*(None if t is None else t.squeeze(0) for t in momentum))
        return pack_state(hidden, momentum, self.scheme.state_fields, self.carry_momentum)


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

# (listed, not computed from CELL_NAMES: type checkers read the names ``import *`` exports here)
__all__ += [
    "RNNCell",
    "MomentumRNNCell",
    "AdamRNNCell",
    "RMSPropRNNCell",
    "RestartMomentumRNNCell",
    "NesterovRNNCell",
    "LSTMCell",
    "MomentumLSTMCell",
    "AdamLSTMCell",
    "RMSPropLSTMCell",
    "RestartMomentumLSTMCell",
    "NesterovLSTMCell",
    "GRUCell",
    "MomentumGRUCell",
    "AdamGRUCell",
    "RMSPropGRUCell",
    "RestartMomentumGRUCell",
    "NesterovGRUCell",
    "SRRNNCell",
    "SRLSTMCell",
    "SRGRUCell",
]
