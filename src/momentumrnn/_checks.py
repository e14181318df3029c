"""Argument and input validation shared by layers and cells: one clear message per mistake,
saying what was given and what is expected."""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .schemes import MomentumState, Scheme


def check_size(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be greater than zero, got {value}")
    return int(value)


def check_dropout(dropout: float) -> float:
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Number):
        raise TypeError(f"dropout should be a number in range [0, 1], got {dropout!r}")
    if not 0 <= dropout <= 1:
        raise ValueError(
            f"dropout should be a number in range [0, 1] representing the probability of "
            f"an element being zeroed, got {dropout}"
        )
    return float(dropout)


def check_nonlinearity(host: str, nonlinearity: str | None) -> str | None:
    """``torch.nn.RNN``'s ``nonlinearity`` (``tanh`` by default, or ``relu``); other hosts take none."""
    if host == "rnn":
        nonlinearity = "tanh" if nonlinearity is None else nonlinearity
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
        return nonlinearity
    if nonlinearity is not None:
        raise ValueError(f"nonlinearity applies to RNN hosts only, not {host!r}")
    return None


def check_proj_size(host: str, proj_size: int, hidden_size: int) -> int:
    """``torch.nn.LSTM``'s ``proj_size`` (0: no projection); other hosts take only 0. torch.nn's
    messages, with the values given."""
    if isinstance(proj_size, bool) or not isinstance(proj_size, numbers.Integral):
        raise TypeError(f"proj_size should be of type int, got: {type(proj_size).__name__}")
    if host != "lstm" and proj_size != 0:
        raise ValueError(
            f"proj_size argument is only supported for LSTM, not RNN or GRU (got proj_size={proj_size} "
            f"on the {host.upper()} host; 0 means no projection)"
        )
    if proj_size < 0:
        raise ValueError(f"proj_size should be a positive integer or zero to disable projections, got {proj_size}")
    if proj_size >= hidden_size:
        raise ValueError(
            f"proj_size has to be smaller than hidden_size, got proj_size={proj_size} and hidden_size={hidden_size}"
        )
    return int(proj_size)


def check_tensor(name: str, value: object, dtype: torch.dtype, device: torch.device) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype != dtype:
        raise TypeError(
            f"{name} has dtype {value.dtype} but the layer's parameters are {dtype}; "
            f"convert one of them (e.g. layer.to({value.dtype}) or x.to({dtype}))"
        )
    if value.device != device:
        raise ValueError(f"{name} is on device {value.device} but the layer's parameters are on {device}")
    return value


def check_precision(owner: str, scheme: Scheme, dtype: torch.dtype) -> None:
    """A normalized drive (``/ sqrt(m_t + 1e-16)``) cannot run in float16: the ``1e-16`` is 0
    there and ``1 / sqrt(m_t)`` overflows for small inputs (infinite gradients)."""
    if dtype == torch.float16 and scheme.spec.normalized:
        raise TypeError(
            f"{owner} has float16 parameters, but its drive is normalized by sqrt(m_t + 1e-16) "
            f"(scheme {scheme.kind!r}): in float16 the 1e-16 is 0 and 1/sqrt(m_t) overflows for small "
            "inputs (infinite gradients); use bfloat16 (float32's range) or float32, or run under "
            "torch.autocast (the layer then computes in float32)"
        )


def check_shape(name: str, value: Tensor, expected: tuple) -> None:
    if tuple(value.shape) != tuple(expected):
        raise ValueError(f"{name} has shape {tuple(value.shape)}, expected {tuple(expected)}")


def set_recurrent_args(
    module: Any,
    input_size: int,
    hidden_size: int,
    num_layers: int,
    batch_first: bool,
    dropout: float,
    bidirectional: bool,
) -> None:
    """Check and set the ``torch.nn.RNNBase`` constructor arguments every layer shares (with
    torch.nn's warning for dropout on a single layer)."""
    module.input_size = check_size("input_size", input_size)
    module.hidden_size = check_size("hidden_size", hidden_size)
    module.num_layers = check_size("num_layers", num_layers)
    module.batch_first = bool(batch_first)
    module.dropout = check_dropout(dropout)
    module.bidirectional = bool(bidirectional)
    if module.dropout > 0 and module.num_layers == 1:
        import warnings

        warnings.warn(
            "dropout option adds dropout after all but last recurrent layer, so non-zero dropout "
            f"expects num_layers greater than 1, but got dropout={dropout} and num_layers={num_layers}",
            stacklevel=2,
        )


def check_momentum_state(
    momentum: object, scheme: Scheme, lead: tuple, batch_dim: int | None, device: torch.device
) -> MomentumState:
    """A user's momentum state checked against ``scheme``: a ``MomentumState(v, m, p, step)`` with
    only the scheme's fields, ``step`` an integer tensor of shape ``lead`` within the restart
    period. Returns the MomentumState with ``step`` made ``long`` and given a batch dimension at
    ``batch_dim`` (``None``: already batched); ``v``, ``m``, ``p`` are returned as given (their
    shapes and dtypes depend on the host)."""
    from .schemes import MomentumState

    if not isinstance(momentum, tuple) or len(momentum) != 4:
        raise TypeError("momentum state must be a MomentumState(v, m, p, step)")
    momentum = MomentumState(*momentum)
    fields = scheme.state_fields
    for name in ("v", "m", "p", "step"):
        if getattr(momentum, name) is not None and name not in fields:
            raise ValueError(
                f"momentum state has field {name!r}, which scheme {scheme.kind!r} does not use "
                f"(it uses {', '.join(fields) or 'no fields'}); was it made by another layer?"
            )
    step = momentum.step
    if step is not None:
        if not isinstance(step, Tensor) or step.dtype not in (torch.int32, torch.int64):
            raise TypeError("momentum step must be an integer tensor")
        if tuple(step.shape) != tuple(lead):
            raise ValueError(f"momentum step has shape {tuple(step.shape)}, expected {tuple(lead)}")
        F_ = scheme.restart
        # (a check of values: skipped while torch.compile / torch.export / jit.trace trace, where
        # reading a value would break the graph or bake one input's answer into it)
        if step.numel() and not _tracing() and (bool((step < 0).any()) or (F_ > 0 and bool((step > F_).any()))):
            raise ValueError(
                f"momentum step (restart counter) must be in [0, {F_ if F_ else 'inf'}], "
                f"got values in [{int(step.min())}, {int(step.max())}]"
            )
        if batch_dim is not None:
            step = step.unsqueeze(batch_dim)
        step = step.to(device=device, dtype=torch.long)
    return momentum._replace(step=step)


def _tracing() -> bool:
    return torch.compiler.is_compiling() or torch.jit.is_tracing()
