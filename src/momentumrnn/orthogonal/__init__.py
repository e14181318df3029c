"""Orthogonal and unitary hosts with momentum: expRNN, DTRIV, scoRNN, scuRNN (SPEC 3).

Paper-named layers (host x scheme): ``{ExpRNN, DTRIV, ScoRNN, ScuRNN}`` with prefixes
``""`` (no momentum), ``Momentum`` (heavy ball), ``Adam``, ``RMSProp`` and ``SR`` (scheduled-restart
heavy ball), e.g. :class:`MomentumDTRIV`, :class:`AdamDTRIV`, :class:`SRDTRIV`, :class:`ScuRNN`.
:class:`OrthogonalRNN` takes ``parametrization=`` and ``scheme=`` by name.
"""

from .initializers import INITIALIZERS, cayley_init_, henaff_init_, torus_init_
from .layer import (
    HOSTS,
    ORTHOGONAL_LAYER_NAMES,
    ORTHOGONAL_SCHEMES,
    OrthogonalRNN,
    build_orthogonal_layer,
    layer_class,
)
from . import layer as _layer
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
from .recurrence import modrelu_recurrence
from .training import DynamicTrivialization, register_optimizer_hook, split_parameters

globals().update({name: getattr(_layer, name) for name in ORTHOGONAL_LAYER_NAMES})

__all__ = [
    "OrthogonalRNN", "HOSTS", "ORTHOGONAL_SCHEMES", "ORTHOGONAL_LAYER_NAMES", "build_orthogonal_layer",
    "layer_class", "split_parameters", "DynamicTrivialization", "register_optimizer_hook",
    "PARAMETRIZATIONS", "OrthogonalParametrization", "Expm", "DynamicExpm", "ScaledCayley",
    "UnitaryScaledCayley", "orthogonality_error", "INITIALIZERS", "cayley_init_", "henaff_init_",
    "torus_init_", "modrelu", "modrelu_recurrence", *ORTHOGONAL_LAYER_NAMES,
]
