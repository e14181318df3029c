"""Initializers of the skew-symmetric matrix ``A`` behind an orthogonal recurrent matrix.

All three write a block-diagonal skew-symmetric matrix with ``n // 2`` blocks
``[[0, a_j], [-a_j, 0]]`` (a trailing zero row / column when ``n`` is odd):

* :func:`cayley_init_` (the authors' default, from scoRNN): ``a_j = -sqrt((1 - cos s) / (1 + cos s))``
  with ``s ~ U[0, pi/2]``;
* :func:`henaff_init_` (Henaff et al. 2016): ``a_j ~ U[-pi, pi]``;
* :func:`torus_init_`: the recurrent matrix ``B`` is a block-diagonal rotation whose angles are
  uniform in ``[low, high]`` (uniform on the maximal torus), whatever the parametrization:
  ``a_j = theta_j`` for ``expm``, ``a_j = -tan(theta_j / 2)`` for the Cayley maps.

They take the tensor to fill and an optional ``generator``, and return it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["cayley_init_", "henaff_init_", "torus_init_", "block_diagonal_skew_", "INITIALIZERS", "get_initializer"]


def block_diagonal_skew_(A: Tensor, values: Tensor) -> Tensor:
    """Fill the square ``A`` with the skew matrix of blocks ``[[0, a_j], [-a_j, 0]]``."""
    n = A.shape[0]
    if A.dim() != 2 or A.shape[1] != n:
        raise ValueError(f"expected a square matrix, got shape {tuple(A.shape)}")
    with torch.no_grad():
        A.zero_()
        idx = torch.arange(0, 2 * (n // 2), 2, device=A.device)
        vals = values.to(dtype=A.dtype, device=A.device)
        A[idx, idx + 1] = vals
        A[idx + 1, idx] = -vals
    return A


def _uniform(n: int, low: float, high: float, like: Tensor, generator: torch.Generator | None) -> Tensor:
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    return (low + (high - low) * u).to(like.device)


def cayley_init_(A: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """The authors' Cayley initialization (their default)."""
    s = _uniform(A.shape[0] // 2, 0.0, math.pi / 2, A, generator)
    return block_diagonal_skew_(A, -torch.sqrt((1 - torch.cos(s)) / (1 + torch.cos(s))))


def henaff_init_(A: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Henaff et al.'s initialization: block entries uniform in ``[-pi, pi]``."""
    return block_diagonal_skew_(A, _uniform(A.shape[0] // 2, -math.pi, math.pi, A, generator))


def torus_init_(
    A: Tensor,
    generator: torch.Generator | None = None,
    *,
    low: float = -math.pi,
    high: float = math.pi,
    map: str = "expm",
) -> Tensor:
    """``B`` a block rotation with angles uniform in ``[low, high]`` under the map ``map``
    (``"expm"``, or ``"cayley"`` for the scaled Cayley maps)."""
    if not low <= high:
        raise ValueError(f"torus_init_: need low <= high, got [{low}, {high}]")
    theta = _uniform(A.shape[0] // 2, low, high, A, generator)
    if map == "expm":
        return block_diagonal_skew_(A, theta)
    if map == "cayley":
        # Cayley of the block [[0, a], [-a, 0]] rotates by -2 atan(a); keep off the pole at +-pi.
        theta = theta.clamp(-math.pi + 1e-6, math.pi - 1e-6)
        return block_diagonal_skew_(A, -torch.tan(theta / 2))
    raise ValueError(f"torus_init_: map must be 'expm' or 'cayley', got {map!r}")


#: initializer name (a layer's ``init``) -> initializer of the skew parameter
INITIALIZERS = {"cayley": cayley_init_, "henaff": henaff_init_, "torus": torus_init_}


def get_initializer(init: str | Callable[[Tensor], Tensor]) -> Callable[..., Tensor]:
    """An initializer by name (``"cayley"``, ``"henaff"``, ``"torus"``) or a callable ``f(A)``."""
    if callable(init):
        return init
    if not isinstance(init, str) or init.lower() not in INITIALIZERS:
        raise ValueError(f"unknown initializer {init!r}; expected one of {', '.join(INITIALIZERS)} or a callable")
    return INITIALIZERS[init.lower()]
