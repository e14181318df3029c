"""The one sequence base of every layer: the ``torch.nn`` plumbing around one direction of one
layer.

:class:`SequenceBase` owns what every layer shares, whatever its host and scheme: the
``torch.nn.RNNBase`` constructor arguments and their checks, the scheme and its learnable
hyper-parameters, input checks, ``batch_first`` / unbatched / ``PackedSequence`` input, parsing
and checking the state (:func:`~momentumrnn.state.parse_state`), the layer x direction loop with
the reverse direction run on each sequence reversed within its length, dropout between layers,
and the assembly of output and state. A host subclass says only how one direction runs: its
parameters (``_register_direction``, ``reset_parameters``), its state layout (``_slots``) and its
per-direction parameters (``_direction``), which the backend chosen by
:func:`momentumrnn.backends.run` consumes.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar, overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from . import _checks, backends, registry
from .lengths import SeqInfo, reverse_within
from .pickling import PicklableLayer
from .schemes import PLAIN, SCHEMES, MomentumState, Scheme, SchemeSpec, canonical_kind
from .state import Slot, State, StateInput, autocast_inputs, pack_state, parse_state, state_names, to_external

if TYPE_CHECKING:
    from torch.types import Device

    from ._typing import Factory, Hidden, HyperParameters, StepResult

__all__ = ["SequenceBase"]


def _inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class SequenceBase(PicklableLayer, nn.Module):
    """Base of every layer. Subclasses set ``host`` (the registry name) and ``family`` (which
    backends run it); the paper-named classes fix the scheme with ``class X(Base, scheme=...)``."""

    #: (not a ClassVar: a generic class such as OrthogonalRNN sets its instances' host)
    host: str = ""
    family: ClassVar[str] = ""
    #: the scheme fixed by a paper-named class (``None``: chosen with ``scheme=``)
    scheme_kind: ClassVar[str | None] = None
    #: the class of the host that takes ``scheme=`` (for messages)
    _generic: ClassVar[str] = "build_layer"

    # set by _setup (torch.nn.RNNBase's attributes), _build and _register_learnable
    input_size: int
    hidden_size: int
    num_layers: int
    batch_first: bool
    dropout: float
    bidirectional: bool
    bias: bool
    scheme: Scheme
    carry_momentum: bool
    learn_mu: bool
    learn_epsilon: bool
    _name: str
    _suffixes: list[str]

    def __init_subclass__(cls, host: str | None = None, scheme: str | SchemeSpec | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if host is not None:
            cls.host = host
        if scheme is not None:
            cls.scheme_kind = scheme.kind if isinstance(scheme, SchemeSpec) else canonical_kind(scheme)
            if cls.__dict__.get("__doc__") is None:
                cls.__doc__ = cls._class_doc(SCHEMES[cls.scheme_kind])
            registry.register_layer(cls)

    @classmethod
    def _class_doc(cls, spec: SchemeSpec) -> str:
        """The docstring of a paper-named class (hosts write theirs from the scheme table)."""
        return f"{spec.summary} on the {cls.host} host."

    # ------------------------------------------------------------------ construction
    def _setup(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int,
        batch_first: bool,
        dropout: float,
        bidirectional: bool,
        scheme: str | None,
        mu: float | None,
        epsilon: float | None,
        beta: float | None,
        restart: int | None,
        carry_momentum: bool = False,
    ) -> None:
        """The ``torch.nn`` arguments and the scheme; call first in a host's ``__init__``."""
        self._name = type(self).__name__
        #: whether the state carries the momentum: ``(h, [c,] *momentum fields)`` instead of
        #: torch.nn's ``(h, c)`` / ``h`` (see :mod:`momentumrnn.state`); may be changed later
        self.carry_momentum = bool(carry_momentum)
        _checks.set_recurrent_args(self, input_size, hidden_size, num_layers, batch_first, dropout, bidirectional)
        fixed = type(self).scheme_kind
        if fixed is not None:
            if scheme is not None and canonical_kind(scheme) != fixed:
                raise TypeError(
                    f"{self._name} fixes the scheme to {fixed!r}; use {self._generic}(scheme=...) for another one"
                )
            scheme = fixed
        elif scheme is None:
            scheme = PLAIN
        self.scheme = Scheme.create(scheme, mu=mu, epsilon=epsilon, beta=beta, restart=restart)
        #: backend forced for every direction (``None``: the dispatch table chooses); see
        #: :func:`momentumrnn.backends.run`
        self.backend: str | None = None

    def _build(self, learn_mu: bool, learn_epsilon: bool, device: Device, dtype: torch.dtype | None) -> None:
        """Register the parameters of every layer and direction, the learnable hyper-parameters,
        and initialise them; call last in a host's ``__init__``."""
        factory: Factory = {"device": device, "dtype": dtype}
        D = self.num_directions
        self._suffixes = []
        for layer in range(self.num_layers):
            for direction in range(D):
                sfx = f"_l{layer}" + ("_reverse" if direction == 1 else "")
                self._suffixes.append(sfx)
                in_features = self.input_size if layer == 0 else self._out_features() * D
                self._register_direction(sfx, in_features, factory)
        self._register_learnable(learn_mu, learn_epsilon, factory)
        self.reset_parameters()

    def _register_learnable(self, learn_mu: bool, learn_epsilon: bool, factory: Factory) -> None:
        # One scalar per layer and direction, kept in range: mu = sigmoid(raw) in (0, 1),
        # epsilon = softplus(raw) > 0.
        spec = self.scheme.spec
        if learn_mu and "mu" not in spec.defaults:
            with_mu = ", ".join(k for k, s in SCHEMES.items() if "mu" in s.defaults)
            raise ValueError(f"learn_mu needs a scheme with a constant mu ({with_mu}), not {spec.kind!r}")
        if learn_epsilon and "epsilon" not in spec.defaults:
            raise ValueError(f"learn_epsilon needs a momentum scheme; scheme {spec.kind!r} has no epsilon")
        self.learn_mu, self.learn_epsilon = bool(learn_mu), bool(learn_epsilon)
        for sfx in self._suffixes:
            if self.learn_mu:
                mu0 = min(max(self.scheme.mu, 1e-4), 1 - 1e-4)
                raw = torch.full((), math.log(mu0 / (1 - mu0)), **factory)
                self.register_parameter("mu_raw" + sfx, nn.Parameter(raw))
            if self.learn_epsilon:
                raw = torch.full((), _inverse_softplus(self.scheme.epsilon), **factory)
                self.register_parameter("epsilon_raw" + sfx, nn.Parameter(raw))

    # ------------------------------------------------------------------ host interface
    def _register_direction(self, sfx: str, in_features: int, factory: Factory) -> None:
        raise NotImplementedError

    def reset_parameters(self) -> None:
        raise NotImplementedError

    def _out_features(self) -> int:
        """Output features of one direction."""
        return self.hidden_size

    def _slots(self) -> tuple[dict[str, Slot], dict[str, Slot]]:
        """``({name: Slot} of h (and c), {name: Slot} of the momentum fields v, m, p)``."""
        raise NotImplementedError

    def _direction(self, layer: int, direction: int) -> tuple:
        """The parameters of one layer and direction, in the form the host's backends take."""
        raise NotImplementedError

    def _literal_step(self, p: Any, x: Tensor, hidden: Hidden, mom: MomentumState, hp: HyperParameters) -> StepResult:
        """The host's literal one-step update (the stepwise backend's and the cells'), from the
        parameters ``p`` of :meth:`_direction`."""
        raise NotImplementedError

    def _reference(self) -> Tensor:
        """A parameter whose (real) dtype and device the layer computes in."""
        raise NotImplementedError

    def _check_data(self, name: str, data: object) -> None:
        p = self._reference()
        _checks.check_tensor(name, data, p.dtype, p.device)

    def _prepare_input(self, x: Tensor) -> Tensor:
        return x

    # ------------------------------------------------------------------ common API
    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def output_size(self) -> int:
        """Features of the output (``D * H``; ``D * 2H`` for complex states)."""
        return self._out_features() * self.num_directions

    @property
    def state_names(self) -> tuple[str, ...]:
        """Names of the state's tensors in order: ``("h", "c")`` / ``("h",)`` as ``torch.nn``,
        followed by the momentum fields (e.g. ``("v", "m")``) when ``carry_momentum`` is set."""
        return state_names(self._slots()[0], self.scheme.state_fields, self.carry_momentum)

    def hyper_parameters(self, layer: int = 0, direction: int = 0) -> HyperParameters:
        """``(mu, epsilon)`` of one layer and direction: floats, or 0-d tensors when learnable."""
        sfx = f"_l{layer}" + ("_reverse" if direction == 1 else "")
        mu = torch.sigmoid(getattr(self, "mu_raw" + sfx)) if self.learn_mu else self.scheme.mu
        eps = F.softplus(getattr(self, "epsilon_raw" + sfx)) if self.learn_epsilon else self.scheme.epsilon
        return mu, eps

    def flatten_parameters(self) -> None:
        """No-op, for API compatibility with ``torch.nn.RNNBase``."""

    def orthogonal_parameters(self) -> list[Tensor]:
        """Parameters to train with the orthogonal learning rate (``lr_orth``): none here."""
        return []

    def on_optimizer_step(self) -> None:
        """Call after every optimizer step (hosts with a step-wise update override it)."""

    def _repr_layout(self) -> str:
        s = ", batch_first=True" if self.batch_first else ""
        s += f", dropout={self.dropout}" if self.dropout else ""
        return s + (", bidirectional=True" if self.bidirectional else "")

    def _repr_learned(self) -> str:
        return (
            (", learn_mu=True" if self.learn_mu else "")
            + (", learn_epsilon=True" if self.learn_epsilon else "")
            + (", carry_momentum=True" if self.carry_momentum else "")
        )

    # ------------------------------------------------------------------ forward
    def _parse_state(
        self,
        state: object,
        batch: int,
        batched: bool,
    ) -> tuple[dict[str, Tensor | None], MomentumState]:
        hidden, momentum = self._slots()
        LD = self.num_layers * self.num_directions
        lead = (LD, batch) if batched else (LD,)
        p = self._reference()
        momentum = {k: v for k, v in momentum.items() if k in self.scheme.state_fields}
        return parse_state(
            self._name,
            state,
            hidden,
            momentum,
            self.scheme,
            self.carry_momentum,
            lead,
            None if batched else 1,
            p.dtype,
            p.device,
        )

    @overload
    def forward(self, input: Tensor, hx: StateInput | None = None) -> tuple[Tensor, State]: ...
    @overload
    def forward(self, input: PackedSequence, hx: StateInput | None = None) -> tuple[PackedSequence, State]: ...

    def forward(
        self,
        input: Tensor | PackedSequence,
        hx: StateInput | None = None,
    ) -> tuple[Tensor | PackedSequence, State]:
        """Run the layer: ``output, h_n = layer(input, hx)`` as ``torch.nn`` (see the class
        docstring for shapes). Without ``carry_momentum`` the momentum starts at zero at every
        call; with it, ``hx`` and the returned state carry it.

        Under ``torch.autocast`` the layer computes in its parameters' dtype (autocast's float32
        policy for numerically sensitive operations) and returns that dtype; an input or state in
        the autocast dtype is accepted and cast up."""
        device_type = self._reference().device.type
        if torch.is_autocast_enabled(device_type):
            dtype = self._reference().dtype
            with torch.autocast(device_type, enabled=False):
                return self._forward(
                    autocast_inputs(input, device_type, dtype), autocast_inputs(hx, device_type, dtype)
                )
        return self._forward(input, hx)

    def _forward(
        self,
        input: Tensor | PackedSequence,
        state: object,
    ) -> tuple[Tensor | PackedSequence, State]:
        _checks.check_precision(self._name, self.scheme, self._reference().dtype)
        if isinstance(input, PackedSequence):
            self._check_data("input (PackedSequence.data)", input.data)
            if input.data.dim() != 2 or input.data.shape[-1] != self.input_size:
                raise ValueError(
                    f"input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                    f"got {input.data.shape[-1]}"
                )
            x, lengths = pad_packed_sequence(input)
            lengths = lengths.to(x.device)
            batched = True
        else:
            self._check_data("input", input)
            if input.dim() not in (2, 3):
                raise ValueError(
                    f"{self._name}: expected input to be 2D (unbatched: L x input_size) or 3D "
                    f"({'N x L' if self.batch_first else 'L x N'} x input_size), got {input.dim()}D "
                    f"with shape {tuple(input.shape)}"
                )
            if input.shape[-1] != self.input_size:
                raise ValueError(
                    f"input.size(-1) must be equal to input_size. Expected {self.input_size}, got {input.shape[-1]}"
                )
            batched = input.dim() == 3
            if not batched:
                x = input.unsqueeze(1)
            elif self.batch_first:
                x = input.transpose(0, 1)
            else:
                x = input
            lengths = None
            if x.shape[0] == 0:
                raise ValueError("input has sequence length 0; expected at least one time step")
        x = self._prepare_input(x)
        hidden0, mom0 = self._parse_state(state, x.shape[1], batched)
        seq = SeqInfo()
        if lengths is not None:
            valid = (torch.arange(x.shape[0], device=x.device).unsqueeze(1) < lengths.unsqueeze(0)).unsqueeze(2)
            seq = SeqInfo(lengths, lengths - 1, valid)

        D = self.num_directions
        # the final momentum is returned only when carried (its stacking is not free)
        fields = self.scheme.state_fields if self.carry_momentum else ()
        finals: dict[str, list[Tensor]] = {name: [] for name in hidden0}
        moms: dict[str, list[Tensor]] = {name: [] for name in fields}
        layer_input = x
        for layer in range(self.num_layers):
            outs = []
            for direction in range(D):
                i = layer * D + direction
                h0 = {name: None if t is None else t[i] for name, t in hidden0.items()}
                m0 = MomentumState(*(None if t is None else t[i] for t in mom0))
                xd = layer_input if direction == 0 else reverse_within(layer_input, lengths)
                out, fin, mom = backends.run(
                    self, self._direction(layer, direction), xd, seq, h0, m0, self.hyper_parameters(layer, direction)
                )
                outs.append(out if direction == 0 else reverse_within(out, lengths))
                for name in finals:
                    finals[name].append(fin[name])
                for name in fields:
                    moms[name].append(getattr(mom, name))
            layer_input = outs[0] if D == 1 else torch.cat(outs, 2)
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, True)
        output = layer_input
        result: Tensor | PackedSequence

        hidden_slots, mom_slots = self._slots()
        hidden = {name: to_external(torch.stack(v), hidden_slots[name]) for name, v in finals.items()}
        momentum = {
            name: torch.stack(v) if name == "step" else to_external(torch.stack(v), mom_slots[name])
            for name, v in moms.items()
        }
        if isinstance(input, PackedSequence):
            assert lengths is not None  # (from the packed input)
            sorted_out = output.index_select(1, input.sorted_indices) if input.sorted_indices is not None else output
            sorted_len = lengths[input.sorted_indices] if input.sorted_indices is not None else lengths
            data = pack_padded_sequence(sorted_out, sorted_len.cpu(), enforce_sorted=True).data
            result = PackedSequence(data, input.batch_sizes, input.sorted_indices, input.unsorted_indices)
        elif not batched:
            result = output.squeeze(1)
            hidden = {name: t.squeeze(1) for name, t in hidden.items()}
            momentum = {name: t.squeeze(1) for name, t in momentum.items()}
        else:
            result = output.transpose(0, 1) if self.batch_first else output
        return result, pack_state(hidden, MomentumState(**momentum), fields, self.carry_momentum)
