"""modReLU (Arjovsky et al. 2016): ``modReLU(z) = sgn(z) * relu(|z| + b)``.

On a real ``z`` this is ``sign(z) * relu(|z| + b)``; on a complex ``z`` it acts on the modulus and
keeps the phase, ``z / |z| * relu(|z| + b)`` (0 at ``z = 0``). scuRNN's code smooths the modulus
with ``+1e-5``; this library uses the exact map.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["modrelu", "modrelu_pairs"]


def modrelu(z: Tensor, bias: Tensor) -> Tensor:
    """modReLU of a real or complex ``z`` (``bias`` real, broadcast over the last dimension)."""
    return torch.sgn(z) * torch.relu(z.abs() + bias)


def modrelu_pairs(z: Tensor, bias: Tensor) -> Tensor:
    """modReLU of complex numbers stored as ``[real parts, imaginary parts]`` along the last
    dimension (size ``2H``; ``bias`` of size ``H``)."""
    H = bias.shape[-1]
    re, im = z[..., :H], z[..., H:]
    r = torch.hypot(re, im)
    scale = torch.where(r > 0, torch.relu(r + bias) / torch.where(r > 0, r, 1), 0)
    return z * torch.cat([scale, scale], -1)
