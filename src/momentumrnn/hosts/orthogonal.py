"""Orthogonal and unitary hosts: expRNN, DTRIV, scoRNN, scuRNN (docs/equations.md, section 3).

``B = weight_hh_l0`` is parametrized through ``torch.nn.utils.parametrize`` (orthogonal to float
rounding): ``expm`` (expRNN), ``expm`` with dynamic trivialization (DTRIV), the scaled Cayley map
(scoRNN) and the unitary scaled Cayley map (scuRNN: complex hidden state; the layer's output is
the real read-out ``[Re h, Im h]``, ``2 * hidden_size`` features per direction; the returned ``h``
and momentum ``v`` / ``p`` are complex tensors; ``W_ih`` is complex; ``complex_input=True`` takes
a complex input).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor, nn

from .. import registry
from ..orthogonal.initializers import get_initializer, torus_init_
from ..orthogonal.parametrizations import (
    ComplexView,
    DynamicExpm,
    OrthogonalParametrization,
    UnitaryScaledCayley,
    canonical_parametrization,
    check_K,
    make_parametrization,
    register,
)
from ..schemes import SchemeSpec
from .modrelu import ModReLUBase

if TYPE_CHECKING:
    from torch.types import Device

    from .._typing import Factory

__all__ = ["OrthogonalRNN", "HOSTS"]

#: host name -> parametrization
HOSTS = {"exprnn": "expm", "dtriv": "dtriv", "scornn": "scaled_cayley", "scurnn": "unitary_scaled_cayley"}
_HOST_OF = {v: k for k, v in HOSTS.items()}

registry.register_host("exprnn", "ExpRNN", "modrelu", "expRNN: B = expm(A), Lezcano-Casado & Martinez-Rubio 2019")
registry.register_host("dtriv", "DTRIV", "modrelu", "DTRIV: B = base expm(A), base changed every K optimizer steps")
registry.register_host("scornn", "ScoRNN", "modrelu", "scoRNN: B = (I + A)^-1 (I - A) D, fixed +-1 diagonal D")
registry.register_host(
    "scurnn", "ScuRNN", "modrelu", "scuRNN: unitary scaled Cayley, trainable unit-modulus diagonal, complex state"
)


class OrthogonalRNN(ModReLUBase):
    """Orthogonal / unitary RNN with a momentum scheme.

    Args:
        input_size, hidden_size, num_layers, batch_first, dropout, bidirectional, device, dtype:
            as in ``torch.nn.RNN`` (``dtype`` real: scuRNN's complex tensors follow it).
        bias: must be False (the input map has no bias; the modReLU bias is always there).
        parametrization: ``"expm"`` (expRNN), ``"dtriv"``, ``"scaled_cayley"`` (scoRNN) or
            ``"unitary_scaled_cayley"`` (scuRNN); host names are accepted. Fixed by the paper-named
            classes.
        scheme: any momentum scheme (a kind of ``momentumrnn.SCHEME_KINDS``, default: none).
            Fixed by the paper-named classes.
        mu, epsilon, beta, restart: the scheme's hyper-parameters (defaults as everywhere).
        learn_mu, learn_epsilon: learnable ``mu`` / ``epsilon`` (one scalar per layer and direction).
        K: DTRIV only: optimizer steps between base changes, a positive int or ``math.inf``
            (default 100, the authors' default).
        num_negative: scoRNN only: number of ``-1`` entries of the scaling diagonal ``D``
            (default ``hidden_size // 10``, scoRNN's permuted-MNIST choice).
        init: initializer of the skew matrix: ``"cayley"`` (the authors' default), ``"henaff"``,
            ``"torus"`` (uniform rotation angles of ``B``), or a callable filling an ``(H, H)``
            tensor with a skew-symmetric matrix.
        complex_input: scuRNN only: the first layer takes complex input.

        carry_momentum: carry the momentum in the state (``(h, *fields)``, see below); by default
            the state is ``torch.nn.RNN``'s ``h`` and the momentum starts at zero at every call.

    Inputs: ``input, hx`` (``torch.nn.RNN``'s contract)
        * **input**: ``(L, N, H_in)``, ``(N, L, H_in)`` with ``batch_first``, unbatched
          ``(L, H_in)`` or a ``PackedSequence``.
        * **hx**: ``h_0`` ``(D * num_layers, N, H)`` (complex for scuRNN), or None (zeros); with
          ``carry_momentum=True`` also the tuple ``(h, *fields)`` a previous call returned
          (resumes exactly).

    Outputs: ``output, h_n``
        * **output**: ``(L, N, D * H)`` (``D * 2H`` for scuRNN: ``[Re h, Im h]`` per direction).
        * **h_n**: ``(D * num_layers, N, H)``; with ``carry_momentum=True`` the tuple
          ``(h_n, *fields)`` (``layer.state_names``): ``v``, ``m``, ``p`` ``(D * num_layers, N, H)``
          (``v`` and ``p`` complex for scuRNN), ``step`` ``(D * num_layers, N)`` int64.

    Equivalent loop for one layer and direction::

        for t in range(T):
            u = W_ih @ x[t]
            d = <scheme>(u)          # none: u; heavy ball: v = mu v + epsilon u; ...
            h = modReLU(h @ B + d)   # B = weight_hh_l0, evaluated once per forward
                                     # (Nesterov: p = h @ B - epsilon u; h = modReLU(p + mu_k (p - p_prev)))
    """

    _generic = "OrthogonalRNN"
    _rebuild_attributes = (*ModReLUBase._rebuild_attributes, "K")  # DTRIV's K is assignable

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = False,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: Device = None,
        dtype: torch.dtype | None = None,
        *,
        parametrization: str | None = None,
        scheme: str | None = None,
        mu: float | None = None,
        epsilon: float | None = None,
        beta: float | None = None,
        restart: int | None = None,
        learn_mu: bool = False,
        learn_epsilon: bool = False,
        K: int | float | str | None = None,
        num_negative: int | None = None,
        init: str | Callable[[Tensor], Tensor] = "cayley",
        complex_input: bool = False,
        carry_momentum: bool = False,
    ) -> None:
        super().__init__()
        cls_name = type(self).__name__
        fixed = type(self).host
        if fixed:
            if parametrization is not None and canonical_parametrization(parametrization) != HOSTS[fixed]:
                raise TypeError(
                    f"{cls_name} fixes the parametrization to {HOSTS[fixed]!r}; "
                    "use OrthogonalRNN(parametrization=...) for another one"
                )
            parametrization = HOSTS[fixed]
        elif parametrization is None:
            parametrization = "expm"
        self.parametrization = canonical_parametrization(parametrization)
        self.host = _HOST_OF[self.parametrization]
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
        self.unitary = self.parametrization == "unitary_scaled_cayley"
        self._setup_modrelu(bias, dtype, complex_input)
        if K is not None:
            K = check_K(K)
            if self.parametrization != "dtriv":
                raise ValueError(
                    f"K (dynamic trivialization) applies to the DTRIV host only, not {self.parametrization!r}"
                )
        elif self.parametrization == "dtriv":
            K = 100
        if num_negative is not None and self.parametrization != "scaled_cayley":
            raise ValueError(
                f"num_negative applies to the scoRNN host (scaled_cayley) only, not {self.parametrization!r}"
            )
        self._K, self._num_negative = K, num_negative
        self.init = init
        self._init_fn = get_initializer(init)
        self._build(learn_mu, learn_epsilon, device, dtype)
        self.num_negative = getattr(self.parametrizations["weight_hh_l0"][0], "num_negative", None)

    @classmethod
    def _class_doc(cls, spec: SchemeSpec) -> str:
        summary = f"{registry.paper_name(cls.host, spec.kind)}: {spec.summary} on {registry.HOSTS[cls.host].summary}"
        return (
            f"{summary}.\n\n    Same arguments as :class:`OrthogonalRNN` without ``parametrization`` and "
            f"``scheme``.\n" + cast(str, OrthogonalRNN.__doc__).split("\n", 1)[1]
        )

    def _register_direction(self, sfx: str, in_features: int, factory: Factory) -> None:
        H = self.hidden_size
        if self.unitary:
            self.register_parameter("weight_ih" + sfx, nn.Parameter(torch.empty(H, in_features, 2, **factory)))
            register(self, "weight_ih" + sfx, ComplexView())
        else:
            self.register_parameter("weight_ih" + sfx, nn.Parameter(torch.empty(H, in_features, **factory)))
        self.register_parameter("weight_hh" + sfx, nn.Parameter(torch.zeros(H, H, **factory)))
        param = make_parametrization(self.parametrization, H, K=self._K, num_negative=self._num_negative, **factory)
        register(self, "weight_hh" + sfx, param)
        self.register_parameter("modrelu_bias" + sfx, nn.Parameter(torch.empty(H, **factory)))

    # ------------------------------------------------------------------ parameters
    @property
    def K(self) -> int | float | None:
        """DTRIV: optimizer steps between base changes (int or ``math.inf``); None for the other
        hosts. Assignable."""
        if self.parametrization != "dtriv":
            return None
        return cast(DynamicExpm, self._parametrization("_l0")).K

    @K.setter
    def K(self, value: int | float | str) -> None:
        if self.parametrization != "dtriv":
            raise ValueError(f"K (dynamic trivialization) applies to the DTRIV host only, not {self.parametrization!r}")
        value = check_K(value)
        for sfx in self._suffixes:
            cast(DynamicExpm, self._parametrization(sfx)).K = value

    def _parametrization(self, sfx: str) -> OrthogonalParametrization:
        return cast(OrthogonalParametrization, self.parametrizations["weight_hh" + sfx][0])

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
                    cast(UnitaryScaledCayley, param).theta.uniform_(0.0, 2 * math.pi)

    def orthogonal_parameters(self) -> list[Tensor]:
        """The parameters of the orthogonal / unitary maps (skew parameters, scuRNN's ``theta``):
        train them with their own learning rate (``lr_orth``)."""
        params: list[Tensor] = []
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

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, parametrization={self.parametrization!r}"
        s += self._repr_common()
        if self.K is not None:
            s += f", K={self.K}"
        if self.num_negative is not None:
            s += f", num_negative={self.num_negative}"
        if self.complex_input:
            s += ", complex_input=True"
        return s
