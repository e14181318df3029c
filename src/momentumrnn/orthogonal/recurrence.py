"""Former home of the modReLU recurrence, now :mod:`momentumrnn.backends.modrelu_loop` (kept so
that existing imports keep working)."""

from ..backends.modrelu_loop import BLOCK, DriveFactors, _ComplexProduct
from ..backends.modrelu_ops import modrelu_lookahead, modrelu_recurrence

__all__ = ["BLOCK", "DriveFactors", "modrelu_recurrence", "modrelu_lookahead", "_ComplexProduct"]
