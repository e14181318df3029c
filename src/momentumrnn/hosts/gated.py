"""Gated hosts: ``torch.nn``'s RNN, LSTM and GRU cells with a momentum scheme on the input drive
(docs/equations.md, section 3). Drop-in replacements for ``torch.nn.RNN`` / ``LSTM`` / ``GRU``:
the same constructor arguments in the same order (``nonlinearity`` fourth on the RNN host;
``proj_size``: LSTM with projections) and parameter names (``weight_ih_l0``, ``weight_hh_l0``,
``bias_ih_l0``, ``bias_hh_l0``, ``weight_hr_l0``, ``_reverse`` for the second direction).
"""

from __future__ import annotations

import math
import textwrap
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import _checks, registry
from ..backends.native import GatedParams
from ..backends.scan import RealStep
from ..schemes import HYPER_PARAMETERS, MomentumState, Scheme, SchemeSpec
from ..sequence import SequenceBase
from ..state import Slot, state_names

if TYPE_CHECKING:
    from torch.types import Device

    from .._typing import Factory, Hidden, HyperParameters, StepResult

__all__ = ["GATES", "MomentumRNNBase", "gated_step"]

#: gates per host: the input drive has ``G * hidden_size`` entries
GATES = {"rnn": 1, "lstm": 4, "gru": 3}

registry.register_host("rnn", "RNN", "gated", "torch.nn.RNN cell")
registry.register_host("lstm", "LSTM", "gated", "torch.nn.LSTM cell")
registry.register_host("gru", "GRU", "gated", "torch.nn.GRU cell")


def gated_step(
    host: str,
    nonlinearity: str | None,
    p: GatedParams,
    x: Tensor,
    hidden: Hidden,
    mom: MomentumState,
    scheme: Scheme,
    hp: HyperParameters,
) -> StepResult:
    """The literal step of a gated cell with its scheme: ``(h, {"h": h[, "c": c]}, momentum)``.
    ``x`` ``(B, I)``; ``hidden`` values may be ``None`` (zeros). An LSTM with projections
    (``p.w_hr``) outputs ``h = W_hr (o * tanh(c))``, and ``W_hh`` reads that projected ``h``."""
    H = p.w_hh.shape[1]  # the width of h (proj_size with projections)
    h = hidden["h"] if hidden["h"] is not None else x.new_zeros(x.shape[0], H)
    u = F.linear(x, p.w_ih, p.b_ih)  # input drive: b_ih sits inside the momentum
    r = F.linear(h, p.w_hh, p.b_hh)  # recurrent part
    drive, advance = scheme.step(u, mom, *hp)
    if host == "rnn":
        pre = drive.combine(r)
        h = torch.tanh(pre) if nonlinearity == "tanh" else torch.relu(pre)
        return h, {"h": h}, advance()
    if host == "lstm":
        c = hidden["c"] if hidden["c"] is not None else x.new_zeros(x.shape[0], p.w_hh.shape[0] // 4)
        i, f, g, o = drive.combine(r).chunk(4, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        if p.w_hr is not None:
            h = F.linear(h, p.w_hr)
        return h, {"h": h, "c": c}, advance()
    reset, z = torch.sigmoid(drive.combine(r[..., : 2 * H], slice(0, 2 * H))).chunk(2, -1)
    n = torch.tanh(drive.combine(reset * r[..., 2 * H :], slice(2 * H, 3 * H)))
    h = (1 - z) * n + z * h
    return h, {"h": h}, advance()


_CELL_LOOPS = {
    "rnn": "h = tanh(d + W_hh h + b_hh)",
    "lstm": "i, f, g, o = (d + W_hh h + b_hh).chunk(4)\n"
    "c = sigmoid(f) * c + sigmoid(i) * tanh(g); h = sigmoid(o) * tanh(c)"
    "\nh = W_hr @ h  # proj_size > 0 only",
    "gru": "r, z = sigmoid(d[:2H] + W_h(r,z) h + b_h(r,z)).chunk(2)\n"
    "n = tanh(d[2H:] + r * (W_hn h + b_hn)); h = (1 - z) * n + z * h",
}

_DOC = r"""{summary}.

    A drop-in replacement for ``torch.nn.{torch_name}`` (docs/equations.md).

    Args:
{torch_args}{nonlinearity_doc}{proj_doc}
{hp_doc}        learn_mu, learn_epsilon: make ``mu`` / ``epsilon`` learnable, one scalar per layer and
            direction, kept in range (``mu = sigmoid(mu_raw_l0)``, ``epsilon = softplus(...)``).
        init: ``"torch"`` (default, ``torch.nn``'s) or ``"authors"`` (orthogonal ``W_ih``, identity
            blocks in ``W_hh``, forget biases ``forget_bias``, other biases 0; with projections
            the ``W_hh`` blocks and ``W_hr`` are rectangular identities, ``torch.nn.init.eye_``).
        forget_bias: forget-gate bias of the authors' initialisation (1.0; TIMIT used -4.0).
        carry_momentum: carry the momentum in the state: ``{carried}`` instead of ``torch.nn``'s
            {native_state} (``layer.state_names``; may be set after construction too).

    Inputs: ``input, hx`` (``torch.nn.{torch_name}``'s contract)
        * **input**: ``(L, N, H_in)``, ``(N, L, H_in)`` with ``batch_first=True``, unbatched
          ``(L, H_in)``, or a ``PackedSequence``.
        * **hx** (optional): ``torch.nn``'s {native_state} ``(D * num_layers, N, H_out)``, or
          ``None`` (zeros). The momentum starts at zero at every call, as the authors' layers do
          when no velocity is passed.{carry_in}

    Outputs: ``output, {native_out}``
        * **output**: exactly as ``torch.nn.{torch_name}``: ``(L, N, D * H_out)`` (``H_out``:
          ``proj_size`` if it is > 0, else ``hidden_size``).
        * **{native_out}**: as ``torch.nn.{torch_name}``: ``h_n`` ``(D * num_layers, N, H_out)``{c_doc}.
          With ``carry_momentum=True``: ``{carried}``{fields_doc}.

    Equivalent to this loop for one layer and direction (``u_t = W_ih x_t + b_ih``,
    ``r = W_hh h + b_hh``)::

        for t in range(T):
            u = W_ih @ x[t] + b_ih
{loop}
"""


#: torch.nn's constructor arguments in their positional order, per host
_TORCH_ARGS = {
    "lstm": (
        "input_size",
        "hidden_size",
        "num_layers",
        "bias",
        "batch_first",
        "dropout",
        "bidirectional",
        "proj_size",
        "device",
        "dtype",
    ),
    "gru": (
        "input_size",
        "hidden_size",
        "num_layers",
        "bias",
        "batch_first",
        "dropout",
        "bidirectional",
        "proj_size",
        "device",
        "dtype",
    ),
    "rnn": (
        "input_size",
        "hidden_size",
        "num_layers",
        "nonlinearity",
        "bias",
        "batch_first",
        "dropout",
        "bidirectional",
        "proj_size",
        "device",
        "dtype",
    ),
}
_PROJ_DOC = {
    "lstm": "\n        proj_size: if > 0, an LSTM with projections (LSTMP, as ``torch.nn.LSTM``):\n"
    "            ``h_t = W_hr (o_t * tanh(c_t))`` of ``proj_size`` features, read by ``W_hh`` and the\n"
    "            next layer; the momentum (on the ``4 * hidden_size`` input drive) is unchanged.",
    "gru": "\n        proj_size: 0 only (as ``torch.nn.GRU``).",
    "rnn": "\n        proj_size: 0 only (as ``torch.nn.RNN``).",
}


def _indent(text: str, n: int = 12) -> str:
    return "\n".join(" " * n + line for line in text.splitlines())


class MomentumRNNBase(SequenceBase):
    """Base of the gated layers (RNN / LSTM / GRU host x scheme); see the paper-named classes."""

    family = "gated"
    _generic = "build_layer"

    proj_size: int
    nonlinearity: str | None
    weight_ih_l0: Tensor

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: Device = None,
        dtype: torch.dtype | None = None,
        *,
        mu: float | None = None,
        epsilon: float | None = None,
        beta: float | None = None,
        restart: int | None = None,
        nonlinearity: str | None = None,
        learn_mu: bool = False,
        learn_epsilon: bool = False,
        init: str = "torch",
        forget_bias: float = 1.0,
        scheme: str | None = None,
        carry_momentum: bool = False,
    ) -> None:
        super().__init__()
        if self.host not in GATES:
            raise TypeError(
                f"{type(self).__name__} has no gated host; use a paper-named class (MomentumLSTM, ...) "
                "or build_layer(host, scheme, ...)"
            )
        self._setup(
            input_size,
            hidden_size,
            num_layers,
            batch_first,
            dropout,
            bidirectional,
            scheme,
            mu,
            epsilon,
            beta,
            restart,
            carry_momentum,
        )
        self.bias = bool(bias)
        self.nonlinearity = _checks.check_nonlinearity(self.host, nonlinearity)
        self.proj_size = _checks.check_proj_size(self.host, proj_size, self.hidden_size)
        if init not in ("torch", "authors"):
            raise ValueError(
                f"init must be 'torch' (torch.nn's default) or 'authors' (the authors' initialisation), got {init!r}"
            )
        self.init = init
        self.forget_bias = float(forget_bias)
        self._flat_weights_names: list[str] = []
        self._build(learn_mu, learn_epsilon, device, dtype)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.host == "rnn" and "__init__" not in cls.__dict__:
            # torch.nn.RNN's positional order: nonlinearity fourth (a checker sees the base's signature)
            cls.__init__ = _rnn_init  # type: ignore[method-assign, assignment]

    @classmethod
    def _class_doc(cls, spec: SchemeSpec) -> str:
        torch_name = registry.HOSTS[cls.host].title
        hp_doc = "".join(f"        {k}: {HYPER_PARAMETERS[k].doc} (default {v}).\n" for k, v in spec.defaults.items())
        loop = spec.loop
        cell = _CELL_LOOPS[cls.host]
        if spec.lookahead:
            cell = (
                cell.replace("d + W_hh h + b_hh", "g")
                .replace("d[:2H] + W_h(r,z) h + b_h(r,z)", "g[:2H]")
                .replace("d[2H:] + r * (W_hn h + b_hn)", "g[2H:] (its r_t: r * (W_hn h + b_hn))")
            )
        fields = [f for f in spec.fields if f != "step"]
        return _DOC.format(
            summary=f"{registry.paper_name(cls.host, spec.kind)}: {spec.summary}",
            torch_name=torch_name,
            torch_args=textwrap.fill(
                ", ".join(_TORCH_ARGS[cls.host]) + f": as in ``torch.nn.{torch_name}``, in this "
                "order (the ones below are keyword-only).",
                100,
                initial_indent=" " * 8,
                subsequent_indent=" " * 12,
            ),
            nonlinearity_doc="\n        nonlinearity: ``'tanh'`` or ``'relu'``." if cls.host == "rnn" else "",
            proj_doc=_PROJ_DOC[cls.host],
            hp_doc=hp_doc,
            native_state="``(h_0, c_0)``" if cls.host == "lstm" else "``h_0``",
            native_out="(h_n, c_n)" if cls.host == "lstm" else "h_n",
            c_doc=",\n          ``c_n`` ``(D * num_layers, N, hidden_size)``" if cls.host == "lstm" else "",
            carried="("
            + ", ".join(state_names({"h": 0, "c": 0} if cls.host == "lstm" else {"h": 0}, spec.fields, True))
            + ")",
            carry_in=(
                "\n          With ``carry_momentum=True``, also the state a previous call returned (continues\n"
                "          the sequence exactly, momentum included)."
            )
            if spec.fields
            else "",
            fields_doc=(
                f" with {', '.join(fields)}\n          ``(D * num_layers, N, {GATES[cls.host]} * hidden_size)``"
                + (" and the int64 restart counter ``step`` ``(D * num_layers, N)``" if "step" in spec.fields else "")
            )
            if spec.fields
            else " (no momentum fields: torch.nn's)",
            loop=_indent(loop + "\n" + cell),
        )

    # ------------------------------------------------------------------ parameters
    def _register_direction(self, sfx: str, in_features: int, factory: Factory) -> None:
        G, H = GATES[self.host], self.hidden_size
        P = self._out_features()
        # torch.nn's order (its _flat_weights_names): w_ih, w_hh, [b_ih, b_hh], [w_hr]
        names = [f"weight_ih{sfx}", f"weight_hh{sfx}"]
        shapes: list[tuple[int, ...]] = [(G * H, in_features), (G * H, P)]
        if self.bias:
            names += [f"bias_ih{sfx}", f"bias_hh{sfx}"]
            shapes += [(G * H,), (G * H,)]
        if self.proj_size:
            names.append(f"weight_hr{sfx}")
            shapes.append((P, H))
        for name, shape in zip(names, shapes):
            self.register_parameter(name, nn.Parameter(torch.empty(shape, **factory)))
        self._flat_weights_names.extend(names)

    def reset_parameters(self) -> None:
        """``torch.nn``'s initialisation (uniform in ``±1/sqrt(hidden_size)``), or the authors'
        when the layer was built with ``init="authors"``."""
        if self.init == "authors":
            from ..init import authors_init_

            authors_init_(self, forget_bias=self.forget_bias)
            return
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for name in self._flat_weights_names:
            nn.init.uniform_(getattr(self, name), -stdv, stdv)

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        n = (4 if self.bias else 2) + (1 if self.proj_size else 0)
        return [
            [getattr(self, name) for name in self._flat_weights_names[i : i + n]]
            for i in range(0, len(self._flat_weights_names), n)
        ]

    def _direction(self, layer: int, direction: int) -> GatedParams:
        sfx = f"_l{layer}" + ("_reverse" if direction == 1 else "")
        return GatedParams(
            getattr(self, "weight_ih" + sfx),
            getattr(self, "weight_hh" + sfx),
            getattr(self, "bias_ih" + sfx) if self.bias else None,
            getattr(self, "bias_hh" + sfx) if self.bias else None,
            getattr(self, "weight_hr" + sfx) if self.proj_size else None,
        )

    def _weights(self, layer: int, direction: int) -> tuple[Tensor | None, ...]:
        """``(w_ih, w_hh, b_ih, b_hh, w_hr)`` of one layer and direction (``None`` where absent)."""
        return tuple(self._direction(layer, direction))

    def _out_features(self) -> int:
        """The width of ``h``: ``proj_size`` with projections, else ``hidden_size``."""
        return self.proj_size or self.hidden_size

    def _slots(self) -> tuple[dict[str, Slot], dict[str, Slot]]:
        H, GH = self.hidden_size, GATES[self.host] * self.hidden_size
        h = Slot(self._out_features())
        hidden = {"h": h, "c": Slot(H)} if self.host == "lstm" else {"h": h}
        return hidden, {"v": Slot(GH), "m": Slot(GH), "p": Slot(GH)}

    def _reference(self) -> Tensor:
        return self.weight_ih_l0

    def _literal_step(
        self, p: GatedParams, x: Tensor, hidden: Hidden, mom: MomentumState, hp: HyperParameters
    ) -> StepResult:
        return gated_step(self.host, self.nonlinearity, p, x, hidden, mom, self.scheme, hp)

    def _real_step(self, p: GatedParams) -> RealStep:
        """The literal step on the internal form of the state (the same: gated states are real)."""
        return RealStep(
            lambda q, x, hidden, mom, hp: gated_step(
                self.host, self.nonlinearity, GatedParams(*q), x, hidden, mom, self.scheme, hp
            ),
            tuple(p),
        )

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size:
            s += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.host == "rnn" and self.nonlinearity != "tanh":
            s += f", nonlinearity={self.nonlinearity!r}"
        if not self.bias:
            s += ", bias=False"
        s += self._repr_layout()
        for k, v in self.scheme.hyper_parameters.items():
            s += f", {k}={v}"
        return s + self._repr_learned()


def _rnn_init(
    self: MomentumRNNBase,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    nonlinearity: str = "tanh",
    bias: bool = True,
    batch_first: bool = False,
    dropout: float = 0.0,
    bidirectional: bool = False,
    proj_size: int = 0,
    device: Device = None,
    dtype: torch.dtype | None = None,
    **kwargs: Any,
) -> None:
    """The constructor of the RNN host's layers: ``torch.nn.RNN``'s arguments in its positional order
    (``nonlinearity`` fourth), then the keyword-only arguments of :class:`MomentumRNNBase`."""
    MomentumRNNBase.__init__(
        self,
        input_size,
        hidden_size,
        num_layers,
        bias,
        batch_first,
        dropout,
        bidirectional,
        proj_size,
        device,
        dtype,
        nonlinearity=nonlinearity,
        **kwargs,
    )
