"""Former home of the fused gated recurrence, now :mod:`momentumrnn.backends.fused` (kept so that
``from momentumrnn.recurrence import fused_recurrence, DriveSpec`` keeps working)."""

from .backends.fused import DriveSpec, fused_recurrence

__all__ = ["DriveSpec", "fused_recurrence"]
