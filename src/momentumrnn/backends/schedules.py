"""The per-call coefficients of the momentum schemes, kept between calls where they cannot change.

A layer with a constant ``mu`` (not learned) and no carried restart counter gets the same
coefficients at every call of the same length: heavy ball's ``mu``, the restart schedule's
``mu_k`` and counters ``k``, Nesterov's ``alpha_t, beta_t``, and the filter's triangular system
(:func:`momentumrnn.filters.system_matrix`). Building them is a handful of small operations
(the restart schedule about ten), a noticeable part of a call at small sizes: at T = 64, B = 32,
H = 32 (one thread, forward + backward) kept coefficients saved 110 us of 2.2 ms for the
scheduled-restart heavy ball on the native kernel. Up to 32 entries are kept (keyed by
the scheme's kind and restart period, ``mu``, the length, dtype and device); nothing is kept while
torch.compile / torch.export / jit.trace trace (a trace gets fresh tensors, no constants).

Kept tensors are shared between calls: callers read them, and hand users tensors of their own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..filters import system_matrix

if TYPE_CHECKING:
    from torch.types import Device

    from ..schemes import Scheme

__all__ = ["velocity", "lookahead"]

_KEPT: dict[tuple, tuple] = {}
_LIMIT = 32


def _keeps(mu: object, step0: Tensor | None) -> bool:
    return (
        not isinstance(mu, Tensor)
        and step0 is None
        and not torch.compiler.is_compiling()
        and not torch.jit.is_tracing()
    )


def _kept(key: tuple, build: Callable[[], tuple]) -> tuple:
    got = _KEPT.get(key)
    if got is None:
        if len(_KEPT) >= _LIMIT:
            _KEPT.clear()
        got = _KEPT[key] = build()
    return got


def velocity(
    scheme: Scheme, mu: float | Tensor, T: int, step0: Tensor | None, dtype: torch.dtype, device: Device
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """``(coeff, k, system)``: :meth:`~momentumrnn.schemes.Scheme.velocity_coefficient` and the
    filter's :func:`~momentumrnn.filters.system_matrix` for up to 256 steps (the longest its solve
    runs; ``None`` otherwise, and whenever not kept: the filter builds it)."""
    if not _keeps(mu, step0):
        coeff, k = scheme.velocity_coefficient(mu, T, step0, dtype, device)
        return coeff, k, None

    def build() -> tuple:
        coeff, k = scheme.velocity_coefficient(mu, T, None, dtype, device)
        return coeff, k, system_matrix(coeff.to(dtype), T) if 0 < T <= 256 else None

    return _kept(("velocity", scheme.kind, scheme.restart, mu, T, dtype, str(device)), build)


def lookahead(
    scheme: Scheme, T: int, step0: Tensor | None, dtype: torch.dtype, device: Device
) -> tuple[Tensor, Tensor, Tensor]:
    """``(alpha, beta, k)`` of the Nesterov lookahead ``g_t = alpha_t p_t - beta_t p_{t-1}``
    (``(T, B')`` each; ``alpha = 1 + beta``, ``beta`` the schedule's ``mu_k``)."""

    def build() -> tuple:
        beta_k, k = scheme.schedule(T, step0, dtype, device)
        beta_k = beta_k.squeeze(2)
        return 1 + beta_k, beta_k, k

    if not _keeps(0.0, step0):
        return build()
    return _kept(("lookahead", scheme.kind, scheme.restart, T, dtype, str(device)), build)
