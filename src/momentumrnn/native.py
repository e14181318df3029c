"""Conversion between momentum layers and ``torch.nn`` modules (weights are shared names, so
this is a state-dict copy plus checks)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from torch import nn

from .hosts.gated import MomentumRNNBase
from .registry import build_layer
from .schemes import HEAVY_BALL

__all__ = ["to_native", "from_native"]

_NATIVE: dict[str, Callable[..., nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def _host_of(module: nn.Module) -> str:
    for host, cls in _NATIVE.items():
        if type(module) is cls:
            return host
    raise TypeError(f"expected torch.nn.RNN, LSTM or GRU, got {type(module).__name__}")


def from_native(module: nn.RNNBase, scheme: str = HEAVY_BALL.kind, **hyper_parameters: Any) -> MomentumRNNBase:
    """A momentum layer with ``module``'s configuration and a copy of its weights.

    ``scheme`` defaults to heavy ball; with ``mu=0, epsilon=1`` (or the plain scheme) the result
    computes exactly what ``module`` computes."""
    host = _host_of(module)
    kw: dict[str, Any]
    kw = dict(
        num_layers=module.num_layers,
        bias=module.bias,
        batch_first=module.batch_first,
        dropout=module.dropout,
        bidirectional=module.bidirectional,
        proj_size=getattr(module, "proj_size", 0),
    )  # (a GRU / RNN with one is refused, clearly)
    if host == "rnn":
        kw["nonlinearity"] = module.nonlinearity
    p = next(module.parameters())
    layer = build_layer(
        host, scheme, module.input_size, module.hidden_size, device=p.device, dtype=p.dtype, **kw, **hyper_parameters
    )
    layer.load_state_dict(module.state_dict())
    return cast(MomentumRNNBase, layer)  # (a layer of a gated host)


def to_native(layer: MomentumRNNBase, strict: bool = True) -> nn.RNNBase:
    """The ``torch.nn`` module with ``layer``'s configuration and a copy of its weights.

    The result computes what ``layer`` computes only when its momentum is trivial (no momentum,
    or heavy ball with ``mu = 0, epsilon = 1``: the scheme table's ``trivial``); otherwise ``strict=True`` raises and
    ``strict=False`` copies the weights anyway (e.g. to initialise a plain model)."""
    if not isinstance(layer, MomentumRNNBase):
        raise TypeError(f"expected a momentum layer, got {type(layer).__name__}")
    sch = layer.scheme
    trivial = sch.trivial and not (layer.learn_mu or layer.learn_epsilon)
    if strict and not trivial:
        raise ValueError(
            f"{type(layer).__name__} with {sch} is not a plain {layer.host.upper()}: the native module "
            "would compute something else; pass strict=False to copy the weights anyway"
        )
    kw: dict[str, Any]
    kw = dict(
        num_layers=layer.num_layers,
        bias=layer.bias,
        batch_first=layer.batch_first,
        dropout=layer.dropout,
        bidirectional=layer.bidirectional,
    )
    if layer.host == "lstm":
        kw["proj_size"] = layer.proj_size
    if layer.host == "rnn":
        kw["nonlinearity"] = layer.nonlinearity
    p = layer.weight_ih_l0
    native = _NATIVE[layer.host](layer.input_size, layer.hidden_size, device=p.device, dtype=p.dtype, **kw)
    weights = {k: v for k, v in layer.state_dict().items() if k.startswith(("weight_", "bias_"))}
    native.load_state_dict(weights)
    return native
