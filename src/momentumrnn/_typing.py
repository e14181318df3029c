"""Type aliases and structural types shared by the layers and the backends (annotations only).

The backends sit below the layers in the import graph, so they read a layer through
:class:`Layer` / :class:`GatedLayer`, which the layer classes satisfy structurally.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Protocol

from torch import Tensor, nn

from .schemes import MomentumState, Scheme
from .state import Slot

__all__ = ["HyperValue", "HyperParameters", "Hidden", "StepResult", "Factory", "Layer", "GatedLayer"]

#: a hyper-parameter's value: a float, or a 0-d tensor when it is learned
HyperValue = float | Tensor
#: ``(mu, epsilon)`` of one layer and direction
HyperParameters = tuple[HyperValue, HyperValue]
#: the hidden state of one direction by name (``h``, and ``c`` on the LSTM host); ``None``: zeros
Hidden = Mapping[str, Tensor | None]
#: ``(output, {name: hidden tensor}, momentum)`` of one step, or of one direction (final states)
StepResult = tuple[Tensor, dict[str, Tensor], MomentumState]
#: the ``device`` / ``dtype`` keyword arguments of tensor factories
Factory = dict[str, Any]


class Layer(Protocol):
    """What the backends read of a layer (:class:`~momentumrnn.sequence.SequenceBase`)."""

    host: str
    family: ClassVar[str]
    scheme: Scheme
    hidden_size: int
    backend: str | None
    training: bool

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def _slots(self) -> tuple[dict[str, Slot], dict[str, Slot]]: ...

    def _literal_step(
        self, p: Any, x: Tensor, hidden: Hidden, mom: MomentumState, hp: HyperParameters
    ) -> StepResult: ...


class GatedLayer(Layer, Protocol):
    """A layer of a gated host (:class:`~momentumrnn.MomentumRNNBase`)."""

    nonlinearity: str | None
    proj_size: int
