"""Whole-model conversion: try momentum in an existing model in one line.

:func:`convert` replaces every ``torch.nn.RNN`` / ``LSTM`` / ``GRU`` inside a model by the
momentum layer of the same host with the same configuration and weights (as
``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` does for batch norms); the layers keep
``torch.nn``'s state contract, so the model's own training loop runs unchanged. :func:`revert`
does the reverse for plain layers. One module at a time: :func:`~momentumrnn.from_native`,
:func:`~momentumrnn.to_native`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from .hosts.gated import MomentumRNNBase
from .native import from_native, to_native

__all__ = ["convert", "revert"]

_NATIVE = (nn.RNN, nn.LSTM, nn.GRU)


def _replace(module: nn.Module, swap: Callable[[nn.Module, str], nn.Module], path: str = "") -> nn.Module:
    new = swap(module, path or "the model")
    if new is not module:
        return new
    for name, child in list(module.named_children()):
        replaced = _replace(child, swap, f"{path}.{name}" if path else name)
        if replaced is not child:
            setattr(module, name, replaced)
    return module


def _keep_flags(old: nn.Module, new: nn.Module) -> nn.Module:
    """The replaced module's training mode and frozen parameters."""
    frozen = {name for name, p in old.named_parameters() if not p.requires_grad}
    for name, p in new.named_parameters():
        if name in frozen:
            p.requires_grad_(False)
    return new.train(old.training)


def convert(model: nn.Module, scheme: str, **hyper_parameters: Any) -> nn.Module:
    """Replace every ``torch.nn.RNN`` / ``LSTM`` / ``GRU`` in ``model`` by the momentum layer of
    ``scheme`` with the same configuration, device, dtype, weights, training mode and frozen
    parameters; return ``model`` (modified in place), or the new layer when ``model`` itself is one.

    Args:
        model: any module.
        scheme: a momentum scheme (``"heavy_ball"``, ``"adam"``, ``"rmsprop"``, ``"restart"``,
            ``"nesterov"``, or ``"none"`` for this library's plain layers; aliases accepted).
        **hyper_parameters: the layers' keyword arguments (``mu``, ``epsilon``, ``beta``,
            ``restart``, ``learn_mu``, ``learn_epsilon``, ``carry_momentum``, ...).

    The new layers keep ``torch.nn``'s state contract (``(h, c)`` / ``h``, momentum from zero at
    every call) unless ``carry_momentum=True`` is passed. Hooks registered on a replaced module
    are not carried over. Subclasses of the ``torch.nn`` classes are refused (their own code
    would be lost): convert their layers with :func:`~momentumrnn.from_native` yourself.

    Example::

        model = momentumrnn.convert(model, "heavy_ball", mu=0.6, epsilon=0.6)
    """

    def swap(module: nn.Module, where: str) -> nn.Module:
        if not isinstance(module, _NATIVE):
            return module
        if type(module) not in _NATIVE:
            raise TypeError(
                f"cannot convert {where}: {type(module).__name__} subclasses torch.nn."
                f"{type(module).__mro__[1].__name__} with code of its own; convert its layers with "
                "momentumrnn.from_native yourself"
            )
        try:
            return _keep_flags(module, from_native(module, scheme, **hyper_parameters))
        except (TypeError, ValueError) as e:
            raise type(e)(f"cannot convert {where} ({module}): {e}") from e

    return _replace(model, swap)


def revert(model: nn.Module, strict: bool = True) -> nn.Module:
    """The reverse of :func:`convert` for plain layers: replace every gated momentum layer
    (RNN / LSTM / GRU host) whose scheme computes the plain cell (no momentum, or heavy ball with
    ``mu = 0, epsilon = 1``) by the ``torch.nn`` module with its configuration and weights.
    ``strict=False`` also replaces layers with momentum (the result then computes something else:
    e.g. to initialise a plain model). Returns ``model`` (modified in place) or the new module."""

    def swap(module: nn.Module, where: str) -> nn.Module:
        if not isinstance(module, MomentumRNNBase):
            return module
        try:
            return _keep_flags(module, to_native(module, strict=strict))
        except (TypeError, ValueError) as e:
            raise type(e)(f"cannot revert {where} ({type(module).__name__}): {e}") from e

    return _replace(model, swap)
