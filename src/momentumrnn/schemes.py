"""Momentum schemes of SPEC 2: what turns the input drive ``u_t = W_ih x_t + b_ih`` into the
effective drive ``d_t`` that the cell consumes.

=============  =========================================================================  ==================
kind           update                                                                     hyper-parameters
=============  =========================================================================  ==================
``none``       ``d_t = u_t``                                                              --
``heavy_ball`` ``v_t = mu v_{t-1} + epsilon u_t``; ``d_t = v_t``                          mu, epsilon
``adam``       heavy ball ``v``; ``m_t = beta m_{t-1} + (1-beta) u_t^2``;                 mu, epsilon, beta
               ``d_t = v_t / sqrt(m_t + 1e-16)``
``rmsprop``    Adam with ``mu = 0``                                                       epsilon, beta
``restart``    heavy ball with ``mu_k = (k-1)/(k+2)``, ``k`` restarting every ``restart``  epsilon, restart
               steps (0: never)
``nesterov``   ``p_t = r_t - epsilon u_t``; ``g_t = p_t + mu_k (p_t - p_{t-1})`` is the     epsilon, restart
               cell's *total* pre-activation (depends on ``h_{t-1}`` through ``r_t``)
=============  =========================================================================  ==================

The momentum state of one layer and direction is a :class:`MomentumState`; which fields are used
depends on the kind (see :attr:`Scheme.state_fields`). ``step`` holds the restart counter ``k`` of
the last processed step (0 before the first step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
from torch import Tensor

__all__ = ["Scheme", "MomentumState", "SCHEME_KINDS", "ADAM_EPS", "restart_mu", "next_steps"]

#: ``eps`` inside ``sqrt(m_t + eps)`` in the Adam / RMSProp drives (the authors' value).
ADAM_EPS = 1e-16

SCHEME_KINDS = ("none", "heavy_ball", "adam", "rmsprop", "restart", "nesterov")

_ALIASES = {
    "plain": "none",
    "momentum": "heavy_ball",
    "heavyball": "heavy_ball",
    "hb": "heavy_ball",
    "sr": "nesterov",
    "srheavy_ball": "restart",
    "restart_heavy_ball": "restart",
}

# Paper defaults (SPEC 4, sequential MNIST).
DEFAULTS = {
    "none": {},
    "heavy_ball": {"mu": 0.6, "epsilon": 0.6},
    "adam": {"mu": 0.6, "epsilon": 0.6, "beta": 0.1},
    "rmsprop": {"epsilon": 0.6, "beta": 0.9},
    "restart": {"epsilon": 1.0, "restart": 2},
    "nesterov": {"epsilon": 1.0, "restart": 2},
}

_FIELDS = {
    "none": (),
    "heavy_ball": ("v",),
    "adam": ("v", "m"),
    "rmsprop": ("m",),
    "restart": ("v", "step"),
    "nesterov": ("p", "step"),
}


class MomentumState(NamedTuple):
    """Momentum state of a layer: ``(num_layers * num_directions, [B,] G * H)`` tensors for
    ``v`` (velocity), ``m`` (second moment), ``p`` (Nesterov's previous ``p``), and an integer
    ``(num_layers * num_directions, [B])`` ``step`` (restart counter). Unused fields are ``None``."""

    v: Optional[Tensor] = None
    m: Optional[Tensor] = None
    p: Optional[Tensor] = None
    step: Optional[Tensor] = None


def canonical_kind(kind: str) -> str:
    if not isinstance(kind, str):
        raise TypeError(f"scheme must be a string, got {type(kind).__name__}")
    key = kind.lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in SCHEME_KINDS:
        raise ValueError(f"unknown momentum scheme {kind!r}; expected one of {', '.join(SCHEME_KINDS)}")
    return key


def _check_real(name: str, value, kind: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number for scheme {kind!r}, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


@dataclass(frozen=True)
class Scheme:
    """A momentum scheme and its hyper-parameters (validated)."""

    kind: str = "heavy_ball"
    mu: float = 0.0
    epsilon: float = 1.0
    beta: float = 0.0
    restart: int = 0

    def __post_init__(self):
        kind = canonical_kind(self.kind)
        object.__setattr__(self, "kind", kind)
        mu = _check_real("mu", self.mu, kind)
        eps = _check_real("epsilon", self.epsilon, kind)
        beta = _check_real("beta", self.beta, kind)
        if not 0.0 <= mu < 1.0:
            raise ValueError(f"mu must be in [0, 1), got {mu}")
        if eps <= 0.0:
            raise ValueError(f"epsilon must be > 0, got {eps}")
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        if isinstance(self.restart, bool) or not isinstance(self.restart, int):
            raise TypeError(f"restart must be a non-negative int (0 = never restart), got {self.restart!r}")
        if self.restart < 0:
            raise ValueError(f"restart must be >= 0 (0 = never restart), got {self.restart}")
        object.__setattr__(self, "mu", mu)
        object.__setattr__(self, "epsilon", eps)
        object.__setattr__(self, "beta", beta)

    @classmethod
    def create(cls, kind: str, mu=None, epsilon=None, beta=None, restart=None) -> "Scheme":
        """Build a scheme, filling hyper-parameters the kind uses with the paper's defaults and
        rejecting ones it does not use (e.g. ``mu`` for RMSProp)."""
        kind = canonical_kind(kind)
        given = {"mu": mu, "epsilon": epsilon, "beta": beta, "restart": restart}
        used = DEFAULTS[kind]
        for name, value in given.items():
            if value is not None and name not in used:
                raise ValueError(
                    f"scheme {kind!r} has no hyper-parameter {name!r}; "
                    f"it takes {', '.join(used) or 'none'}"
                )
        values = {name: given[name] if given[name] is not None else default for name, default in used.items()}
        if kind == "rmsprop":
            values["mu"] = 0.0
        return cls(kind, **values)

    @property
    def hyper_parameters(self) -> dict:
        return {name: getattr(self, name) for name in DEFAULTS[self.kind]}

    @property
    def state_fields(self) -> tuple:
        return _FIELDS[self.kind]

    @property
    def input_only(self) -> bool:
        """Whether ``d_t`` depends on the inputs alone (all but Nesterov)."""
        return self.kind != "nesterov"

    @property
    def linear(self) -> bool:
        """Whether the drive is a linear filter of the inputs (native-kernel fast path)."""
        return self.kind in ("none", "heavy_ball", "restart")

    @property
    def scheduled(self) -> bool:
        return self.kind in ("restart", "nesterov")

    def __str__(self):
        hp = ", ".join(f"{k}={v}" for k, v in self.hyper_parameters.items())
        return f"{self.kind}({hp})"


def next_steps(step0: Tensor, T: int, restart: int) -> Tensor:
    """Restart counters ``k`` for the next ``T`` steps after counter ``step0`` (shape ``(B',)``):
    a ``(T, B')`` long tensor. ``k`` counts 1, 2, ... and, with ``restart = F > 0``, returns to 1
    after ``F``."""
    t = torch.arange(1, T + 1, device=step0.device, dtype=torch.long).unsqueeze(1)
    k = step0.unsqueeze(0) + t
    if restart > 0:
        k = (k - 1) % restart + 1
    return k


def restart_mu(k: Tensor, dtype: torch.dtype) -> Tensor:
    """The scheduled momentum ``mu_k = (k - 1) / (k + 2)``."""
    k = k.to(dtype)
    return (k - 1) / (k + 2)
