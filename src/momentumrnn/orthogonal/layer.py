"""Orthogonal / unitary momentum RNN layers (SPEC 3, "Orthogonal RNN").

``h_t = modReLU(h_{t-1} B + d_t)`` with ``B = weight_hh_l0`` orthogonal (unitary for scuRNN),
``u_t = W_ih x_t`` (no input bias), ``d_t`` the drive of the momentum scheme (SPEC 2: none, heavy
ball, Adam, RMSProp, scheduled-restart heavy ball) and a learned modReLU bias.

How a forward runs (per layer and direction): ``B`` is evaluated once through its
parametrization; the drive of the whole sequence is computed at once (:mod:`.drives`); the
recurrence is one loop with a hand-written backward (:mod:`.recurrence`).

scuRNN: the hidden state is complex. The layer's output is the paper's real read-out
``[Re h, Im h]`` (``2 * hidden_size`` features per direction, what scuRNN's output matrix
consumes), the returned state ``h`` and momentum ``v`` are complex tensors. The input is real
(``complex_input=True`` takes a complex one instead); ``W_ih`` is complex.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .. import _checks
from ..layers import RNNState, _reverse_within
from ..schemes import MomentumState, Scheme, canonical_kind
from .drives import _at_last_step, scheme_drive
from .initializers import get_initializer, torus_init_
from .parametrizations import (
    ComplexView,
    DynamicExpm,
    OrthogonalParametrization,
    canonical_parametrization,
    check_K,
    make_parametrization,
    register,
)
from .recurrence import modrelu_recurrence

__all__ = [
    "OrthogonalRNN",
    "HOSTS",
    "ORTHOGONAL_SCHEMES",
    "ORTHOGONAL_LAYER_NAMES",
    "build_orthogonal_layer",
    "layer_class",
]

#: host name -> parametrization
HOSTS = {"exprnn": "expm", "dtriv": "dtriv", "scornn": "scaled_cayley", "scurnn": "unitary_scaled_cayley"}
_HOST_OF = {v: k for k, v in HOSTS.items()}
ORTHOGONAL_SCHEMES = ("none", "heavy_ball", "adam", "rmsprop", "restart")


def _check_scheme(kind: str) -> str:
    kind = canonical_kind(kind)
    if kind not in ORTHOGONAL_SCHEMES:
        raise ValueError(f"scheme {kind!r} is not available on orthogonal hosts (Nesterov depends on h_(t-1), "
                         f"which the orthogonal cell does not support); use one of {', '.join(ORTHOGONAL_SCHEMES)} "
                         "-- 'restart' is the scheduled-restart heavy ball the authors used (SRDTRIV)")
    return kind


class OrthogonalRNN(nn.Module):
    """Orthogonal / unitary RNN with a momentum scheme.

    Args:
        input_size, hidden_size, num_layers, batch_first, dropout, bidirectional, device, dtype:
            as in ``torch.nn.RNN`` (``dtype`` real: scuRNN's complex tensors follow it).
        bias: must be False (the input map has no bias; the modReLU bias is always there).
        parametrization: ``"expm"`` (expRNN), ``"dtriv"``, ``"scaled_cayley"`` (scoRNN) or
            ``"unitary_scaled_cayley"`` (scuRNN); host names are accepted. Fixed by the paper-named
            classes.
        scheme: ``"none"``, ``"heavy_ball"``, ``"adam"``, ``"rmsprop"`` or ``"restart"``. Fixed by
            the paper-named classes.
        mu, epsilon, beta, restart: the scheme's hyper-parameters (SPEC 2; defaults as in the core).
        K: DTRIV only: optimizer steps between base changes, a positive int or ``math.inf``
            (default 100, the authors' default).
        num_negative: scoRNN only: number of ``-1`` entries of the scaling diagonal ``D``
            (default ``hidden_size // 10``, scoRNN's permuted-MNIST choice).
        init: initializer of the skew matrix: ``"cayley"`` (the authors' default), ``"henaff"``,
            ``"torus"`` (uniform rotation angles of ``B``), or a callable filling an ``(H, H)``
            tensor with a skew-symmetric matrix.
        complex_input: scuRNN only: the first layer takes complex input.

    Inputs: ``input, state``
        * **input**: ``(L, N, H_in)``, ``(N, L, H_in)`` with ``batch_first``, unbatched
          ``(L, H_in)`` or a ``PackedSequence``.
        * **state**: ``RNNState(h, momentum)`` from a previous call (resumes exactly), a tensor
          ``h`` ``(D * num_layers, N, H)`` (complex for scuRNN), or None (zeros).

    Outputs: ``output, state``
        * **output**: ``(L, N, D * H)`` (``D * 2H`` for scuRNN: ``[Re h, Im h]`` per direction).
        * **state**: ``RNNState(h, momentum)``; momentum fields ``(D * num_layers, N, H)``
          (``v`` complex for scuRNN), ``step`` ``(D * num_layers, N)``.

    Equivalent loop for one layer and direction::

        for t in range(T):
            u = W_ih @ x[t]
            d = <scheme>(u)          # none: u; heavy ball: v = mu v + epsilon u; ...
            h = modReLU(h @ B + d)   # B = weight_hh_l0, evaluated once per forward
    """

    _fixed_host: Optional[str] = None
    _fixed_kind: Optional[str] = None

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = False,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device=None,
        dtype=None,
        *,
        parametrization: Optional[str] = None,
        scheme: Optional[str] = None,
        mu: Optional[float] = None,
        epsilon: Optional[float] = None,
        beta: Optional[float] = None,
        restart: Optional[int] = None,
        K=None,
        num_negative: Optional[int] = None,
        init="cayley",
        complex_input: bool = False,
    ):
        super().__init__()
        cls_name = type(self).__name__
        if self._fixed_host is not None:
            if parametrization is not None and canonical_parametrization(parametrization) != HOSTS[self._fixed_host]:
                raise TypeError(f"{cls_name} fixes the parametrization to {HOSTS[self._fixed_host]!r}; "
                                "use OrthogonalRNN(parametrization=...) for another one")
            parametrization = HOSTS[self._fixed_host]
        elif parametrization is None:
            parametrization = "expm"
        if self._fixed_kind is not None:
            if scheme is not None and canonical_kind(scheme) != self._fixed_kind:
                raise TypeError(f"{cls_name} fixes the scheme to {self._fixed_kind!r}; "
                                "use OrthogonalRNN(scheme=...) for another one")
            scheme = self._fixed_kind
        elif scheme is None:
            scheme = "none"
        self._name = cls_name
        self.parametrization = canonical_parametrization(parametrization)
        self.host = _HOST_OF[self.parametrization]
        self.scheme = Scheme.create(_check_scheme(scheme), mu=mu, epsilon=epsilon, beta=beta, restart=restart)
        _checks.set_recurrent_args(self, input_size, hidden_size, num_layers, batch_first, dropout, bidirectional)
        if bias:
            raise ValueError("orthogonal RNNs have no input bias (W_ih x_t enters the momentum as is); the "
                             "modReLU bias is always learned. Pass bias=False or leave it out")
        self.bias = False
        if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
            raise TypeError(f"dtype must be a real floating dtype (complex tensors of scuRNN follow it), got {dtype}")
        self.unitary = self.parametrization == "unitary_scaled_cayley"
        if complex_input and not self.unitary:
            raise ValueError("complex_input applies to the scuRNN host (unitary_scaled_cayley) only")
        self.complex_input = bool(complex_input)
        if K is not None:
            K = check_K(K)
            if self.parametrization != "dtriv":
                raise ValueError(f"K (dynamic trivialization) applies to the DTRIV host only, not {self.parametrization!r}")
        elif self.parametrization == "dtriv":
            K = 100
        if num_negative is not None and self.parametrization != "scaled_cayley":
            raise ValueError(f"num_negative applies to the scoRNN host (scaled_cayley) only, not {self.parametrization!r}")
        self.init = init
        self._init_fn = get_initializer(init)

        factory = {"device": device, "dtype": dtype}
        H = self.hidden_size
        self._N = 2 * H if self.unitary else H
        D = self.num_directions
        self._suffixes = []
        for layer in range(self.num_layers):
            for direction in range(D):
                sfx = f"_l{layer}" + ("_reverse" if direction == 1 else "")
                self._suffixes.append(sfx)
                in_features = self.input_size if layer == 0 else self._N * D
                if self.unitary:
                    self.register_parameter("weight_ih" + sfx, nn.Parameter(torch.empty(H, in_features, 2, **factory)))
                    register(self, "weight_ih" + sfx, ComplexView())
                else:
                    self.register_parameter("weight_ih" + sfx, nn.Parameter(torch.empty(H, in_features, **factory)))
                self.register_parameter("weight_hh" + sfx, nn.Parameter(torch.zeros(H, H, **factory)))
                param = make_parametrization(self.parametrization, H, K=K, num_negative=num_negative, **factory)
                register(self, "weight_hh" + sfx, param)
                self.register_parameter("modrelu_bias" + sfx, nn.Parameter(torch.empty(H, **factory)))
        self.num_negative = getattr(self.parametrizations["weight_hh_l0"][0], "num_negative", None)
        self.reset_parameters()

    # ------------------------------------------------------------------ parameters
    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def output_size(self) -> int:
        """Features of the output: ``D * H`` (``D * 2H`` for scuRNN)."""
        return self._N * self.num_directions

    @property
    def K(self):
        """DTRIV: optimizer steps between base changes (int or ``math.inf``); None for the other
        hosts. Assignable."""
        if self.parametrization != "dtriv":
            return None
        return self._parametrization("_l0").K

    @K.setter
    def K(self, value):
        if self.parametrization != "dtriv":
            raise ValueError(f"K (dynamic trivialization) applies to the DTRIV host only, not {self.parametrization!r}")
        value = check_K(value)
        for sfx in self._suffixes:
            self._parametrization(sfx).K = value

    def _parametrization(self, sfx: str) -> OrthogonalParametrization:
        return self.parametrizations["weight_hh" + sfx][0]

    def reset_parameters(self) -> None:
        """The authors' initialization: ``W_ih`` Kaiming-normal (ReLU gain; complex: each part with
        half the variance), modReLU bias uniform in ``[-0.01, 0.01]``, the skew matrix from
        ``init``; DTRIV starts from ``base = B(init)``, ``P = 0`` (the authors' first base change)."""
        H = self.hidden_size
        for sfx in self._suffixes:
            with torch.no_grad():
                if self.unitary:
                    w = self.parametrizations["weight_ih" + sfx].original
                    fan_in = w.shape[1]
                    w.normal_(0.0, math.sqrt(1.0 / fan_in))
                else:
                    w = getattr(self, "weight_ih" + sfx)
                    nn.init.kaiming_normal_(w, nonlinearity="relu")
                getattr(self, "modrelu_bias" + sfx).uniform_(-0.01, 0.01)
                param = self._parametrization(sfx)
                P = self.parametrizations["weight_hh" + sfx].original
                S = torch.zeros(H, H, dtype=torch.float64, device=P.device)
                if self._init_fn is torus_init_ and self.parametrization in ("scaled_cayley", "unitary_scaled_cayley"):
                    torus_init_(S, map="cayley")
                else:
                    self._init_fn(S)
                if not torch.allclose(S, -S.mT):
                    raise ValueError("the skew initializer must fill the matrix with a skew-symmetric one")
                param.init_from_skew_(P, S.to(P.dtype))
                if self.unitary:
                    param.theta.uniform_(0.0, 2 * math.pi)

    def orthogonal_parameters(self) -> list:
        """The parameters of the orthogonal / unitary maps (skew parameters, scuRNN's ``theta``):
        train them with their own learning rate (``lr_orth``)."""
        params = []
        for sfx in self._suffixes:
            params.extend(self.parametrizations["weight_hh" + sfx].parameters())
        return params

    def on_optimizer_step(self) -> None:
        """Call after every optimizer step: DTRIV changes its base every ``K`` steps (a no-op for
        the other parametrizations). Use this or :class:`DynamicTrivialization`, not both."""
        for sfx in self._suffixes:
            param = self._parametrization(sfx)
            if isinstance(param, DynamicExpm):
                param.optimizer_step(self.parametrizations["weight_hh" + sfx].original)

    def flatten_parameters(self) -> None:
        """No-op, for API compatibility with ``torch.nn.RNNBase``."""

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, parametrization={self.parametrization!r}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        s += f", scheme={self.scheme}"
        if self.K is not None:
            s += f", K={self.K}"
        if self.num_negative is not None:
            s += f", num_negative={self.num_negative}"
        if self.complex_input:
            s += ", complex_input=True"
        return s

    # ------------------------------------------------------------------ checks
    def _real_dtype(self) -> torch.dtype:
        return self.modrelu_bias_l0.dtype

    def _check_data(self, name: str, data) -> None:
        if not isinstance(data, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(data).__name__}")
        real = self._real_dtype()
        if self.complex_input:
            if not data.is_complex():
                raise TypeError(f"{self._name} was built with complex_input=True and expects complex {name}, "
                                f"got real dtype {data.dtype}")
            if data.real.dtype != real:
                raise TypeError(f"{name} has dtype {data.dtype} but the layer's parameters are {real}")
        elif data.is_complex():
            hint = (" (build it with complex_input=True to take complex input)" if self.unitary
                    else "; only the scuRNN host takes complex input")
            raise TypeError(f"{self._name} expects real {name}, got complex dtype {data.dtype}{hint}")
        else:
            _checks.check_tensor(name, data, real, self.modrelu_bias_l0.device)
        if data.device != self.modrelu_bias_l0.device:
            raise ValueError(f"{name} is on device {data.device} but the layer's parameters are on "
                             f"{self.modrelu_bias_l0.device}")

    def _state_tensor(self, name: str, value, lead: tuple, batched: bool, complex_: bool, width: int):
        if value is None:
            return None
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(value).__name__}")
        real = self._real_dtype()
        if complex_ and not value.is_complex():
            raise TypeError(f"{name} must be complex for the scuRNN host (complex hidden state), got {value.dtype}")
        if not complex_ and value.is_complex():
            raise TypeError(f"{name} must be real for this layer, got complex dtype {value.dtype}")
        if (value.real.dtype if value.is_complex() else value.dtype) != real:
            raise TypeError(f"{name} has dtype {value.dtype} but the layer's parameters are {real}")
        if value.device != self.modrelu_bias_l0.device:
            raise ValueError(f"{name} is on device {value.device} but the layer's parameters are on "
                             f"{self.modrelu_bias_l0.device}")
        _checks.check_shape(name, value, lead + (width,))
        if not batched:
            value = value.unsqueeze(1)
        if complex_:
            value = torch.cat([value.real, value.imag], -1)
        return value

    def _parse_state(self, state, batch: int, batched: bool):
        """``(h0 (LD, B, N) or None, MomentumState)`` in the layer's internal (pair) format."""
        if state is None:
            return None, MomentumState()
        momentum = None
        if isinstance(state, Tensor):
            h = state
        elif isinstance(state, MomentumState):
            raise TypeError("state must be h or (h, momentum), got a bare MomentumState")
        elif isinstance(state, (tuple, list)) and len(state) in (1, 2):
            h = state[0]
            momentum = state[1] if len(state) == 2 else None
        else:
            raise TypeError(f"{self._name} state must be a tensor h or (h, momentum), got {type(state).__name__}"
                            + (f" of length {len(state)}" if isinstance(state, (tuple, list)) else ""))
        LD, H = self.num_layers * self.num_directions, self.hidden_size
        lead = (LD, batch) if batched else (LD,)
        h0 = self._state_tensor("h0 (state h)", h, lead, batched, self.unitary, H)
        if momentum is None:
            return h0, MomentumState()
        momentum = _checks.check_momentum_state(momentum, self.scheme, lead, batched, self.modrelu_bias_l0.device)
        return h0, MomentumState(
            v=self._state_tensor("momentum v", momentum.v, lead, batched, self.unitary, H),
            m=self._state_tensor("momentum m", momentum.m, lead, batched, False, H),
            step=momentum.step,
        )

    # ------------------------------------------------------------------ forward
    def _input_weight(self, layer: int, sfx: str) -> Tensor:
        """The real ``(N, I')`` matrix with ``u = x w^T`` in the internal (pair) format."""
        w = getattr(self, "weight_ih" + sfx)
        if not self.unitary:
            return w
        if layer == 0 and self.complex_input:  # x = [Re x, Im x]
            return torch.cat([torch.cat([w.real, -w.imag], 1), torch.cat([w.imag, w.real], 1)], 0)
        return torch.cat([w.real, w.imag], 0)

    def _recurrent_weight(self, sfx: str) -> Tensor:
        """``B`` (evaluated once); for scuRNN its real and imaginary parts ``(2, H, H)``."""
        B = getattr(self, "weight_hh" + sfx)
        if not self.unitary:
            return B
        return torch.stack([B.real, B.imag])

    def forward(self, input, state=None):
        """Run the layer. Returns ``(output, RNNState(h, momentum))``."""
        packed = isinstance(input, PackedSequence)
        if packed:
            self._check_data("input (PackedSequence.data)", input.data)
            if input.data.dim() != 2 or input.data.shape[-1] != self.input_size:
                raise ValueError(f"input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                                 f"got {input.data.shape[-1]}")
            x, lengths = pad_packed_sequence(input)
            lengths = lengths.to(x.device)
            batched = True
        else:
            self._check_data("input", input)
            if input.dim() not in (2, 3):
                raise ValueError(f"{self._name}: expected input to be 2D (unbatched: L x input_size) or 3D "
                                 f"({'N x L' if self.batch_first else 'L x N'} x input_size), got {input.dim()}D "
                                 f"with shape {tuple(input.shape)}")
            if input.shape[-1] != self.input_size:
                raise ValueError(f"input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                                 f"got {input.shape[-1]}")
            batched = input.dim() == 3
            if not batched:
                x = input.unsqueeze(1)
            else:
                x = input.transpose(0, 1) if self.batch_first else input
            lengths = None
        if x.shape[0] == 0:
            raise ValueError("input has sequence length 0; expected at least one time step")
        if x.shape[1] == 0:
            raise ValueError("input has batch size 0; expected at least one sequence")
        if self.complex_input:
            x = torch.cat([x.real, x.imag], -1)
        B = x.shape[1]
        h0, mom0 = self._parse_state(state, B, batched)
        last = None if lengths is None else lengths - 1
        valid = None
        if lengths is not None:
            valid = (torch.arange(x.shape[0], device=x.device).unsqueeze(1) < lengths.unsqueeze(0)).unsqueeze(2)

        D = self.num_directions
        h_n = []
        mom_n = {name: [] for name in self.scheme.state_fields}
        layer_input = x
        for layer in range(self.num_layers):
            outs = []
            for direction in range(D):
                i = layer * D + direction
                pick = lambda t: None if t is None else t[i]  # noqa: E731
                out, hT, momT = self._run_direction(
                    layer, direction, layer_input, lengths, last, valid, pick(h0),
                    MomentumState(*(pick(t) for t in mom0)))
                outs.append(out)
                h_n.append(hT)
                for name in mom_n:
                    mom_n[name].append(getattr(momT, name))
            layer_input = outs[0] if D == 1 else torch.cat(outs, 2)
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, True)
        output = layer_input

        h_n = self._to_complex(torch.stack(h_n))
        momentum = MomentumState(**{name: self._to_complex(torch.stack(v)) if name == "v" else torch.stack(v)
                                    for name, v in mom_n.items()})
        if packed:
            sorted_out = output.index_select(1, input.sorted_indices) if input.sorted_indices is not None else output
            sorted_len = lengths[input.sorted_indices] if input.sorted_indices is not None else lengths
            data = pack_padded_sequence(sorted_out, sorted_len.cpu(), enforce_sorted=True).data
            output = PackedSequence(data, input.batch_sizes, input.sorted_indices, input.unsorted_indices)
        elif not batched:
            output = output.squeeze(1)
            h_n = h_n.squeeze(1)
            momentum = MomentumState(*(None if t is None else t.squeeze(1) for t in momentum))
        elif self.batch_first:
            output = output.transpose(0, 1)
        return output, RNNState(h_n, momentum)

    def _to_complex(self, t: Tensor) -> Tensor:
        if not self.unitary:
            return t
        H = self.hidden_size
        return torch.complex(t[..., :H], t[..., H:])

    def _run_direction(self, layer, direction, x, lengths, last, valid, h0, mom0):
        sfx = f"_l{layer}" + ("_reverse" if direction == 1 else "")
        w_in = self._input_weight(layer, sfx)
        W = self._recurrent_weight(sfx)
        bias = getattr(self, "modrelu_bias" + sfx)
        if direction == 1:
            x = _reverse_within(x, lengths)
        drive = scheme_drive(self.scheme, x, w_in, self.scheme.mu, self.scheme.epsilon, mom0, last, self.unitary)
        if h0 is None:
            h0 = x.new_zeros(x.shape[1], self._N)
        hs = modrelu_recurrence(drive.dense, h0, W, bias, self.unitary, drive.factors)
        hT = _at_last_step(hs, last)
        out = hs if valid is None else torch.where(valid, hs, 0)
        if direction == 1:
            out = _reverse_within(out, lengths)
        return out, hT, drive.momentum


# ---------------------------------------------------------------------- paper-named classes
#: paper name -> (host, scheme kind, one-line description)
ORTHOGONAL_LAYER_NAMES = {}

_HOST_TITLES = {"exprnn": "ExpRNN", "dtriv": "DTRIV", "scornn": "ScoRNN", "scurnn": "ScuRNN"}
_HOST_SUMMARY = {
    "exprnn": "expRNN (B = expm(A), Lezcano-Casado & Martinez-Rubio 2019)",
    "dtriv": "DTRIV (B = base expm(A), base changed every K optimizer steps)",
    "scornn": "scoRNN (B = (I + A)^-1 (I - A) D, fixed +-1 diagonal D)",
    "scurnn": "scuRNN (unitary scaled Cayley, trainable unit-modulus diagonal, complex state)",
}
_KIND_PATTERN = {
    "none": ("{H}", "{S}"),
    "heavy_ball": ("Momentum{H}", "heavy-ball momentum (v = mu v + epsilon u) on {S}"),
    "adam": ("Adam{H}", "Adam momentum (v / sqrt(m + 1e-16)) on {S}"),
    "rmsprop": ("RMSProp{H}", "RMSProp momentum (epsilon u / sqrt(m + 1e-16)) on {S}"),
    "restart": ("SR{H}", "scheduled-restart heavy ball (mu_k = (k-1)/(k+2)) on {S}"),
}


def _define(name: str, host: str, kind: str, summary: str) -> type:
    doc = f"{summary[0].upper()}{summary[1:]}.\n\n    Same arguments as :class:`OrthogonalRNN` without " \
          "``parametrization`` and ``scheme``.\n" + OrthogonalRNN.__doc__.split("\n", 1)[1]
    cls = type(name, (OrthogonalRNN,), {"__doc__": doc, "_fixed_host": host, "_fixed_kind": kind,
                                        "__module__": __name__})
    ORTHOGONAL_LAYER_NAMES[name] = (host, kind, summary)
    return cls


for _host, _title in _HOST_TITLES.items():
    for _kind, (_pattern, _summary) in _KIND_PATTERN.items():
        _name = _pattern.format(H=_title)
        globals()[_name] = _define(_name, _host, _kind, _summary.format(S=_HOST_SUMMARY[_host]))
        __all__.append(_name)
del _host, _title, _kind, _pattern, _summary, _name


def layer_class(name: str) -> type:
    """The class of a paper name (``"MomentumDTRIV"``, ``"AdamExpRNN"``, ``"SRScoRNN"``, ``"ScuRNN"``...)."""
    if name not in ORTHOGONAL_LAYER_NAMES:
        raise ValueError(f"unknown orthogonal layer {name!r}; expected one of {', '.join(ORTHOGONAL_LAYER_NAMES)}")
    return globals()[name]


def build_orthogonal_layer(host: str, scheme: str, input_size: int, hidden_size: int, **kwargs) -> OrthogonalRNN:
    """Build an orthogonal layer from a host (``"exprnn"``, ``"dtriv"``, ``"scornn"``, ``"scurnn"``)
    and a scheme kind (``"none"``, ``"heavy_ball"``, ``"adam"``, ``"rmsprop"``, ``"restart"``)."""
    if not isinstance(host, str) or host.lower() not in HOSTS:
        raise ValueError(f"unknown orthogonal host {host!r}; expected one of {', '.join(HOSTS)}")
    host, kind = host.lower(), _check_scheme(scheme)
    for name, (h, k, _) in ORTHOGONAL_LAYER_NAMES.items():
        if h == host and k == kind:
            return globals()[name](input_size, hidden_size, **kwargs)
    raise AssertionError("unreachable")  # every host x kind is defined above
