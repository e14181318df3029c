"""Orthogonal and unitary hosts with momentum: expRNN, DTRIV, scoRNN, scuRNN (docs/equations.md,
section 3), plus their parametrizations, initializers and training helpers.

The layers themselves live in the core (:class:`momentumrnn.OrthogonalRNN`, the paper-named
``momentumrnn.MomentumDTRIV``, ``AdamScoRNN``, ``NesterovExpRNN``, ``ScuRNN``, ... and the authors'
``SRDTRIV`` = ``RestartMomentumDTRIV``); this package gives them under their historical import path
too (``from momentumrnn.orthogonal import MomentumDTRIV``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from ..schemes import SCHEME_KINDS
from .initializers import INITIALIZERS, cayley_init_, henaff_init_, torus_init_
from .modrelu import modrelu
from .parametrizations import (
    PARAMETRIZATIONS,
    DynamicExpm,
    Expm,
    OrthogonalParametrization,
    ScaledCayley,
    UnitaryScaledCayley,
    orthogonality_error,
)
from .training import DynamicTrivialization, register_optimizer_hook, split_parameters

if TYPE_CHECKING:  # the host classes, imported lazily below (the core imports this package)
    from ..hosts.orthogonal import HOSTS, OrthogonalRNN
    from ..layers import *
    from ..sequence import SequenceBase

#: every scheme runs on the orthogonal hosts
ORTHOGONAL_SCHEMES = SCHEME_KINDS

_LAZY = ("OrthogonalRNN", "HOSTS", "ORTHOGONAL_LAYER_NAMES", "modrelu_recurrence", "modrelu_lookahead")


def _orthogonal_hosts() -> dict:
    from ..hosts.orthogonal import HOSTS

    return HOSTS


def _layer_names() -> dict:
    from .. import layers  # noqa: F401  (registers the paper-named classes)
    from ..registry import LAYER_NAMES

    hosts = _orthogonal_hosts()
    return {name: info for name, info in LAYER_NAMES.items() if info[0] in hosts}


def _aliases() -> dict:
    from ..registry import LAYER_ALIASES

    names = _layer_names()
    return {alias: name for alias, name in LAYER_ALIASES.items() if name in names}


def layer_class(name: str) -> type[SequenceBase]:
    """The class of a paper name of an orthogonal host (``"MomentumDTRIV"``, ``"SRDTRIV"``,
    ``"AdamExpRNN"``, ``"ScuRNN"``, ...)."""
    from ..registry import layer_class as core_layer_class

    names = _layer_names()
    if name not in names and name not in _aliases():
        raise ValueError(f"unknown orthogonal layer {name!r}; expected one of {', '.join(names)}")
    return cast("type[SequenceBase]", core_layer_class(name))


def build_orthogonal_layer(host: str, scheme: str, input_size: int, hidden_size: int, **kwargs: Any) -> SequenceBase:
    """Build an orthogonal layer from a host (``"exprnn"``, ``"dtriv"``, ``"scornn"``,
    ``"scurnn"``) and a scheme (any of ``momentumrnn.SCHEME_KINDS``)."""
    from ..registry import build_layer

    hosts = _orthogonal_hosts()
    if not isinstance(host, str) or host.lower() not in hosts:
        raise ValueError(f"unknown orthogonal host {host!r}; expected one of {', '.join(hosts)}")
    return cast("SequenceBase", build_layer(host.lower(), scheme, input_size, hidden_size, **kwargs))


def __getattr__(name: str) -> Any:
    if name == "OrthogonalRNN":
        from ..hosts.orthogonal import OrthogonalRNN

        return OrthogonalRNN
    if name == "HOSTS":
        return _orthogonal_hosts()
    if name == "ORTHOGONAL_LAYER_NAMES":
        return _layer_names()
    if name in ("modrelu_recurrence", "modrelu_lookahead"):
        from ..backends import modrelu_ops

        return getattr(modrelu_ops, name)
    names = _layer_names()
    if name in names or name in _aliases():
        return layer_class(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_layer_names()) | set(_aliases()))


__all__ = [
    "OrthogonalRNN",
    "HOSTS",
    "ORTHOGONAL_SCHEMES",
    "ORTHOGONAL_LAYER_NAMES",
    "build_orthogonal_layer",
    "layer_class",
    "split_parameters",
    "DynamicTrivialization",
    "register_optimizer_hook",
    "PARAMETRIZATIONS",
    "OrthogonalParametrization",
    "Expm",
    "DynamicExpm",
    "ScaledCayley",
    "UnitaryScaledCayley",
    "orthogonality_error",
    "INITIALIZERS",
    "cayley_init_",
    "henaff_init_",
    "torus_init_",
    "modrelu",
    "modrelu_recurrence",
    "modrelu_lookahead",
]
