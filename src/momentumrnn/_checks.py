"""Argument and input validation shared by layers and cells: one clear message per mistake,
saying what was given and what is expected."""

from __future__ import annotations

import numbers

import torch
from torch import Tensor


def check_size(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be greater than zero, got {value}")
    return int(value)


def check_dropout(dropout) -> float:
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Number):
        raise TypeError(f"dropout should be a number in range [0, 1], got {dropout!r}")
    if not 0 <= dropout <= 1:
        raise ValueError(f"dropout should be a number in range [0, 1] representing the probability of "
                         f"an element being zeroed, got {dropout}")
    return float(dropout)


def check_tensor(name: str, value, dtype: torch.dtype, device: torch.device) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype != dtype:
        raise TypeError(f"{name} has dtype {value.dtype} but the layer's parameters are {dtype}; "
                        f"convert one of them (e.g. layer.to({value.dtype}) or x.to({dtype}))")
    if value.device != device:
        raise ValueError(f"{name} is on device {value.device} but the layer's parameters are on {device}")
    return value


def check_shape(name: str, value: Tensor, expected: tuple) -> None:
    if tuple(value.shape) != tuple(expected):
        raise ValueError(f"{name} has shape {tuple(value.shape)}, expected {tuple(expected)}")
