"""What changes while ``torch.onnx.export`` (torch's default, torch.export-based exporter) traces
a layer.

* :func:`onnx_exporting` says when: the dispatch table then picks the ``scan`` backend
  (``backends.DISPATCH_ONNX``).
* :func:`fold`: the modReLU hosts' recurrent matrix ``B`` is a function of the parameters only
  (a matrix exponential, a Cayley transform, ENRNN's spectral normalisation), computed through
  operations ONNX does not have (``linalg.solve``, ``linalg.eig``, the ``expm_map`` operator). At
  inference it is a constant, so the export folds it: ``B`` is computed from the real parameter
  values, eagerly, and enters the traced graph as a tensor constant (an initializer of the ONNX
  model, ``*.lifted_tensor_*``), in place of its parameters.

While torch.export traces, a module's parameters and buffers are swapped for fake tensors (no
values). :func:`sources` records the real tensors a parametrization reads, whenever the layer runs
eagerly (construction, every forward, ``.to()``); :func:`fold` evaluates with them, after checking
that each fake tensor of the trace was made from exactly the recorded tensor (the fake-tensor
mode's memo): a parameter replaced since (a new ``Parameter`` assigned by hand; the layers record
again after ``load_state_dict``, ``assign=True`` included) is refused with an error, never folded
from stale values.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["onnx_exporting", "sources", "fold"]


#: torch's ONNX exporter's own flags module (private), looked up at the first export outside dynamo:
#: importing torch.onnx with the package would double ``import momentumrnn``'s time (90 -> 200 ms)
_onnx_flags = None


def onnx_exporting() -> bool:
    """Whether ``torch.onnx.export`` (the torch.export-based exporter, torch's default) is tracing.
    (The TorchScript exporter, ``dynamo=False``, traces with jit.trace: not this.)"""
    global _onnx_flags
    # torch.compiler first: cheap, False under torch.compile, and torch.onnx is asked only when it
    # may answer yes
    if not torch.compiler.is_exporting():
        return False
    if torch.compiler.is_dynamo_compiling():
        _refuse_strict_capture()
        return False
    if _onnx_flags is None:
        try:
            from torch.onnx._internal.exporter import _flags as _onnx_flags
        except ImportError:  # pragma: no cover - another torch: its strict fallback may trace the kernels
            _onnx_flags = False
    return torch.onnx.is_in_onnx_export()


def _refuse_strict_capture() -> None:
    # torch.onnx.export captures the model with torch.export's non-strict mode first (where
    # onnx_exporting looked the flags up), and falls back to its strict mode (dynamo) when that
    # fails, e.g. on a stale parameter below. Dynamo folds torch.onnx.is_in_onnx_export() to False
    # (torch/_dynamo/variables/torch.py): the layers would then trace their custom kernels, which
    # ONNX cannot translate, and the user would see that error instead of the first one. So the
    # strict capture fails here too; dynamo reads the exporter's flag as it is (a plain
    # torch.export.export(..., strict=True) is not affected).
    if _onnx_flags and getattr(_onnx_flags, "_is_onnx_exporting", False):
        raise RuntimeError(
            "momentumrnn layers export to ONNX through torch.export's non-strict capture; see the error of that capture"
        )


def sources(module: nn.Module, prefix: str = "", out: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """The tensors (parameters and buffers, by name, as ``named_parameters`` / ``named_buffers``
    name them) that ``module`` computes from. Read from the modules' dictionaries directly: a
    layer records them at every eager forward, where ``named_parameters`` cost 45 us a direction
    (10 % of a small layer's forward)."""
    out = {} if out is None else out
    for table in (module._parameters, module._buffers):
        for name, t in table.items():
            if t is not None:
                out[prefix + name] = t
    for name, child in module._modules.items():
        if child is not None:
            sources(child, f"{prefix}{name}.", out)
    return out


def _is_source(current: Tensor, source: object) -> bool:
    from torch._subclasses.fake_tensor import FakeTensor

    if not isinstance(source, Tensor):
        return False
    if isinstance(current, FakeTensor):
        # the fake-tensor mode memoizes the fake it made of each real tensor
        return current.fake_mode.from_tensor(source) is current
    return current is source


def fold(
    owner: str, module: nn.Module, recorded: dict[str, Tensor] | None, then: Callable[[Tensor], Tensor] = lambda t: t
) -> Tensor:
    """``then(module())`` evaluated eagerly with ``module``'s parameters and buffers set to their
    real values ``recorded`` (from :func:`sources`): a plain tensor, which the trace records as a
    constant. Raises a ``RuntimeError`` when the trace's tensors are not the recorded ones."""
    from torch.utils._python_dispatch import _disable_current_modes

    current = sources(module)
    recorded = recorded or {}
    with _disable_current_modes(), torch._C.DisableTorchFunction():
        stale = sorted(name for name, t in current.items() if not _is_source(t, recorded.get(name)))
        if stale:
            raise RuntimeError(
                f"{owner}: cannot fold the recurrent matrix into the exported graph: {', '.join(stale)} "
                "changed since the layer last ran (a parameter or buffer replaced by a new tensor); run the "
                "model once (any forward call) before torch.onnx.export"
            )
        with torch.no_grad():
            value = then(torch.func.functional_call(module, {name: recorded[name] for name in current}, ()))
    # a copy made in the trace: the constant becomes a traced tensor (torch's scan operator takes
    # only traced tensors as inputs)
    return value.clone()
