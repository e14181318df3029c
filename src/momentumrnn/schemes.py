"""The momentum schemes: one table (:data:`SCHEMES`) of what turns the input drive ``u_t`` into
the effective drive ``d_t`` of a recurrent cell (docs/equations.md, section 2).

Each row (:class:`SchemeSpec`) declares, once, everything the rest of the library needs to know
about a scheme: its name and aliases, its hyper-parameters with defaults and ranges, the fields of
its momentum state, the prefix of its paper names, when given values make it the plain cell, the
shape of its drive (a linear filter of the inputs, a non-linear function of the inputs, or a
function of ``h_{t-1}`` too) and its literal one-step update. Cells run that update; the fast
backends read the declared shape (``velocity``, ``normalized``, ``lookahead``) and never the name.

=================  =========================================================================  ==================
kind               update (one step)                                                          hyper-parameters
=================  =========================================================================  ==================
``none``           ``d_t = u_t``                                                              --
``heavy_ball``     ``v_t = mu v_{t-1} + epsilon u_t``; ``d_t = v_t``                          mu, epsilon
``adam``           heavy-ball ``v_t``; ``m_t = beta m_{t-1} + (1-beta) |u_t|^2``;             mu, epsilon, beta
                   ``d_t = v_t / sqrt(m_t + 1e-16)``
``rmsprop``        ``m_t`` as Adam; ``d_t = epsilon u_t / sqrt(m_t + 1e-16)``                 epsilon, beta
``restart``        heavy ball with ``mu_k = (k-1)/(k+2)``, ``k`` restarting every             epsilon, restart
                   ``restart`` steps (0: never)
``nesterov``       ``p_t = r_t - epsilon u_t``; ``g_t = p_t + mu_k (p_t - p_{t-1})`` is the     epsilon, restart
                   cell's *total* pre-activation (``r_t`` its recurrent part: depends on
                   ``h_{t-1}``)
=================  =========================================================================  ==================

``step`` of a momentum state holds the restart counter ``k`` of the last processed step (0 before
the first step).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import Tensor

if TYPE_CHECKING:
    from torch.types import Device

__all__ = [
    "Scheme",
    "SchemeSpec",
    "HyperParameter",
    "MomentumState",
    "SCHEMES",
    "SCHEME_KINDS",
    "PLAIN",
    "ADAM_EPS",
    "canonical_kind",
    "restart_mu",
    "next_steps",
    "StepDrive",
    "pair_square",
]

#: ``eps`` inside ``sqrt(m_t + eps)`` in the Adam / RMSProp drives (the authors' value).
ADAM_EPS = 1e-16


class MomentumState(NamedTuple):
    """Momentum state of a layer: ``(num_layers * num_directions, [B,] width)`` tensors for ``v``
    (velocity), ``m`` (second moment), ``p`` (Nesterov's previous ``p``), and an integer
    ``(num_layers * num_directions, [B])`` ``step`` (restart counter). Unused fields are ``None``."""

    v: Tensor | None = None
    m: Tensor | None = None
    p: Tensor | None = None
    step: Tensor | None = None


# ---------------------------------------------------------------------------- hyper-parameters
def _real(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _unit_interval(name: str, value: float) -> float:
    value = _real(name, value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return value


def _positive(name: str, value: float) -> float:
    value = _real(name, value)
    if value <= 0.0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def _period(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a non-negative int (0 = never restart), got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0 (0 = never restart), got {value}")
    return int(value)


@dataclass(frozen=True)
class HyperParameter:
    """A hyper-parameter: its check (type and range, with a clear message) and what it means."""

    name: str
    check: Callable
    doc: str
    #: the value when a scheme does not use it (the value that leaves the drive unchanged)
    neutral: float


HYPER_PARAMETERS = {
    "mu": HyperParameter("mu", _unit_interval, "momentum ``mu`` in [0, 1)", 0.0),
    "epsilon": HyperParameter("epsilon", _positive, "step size ``epsilon`` > 0", 1.0),
    "beta": HyperParameter("beta", _unit_interval, "second-moment decay ``beta`` in [0, 1)", 0.0),
    "restart": HyperParameter(
        "restart", _period, "restart period ``F`` >= 0 of the schedule ``mu_k = (k-1)/(k+2)`` (0: never restart)", 0
    ),
}


# ---------------------------------------------------------------------------- one-step drives
def _square(u: Tensor) -> Tensor:
    """``|u|^2`` element-wise (real ``u``: ``u * u``)."""
    return (u * u.conj()).real if u.is_complex() else u * u


def pair_square(u: Tensor) -> Tensor:
    """``|u|^2`` of complex units stored as ``[Re, Im]`` pairs along the last dimension (``2H``
    reals), on both halves: ``[|u|^2, |u|^2]`` (a second moment ``m`` in this layout has equal
    halves, the complex unit's ``m`` in each)."""
    re, im = u.chunk(2, -1)
    s = re * re + im * im
    return torch.cat([s, s], -1)


class StepDrive:
    """The drive of one step, as the cell consumes it: ``combine(r, part)`` is the total
    pre-activation of the gate units ``part`` (a slice) given their recurrent part ``r``.
    Input-only schemes give ``d[part] + r``; a lookahead scheme (Nesterov) forms it from ``r``."""

    def __init__(self, d: Tensor, state: dict) -> None:
        self.d, self.state = d, state

    def combine(self, r: Tensor, part: slice = slice(None)) -> Tensor:
        return self.d[..., part] + r

    def new_state(self) -> dict:
        return self.state


class _LookaheadDrive(StepDrive):
    """Nesterov: ``p = r - epsilon u``, ``g = p + mu_k (p - p_prev)``; the new ``p`` collects the
    parts in the order the cell asks for them."""

    def __init__(self, u: Tensor, p_prev: Tensor, epsilon: float | Tensor, mu_k: Tensor, state: dict) -> None:
        super().__init__(u, state)
        self.p_prev, self.epsilon, self.mu_k = p_prev, epsilon, mu_k
        self.parts: list[Tensor] = []

    def combine(self, r: Tensor, part: slice = slice(None)) -> Tensor:
        p = r - self.epsilon * self.d[..., part]
        self.parts.append(p)
        return p + self.mu_k * (p - self.p_prev[..., part])

    def new_state(self) -> dict:
        return dict(self.state, p=torch.cat(self.parts, -1) if len(self.parts) > 1 else self.parts[0])


_Square = Callable[[Tensor], Tensor]


# The literal one-step updates (u: (B, W) input drive; s: the previous MomentumState with zeros
# for fields that start at zero; hp: the hyper-parameter values, mu_k the scheduled momentum;
# square: |u|^2 of each entry of u, see Scheme.step).
def _step_none(u: Tensor, s: MomentumState, hp: dict[str, Any], mu_k: Tensor | None, square: _Square) -> StepDrive:
    return StepDrive(u, {})


def _step_heavy_ball(
    u: Tensor, s: MomentumState, hp: dict[str, Any], mu_k: Tensor | None, square: _Square
) -> StepDrive:
    v = hp["mu"] * s.v + hp["epsilon"] * u
    return StepDrive(v, {"v": v})


def _step_adam(u: Tensor, s: MomentumState, hp: dict[str, Any], mu_k: Tensor | None, square: _Square) -> StepDrive:
    v = hp["mu"] * s.v + hp["epsilon"] * u
    m = hp["beta"] * s.m + (1 - hp["beta"]) * square(u)
    return StepDrive(v / torch.sqrt(m + ADAM_EPS), {"v": v, "m": m})


def _step_rmsprop(u: Tensor, s: MomentumState, hp: dict[str, Any], mu_k: Tensor | None, square: _Square) -> StepDrive:
    m = hp["beta"] * s.m + (1 - hp["beta"]) * square(u)
    return StepDrive(hp["epsilon"] * u / torch.sqrt(m + ADAM_EPS), {"m": m})


def _step_restart(u: Tensor, s: MomentumState, hp: dict[str, Any], mu_k: Tensor | None, square: _Square) -> StepDrive:
    assert mu_k is not None and s.v is not None  # (a scheduled scheme; s filled with zeros)
    v = mu_k * s.v + hp["epsilon"] * u
    return StepDrive(v, {"v": v})


def _step_nesterov(u: Tensor, s: MomentumState, hp: dict[str, Any], mu_k: Tensor | None, square: _Square) -> StepDrive:
    assert mu_k is not None and s.p is not None  # (a scheduled scheme; s filled with zeros)
    return _LookaheadDrive(u, s.p, hp["epsilon"], mu_k, {})


# ---------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class SchemeSpec:
    """One row of the scheme table."""

    kind: str
    #: prefix of the paper names on every host (``"Momentum"`` + ``"LSTM"``)
    prefix: str
    #: hyper-parameters and their defaults (the paper's sequential-MNIST settings)
    defaults: dict
    #: fields of the momentum state
    fields: tuple
    #: the literal one-step update ``step(u, state, hp, mu_k, square) -> StepDrive``
    step: Callable
    #: ``None`` (no velocity), ``"constant"`` (coefficient ``mu``) or ``"scheduled"`` (``mu_k``)
    velocity: str | None
    #: the drive is divided by ``sqrt(m_t + 1e-16)``
    normalized: bool
    #: the drive depends on ``h_{t-1}`` (replaces the cell's total pre-activation)
    lookahead: bool
    #: whether the restart counter ``k`` runs (``mu_k = (k-1)/(k+2)``)
    scheduled: bool
    #: given hyper-parameter values -> whether the scheme computes exactly the plain cell
    trivial: Callable
    #: one line, and the equivalent loop (for generated docstrings)
    summary: str
    loop: str
    #: other names of the kind (``"momentum"`` for ``"heavy_ball"``)
    aliases: tuple = ()
    #: the prefix of a documented paper alias and the host family it applies to
    paper_alias: tuple | None = None
    hyper_parameters: tuple = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hyper_parameters", tuple(self.defaults))

    @property
    def input_only(self) -> bool:
        return not self.lookahead

    @property
    def linear(self) -> bool:
        """The drive is a causal linear filter of the inputs."""
        return not (self.lookahead or self.normalized)


_ROWS = (
    SchemeSpec(
        "none",
        "",
        {},
        (),
        _step_none,
        velocity=None,
        normalized=False,
        lookahead=False,
        scheduled=False,
        trivial=lambda hp: True,
        aliases=("plain",),
        summary="no momentum: d_t = u_t",
        loop="d = u",
    ),
    SchemeSpec(
        "heavy_ball",
        "Momentum",
        {"mu": 0.6, "epsilon": 0.6},
        ("v",),
        _step_heavy_ball,
        velocity="constant",
        normalized=False,
        lookahead=False,
        scheduled=False,
        trivial=lambda hp: hp["mu"] == 0.0 and hp["epsilon"] == 1.0,
        aliases=("momentum", "heavyball", "hb"),
        summary="heavy-ball momentum: v_t = mu v_{t-1} + epsilon u_t drives the cell",
        loop="v = mu * v + epsilon * u; d = v",
    ),
    SchemeSpec(
        "adam",
        "Adam",
        {"mu": 0.6, "epsilon": 0.6, "beta": 0.1},
        ("v", "m"),
        _step_adam,
        velocity="constant",
        normalized=True,
        lookahead=False,
        scheduled=False,
        trivial=lambda hp: False,
        summary="Adam momentum: the heavy-ball drive divided by sqrt of a second moment of u_t",
        loop="v = mu * v + epsilon * u; m = beta * m + (1 - beta) * |u|^2\nd = v / sqrt(m + 1e-16)",
    ),
    SchemeSpec(
        "rmsprop",
        "RMSProp",
        {"epsilon": 0.6, "beta": 0.9},
        ("m",),
        _step_rmsprop,
        velocity=None,
        normalized=True,
        lookahead=False,
        scheduled=False,
        trivial=lambda hp: False,
        summary="RMSProp momentum: epsilon u_t divided by sqrt of a second moment of u_t",
        loop="m = beta * m + (1 - beta) * |u|^2; d = epsilon * u / sqrt(m + 1e-16)",
    ),
    SchemeSpec(
        "restart",
        "RestartMomentum",
        {"epsilon": 1.0, "restart": 2},
        ("v", "step"),
        _step_restart,
        velocity="scheduled",
        normalized=False,
        lookahead=False,
        scheduled=True,
        trivial=lambda hp: hp["restart"] == 1 and hp["epsilon"] == 1.0,
        aliases=("srheavy_ball", "restart_heavy_ball"),
        paper_alias=("SR", "modrelu"),
        summary="heavy ball with scheduled restart: mu_k = (k-1)/(k+2), k restarting every `restart` steps",
        loop="k = k % restart + 1 if restart else k + 1; mu_k = (k - 1) / (k + 2)\nv = mu_k * v + epsilon * u; d = v",
    ),
    SchemeSpec(
        "nesterov",
        "Nesterov",
        {"epsilon": 1.0, "restart": 2},
        ("p", "step"),
        _step_nesterov,
        velocity=None,
        normalized=False,
        lookahead=True,
        scheduled=True,
        trivial=lambda hp: False,
        aliases=("sr",),
        paper_alias=("SR", "gated"),
        summary="Nesterov momentum with scheduled restart (depends on h_{t-1})",
        loop="k = k % restart + 1 if restart else k + 1; mu_k = (k - 1) / (k + 2)\n"
        "p_new = r - epsilon * u; g = p_new + mu_k * (p_new - p); p = p_new\n"
        "# g replaces the cell's total pre-activation d + r (r: the recurrent part)",
    ),
)

#: kind -> row
SCHEMES = {row.kind: row for row in _ROWS}
#: the rows by name, for class declarations (``class MomentumLSTM(..., scheme=HEAVY_BALL)``)
NONE, HEAVY_BALL, ADAM, RMSPROP, RESTART, NESTEROV = _ROWS
#: the scheme without momentum (generic layers built without a scheme)
PLAIN = "none"
#: every scheme kind, in the table's order
SCHEME_KINDS = tuple(SCHEMES)
_ALIASES = {alias: row.kind for row in _ROWS for alias in row.aliases}


def canonical_kind(kind: str) -> str:
    """The kind of a scheme name or alias (``"momentum"`` -> ``"heavy_ball"``)."""
    if not isinstance(kind, str):
        raise TypeError(f"scheme must be a string, got {type(kind).__name__}")
    key = kind.lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in SCHEMES:
        raise ValueError(f"unknown momentum scheme {kind!r}; expected one of {', '.join(SCHEME_KINDS)}")
    return key


# ---------------------------------------------------------------------------- a configured scheme
@dataclass(frozen=True)
class Scheme:
    """A momentum scheme (a row of :data:`SCHEMES`) with validated hyper-parameter values.
    Hyper-parameters the scheme does not use keep their neutral values."""

    kind: str = "heavy_ball"
    mu: float = 0.0
    epsilon: float = 1.0
    beta: float = 0.0
    restart: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", canonical_kind(self.kind))
        for name, hp in HYPER_PARAMETERS.items():
            object.__setattr__(self, name, hp.check(name, getattr(self, name)))

    @classmethod
    def create(
        cls,
        kind: str,
        mu: float | None = None,
        epsilon: float | None = None,
        beta: float | None = None,
        restart: int | None = None,
    ) -> Scheme:
        """Build a scheme, filling the hyper-parameters it uses with the paper's defaults and
        rejecting ones it does not use (e.g. ``mu`` for RMSProp)."""
        spec = SCHEMES[canonical_kind(kind)]
        given = {"mu": mu, "epsilon": epsilon, "beta": beta, "restart": restart}
        for name, value in given.items():
            if value is not None and name not in spec.defaults:
                raise ValueError(
                    f"scheme {spec.kind!r} has no hyper-parameter {name!r}; "
                    f"it takes {', '.join(spec.defaults) or 'none'}"
                )
        values: dict[str, Any] = {
            name: given[name] if given[name] is not None else default for name, default in spec.defaults.items()
        }
        return cls(spec.kind, **values)

    @property
    def spec(self) -> SchemeSpec:
        return SCHEMES[self.kind]

    @property
    def hyper_parameters(self) -> dict:
        return {name: getattr(self, name) for name in self.spec.defaults}

    @property
    def state_fields(self) -> tuple:
        return self.spec.fields

    @property
    def input_only(self) -> bool:
        """Whether ``d_t`` depends on the inputs alone."""
        return self.spec.input_only

    @property
    def linear(self) -> bool:
        """Whether the drive is a linear filter of the inputs."""
        return self.spec.linear

    @property
    def scheduled(self) -> bool:
        return self.spec.scheduled

    @property
    def trivial(self) -> bool:
        """Whether these values make the scheme the plain cell exactly."""
        return bool(self.spec.trivial(self.hyper_parameters))

    def velocity_coefficient(
        self, mu: float | Tensor, T: int, step0: Tensor | None, dtype: torch.dtype, device: Device
    ) -> tuple[Tensor, Tensor | None]:
        """The velocity's per-step coefficient: ``(coeff, k)`` with ``coeff`` a 0-d tensor
        (``mu``; a learnable ``mu`` tensor as is; 0 without a velocity) or ``(T, B', 1)``
        (``mu_k``), and ``k`` the restart counters ``(T, B')`` (``None`` without a schedule)."""
        velocity = self.spec.velocity
        if velocity == "scheduled":
            return self.schedule(T, step0, dtype, device)
        if velocity is None:
            mu = 0.0
        return (mu if isinstance(mu, Tensor) else torch.tensor(mu, dtype=dtype, device=device)), None

    def schedule(self, T: int, step0: Tensor | None, dtype: torch.dtype, device: Device) -> tuple[Tensor, Tensor]:
        """``(mu_k (T, B', 1), k (T, B'))`` of the next ``T`` steps after counters ``step0``."""
        if step0 is None:
            step0 = torch.zeros(1, dtype=torch.long, device=device)
        k = next_steps(step0, T, self.restart)
        return restart_mu(k, dtype).unsqueeze(2), k

    def step(
        self,
        u: Tensor,
        state: MomentumState,
        mu: float | Tensor | None = None,
        epsilon: float | Tensor | None = None,
        square: Callable[[Tensor], Tensor] = _square,
    ) -> tuple[StepDrive, Callable[[], MomentumState]]:
        """One literal step from the input drive ``u`` ``(B, W)`` (what the cells run):
        returns ``(StepDrive, advance)`` where ``advance()`` gives the new :class:`~momentumrnn.schemes.MomentumState`
        once the cell has combined the drive. ``state`` fields may be ``None`` (zeros);
        ``mu`` / ``epsilon`` override the configured values (learnable hyper-parameters).
        ``square(u)``: the squared modulus of each entry's unit (default ``|u|^2`` element-wise,
        real or complex ``u``); a real ``u`` holding complex units as ``[Re, Im]`` pairs passes
        :func:`!pair_square`, and ``m`` in the same pair layout."""
        spec = self.spec
        hp = dict(self.hyper_parameters)
        if mu is not None and "mu" in hp:
            hp["mu"] = mu
        if epsilon is not None and "epsilon" in hp:
            hp["epsilon"] = epsilon
        zeros = torch.zeros_like(u)
        real_zeros = zeros.real if u.is_complex() else zeros
        full = MomentumState(
            v=state.v if state.v is not None else zeros,
            m=state.m if state.m is not None else real_zeros,
            p=state.p if state.p is not None else zeros,
            step=state.step,
        )
        k = mu_k = None
        if spec.scheduled:
            k = (
                state.step if state.step is not None else torch.zeros(u.shape[:-1], dtype=torch.long, device=u.device)
            ) + 1
            if self.restart > 0:
                k = torch.where(k > self.restart, torch.ones_like(k), k)
            mu_k = restart_mu(k, u.real.dtype).unsqueeze(-1)
        drive = spec.step(u, full, hp, mu_k, square)

        def advance() -> MomentumState:
            new = drive.new_state()
            if k is not None:
                new["step"] = k
            return MomentumState(**{f: new[f] for f in spec.fields})

        return drive, advance

    def __str__(self) -> str:
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
