"""Whole-layer pickles (``torch.save(model)``, ``torch.load(path)``, ``copy.deepcopy``), as for
``torch.nn``'s layers: under ``torch.load(weights_only=True)`` a user allow-lists the layer classes
and nothing of this library's internals.

Two things stand in the way of the default pickle of a module, and :class:`PicklableLayer`
removes both:

* the layer's :class:`~momentumrnn.schemes.Scheme` (a dataclass in ``__dict__``, a global the
  weights-only unpickler refuses): pickled as a dict of primitives, rebuilt on load;
* the modReLU hosts' recurrent matrix comes from ``torch.nn.utils.parametrize``, which replaces
  the layer's class by a generated ``Parametrized<Layer>`` that refuses to pickle ("Serialization
  of parametrized modules is only supported through state_dict()"). Such a layer pickles as a
  call of its own class (``MomentumDTRIV(payload)``, the one global to allow-list) with its
  constructor's arguments and its ``state_dict()``: loading constructs it again and assigns the
  saved tensors (their dtype and device, ``load_state_dict(assign=True)``), so parametrizations,
  buffers (DTRIV's base, ENRNN's latch) and settings (``carry_momentum``, ``backend``, ``K``) are
  those saved. The class's metaclass, :class:`LayerType`, records the constructor's arguments and
  recognises that payload.

What a rebuilt layer does not keep: hooks registered on it, and parametrizations a user added
after construction (e.g. weight dropout): such a layer refuses to pickle with the reason, as
``torch.nn.utils.parametrize`` does for any module (save its ``state_dict()`` instead).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from torch.nn.utils import parametrize

from .schemes import Scheme

if TYPE_CHECKING:
    from torch import nn

    _Module = nn.Module  # the mixin's host class, for the checker
else:
    _Module = object

__all__ = ["LayerType", "PicklableLayer"]

_REBUILD = "_momentumrnn_rebuild"


def _layout(layer: nn.Module) -> dict[str, tuple[str, ...]]:
    """``{tensor name: parametrization classes}`` of a module (``{}``: not parametrized)."""
    if not parametrize.is_parametrized(layer):
        return {}
    plists = cast("Mapping[str, parametrize.ParametrizationList]", layer.parametrizations)
    return {name: tuple(type(p).__qualname__ for p in plist) for name, plist in plists.items()}


class _ConstructorSignature:
    """A class's ``__signature__``: its constructor's (``inspect``, ``help``, IDEs and the API
    reference would otherwise show the metaclass's ``__call__(*args, **kwargs)``)."""

    def __get__(self, cls: LayerType | None, metaclass: type | None = None) -> inspect.Signature | None:
        if cls is None:  # the metaclass itself
            return None
        sig = inspect.signature(cls.__init__)  # type: ignore[misc]  # (the constructor of that very class)
        return sig.replace(parameters=list(sig.parameters.values())[1:])


class LayerType(type):
    """Metaclass of the layers: records the constructor's arguments and the parametrizations it
    registered, and rebuilds a layer from a pickle's payload (module docstring)."""

    __signature__ = _ConstructorSignature()

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if len(args) == 1 and not kwargs and isinstance(args[0], dict) and _REBUILD in args[0]:
            payload = args[0]
            layer = cls(*payload["args"], **payload["kwargs"])
            layer.load_state_dict(payload["state_dict"], assign=True)
            for key, value in payload["attributes"].items():
                setattr(layer, key, value)
            return layer.train(payload["training"])
        layer = super().__call__(*args, **kwargs)
        layer.__dict__["_init_args"] = (args, kwargs)
        layer.__dict__["_own_parametrizations"] = _layout(layer)
        return layer


class PicklableLayer(_Module, metaclass=LayerType):
    """Mixin of :class:`~momentumrnn.sequence.SequenceBase` (module docstring)."""

    #: attributes that may change after construction and are restored on a rebuild (unless None)
    _rebuild_attributes: tuple = ("carry_momentum", "backend")

    def __reduce_ex__(self, protocol: Any) -> Any:
        if not parametrize.is_parametrized(self):
            return super().__reduce_ex__(protocol)
        name = type(self).__name__
        own, now = self.__dict__.get("_own_parametrizations"), _layout(self)
        if own != now:
            added = sorted(k for k in now if own is None or now[k] != own.get(k))
            raise RuntimeError(
                f"{name} cannot be pickled whole: parametrizations were registered on it after construction "
                f"({', '.join(added)}), which torch.nn.utils.parametrize serializes only through state_dict(); "
                "save model.state_dict() instead (or remove them with parametrize.remove_parametrizations)"
            )
        cls = type(self).__bases__[0]  # the class parametrize replaced (MomentumDTRIV, ...)
        args, kwargs = self.__dict__["_init_args"]
        kwargs = {k: v for k, v in kwargs.items() if k != "device"}  # the saved tensors bring theirs
        attributes = {k: getattr(self, k) for k in self._rebuild_attributes if getattr(self, k) is not None}
        payload = {
            _REBUILD: 1,
            "args": tuple(args),
            "kwargs": kwargs,
            "state_dict": self.state_dict(),
            "attributes": attributes,
            "training": self.training,
        }
        return cls, (payload,)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["scheme"] = dataclasses.asdict(state["scheme"])  # primitives: no global to allow-list
        for key in ("_init_args", "_own_parametrizations"):  # needed by parametrized layers only
            state.pop(key, None)
        return state

    def __setstate__(self, state: Mapping[str, Any]) -> None:
        state = dict(state)
        if isinstance(state.get("scheme"), dict):
            state["scheme"] = Scheme(**state["scheme"])
        super().__setstate__(state)
