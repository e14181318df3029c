"""Training helpers for orthogonal hosts: the ``lr`` / ``lr_orth`` parameter split and the base
change of the dynamic trivialization (DTRIV) after optimizer steps.

Typical use (the authors' permuted-MNIST DTRIV recipe)::

    orth, other = split_parameters(model)
    opt = torch.optim.RMSprop([{"params": other, "lr": 7e-4}, {"params": orth, "lr": 2e-4}])
    register_optimizer_hook(opt, model)      # or call model_layer.on_optimizer_step() after opt.step()
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, cast

from torch import nn
from torch.nn.utils import parametrize

from .parametrizations import DynamicExpm, OrthogonalParametrization, check_K

if TYPE_CHECKING:
    import torch
    from torch.utils.hooks import RemovableHandle

__all__ = ["split_parameters", "DynamicTrivialization", "register_optimizer_hook"]


def _parametrized(module: nn.Module) -> Iterator[tuple[parametrize.ParametrizationList, OrthogonalParametrization]]:
    """``(parametrization list, its first parametrization)`` of every orthogonal tensor."""
    for m in module.modules():
        if parametrize.is_parametrized(m):
            for plist in cast("Mapping[str, parametrize.ParametrizationList]", m.parametrizations).values():
                first = plist[0]
                if isinstance(first, OrthogonalParametrization):
                    yield plist, first


def split_parameters(module: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``(orthogonal, other)``: the parameters to train with the orthogonal learning rate (what
    each layer's ``orthogonal_parameters()`` lists: skew parameters, scuRNN's ``theta``, ENRNN's
    ``W1`` skew parameter; for other modules, the parameters behind orthogonal parametrizations)
    and all the others, each once, in ``module.parameters()`` order for ``other``. Works on any
    module containing such layers."""
    seen: set[int] = set()
    orth: list[nn.Parameter] = []

    def add(params: Iterable[nn.Parameter]) -> None:
        for p in params:
            if id(p) not in seen:
                seen.add(id(p))
                orth.append(p)

    covered: set[int] = set()
    for m in module.modules():
        orthogonal_parameters = getattr(m, "orthogonal_parameters", None)
        if callable(orthogonal_parameters) and id(m) not in covered:
            add(orthogonal_parameters())
            covered.update(id(sub) for sub in m.modules())
    for m in module.modules():
        if id(m) not in covered and parametrize.is_parametrized(m):
            for plist in cast("Mapping[str, parametrize.ParametrizationList]", m.parametrizations).values():
                if isinstance(plist[0], OrthogonalParametrization):
                    add(plist.parameters())
    other = [p for p in module.parameters() if id(p) not in seen]
    return orth, other


class DynamicTrivialization:
    """Base changes of every DTRIV matrix in ``module``: call :meth:`step` after each optimizer
    step. With ``K`` given it overrides the layers' own ``K`` (a positive int or ``math.inf``).

    Do not combine with the layers' ``on_optimizer_step()`` (the steps would be counted twice)."""

    def __init__(self, module: nn.Module, K: int | float | str | None = None) -> None:
        self.K = None if K is None else check_K(K)
        self._targets = [(plist.original, p) for plist, p in _parametrized(module) if isinstance(p, DynamicExpm)]
        if self.K is not None:
            for _, p in self._targets:
                p.K = self.K
        self.steps = 0

    def __len__(self) -> int:
        return len(self._targets)

    def step(self) -> int:
        """Count one optimizer step; returns how many base changes happened."""
        self.steps += 1
        return sum(bool(p.optimizer_step(original)) for original, p in self._targets)

    def change_base(self) -> None:
        """Change every base now (whatever ``K``)."""
        for original, p in self._targets:
            p.change_base_(original)


def register_optimizer_hook(
    optimizer: torch.optim.Optimizer, module: nn.Module, K: int | float | str | None = None
) -> RemovableHandle:
    """Run :class:`DynamicTrivialization` ``(module, K)`` after every ``optimizer.step()`` (through
    ``register_step_post_hook``, so any optimizer works). Register it on ONE optimizer: the one
    that updates the orthogonal parameters. Returns the hook handle (``.remove()`` to stop)."""
    dt = DynamicTrivialization(module, K)

    def hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        dt.step()

    handle = optimizer.register_step_post_hook(hook)
    handle.trivialization = dt  # type: ignore[attr-defined]  # (an attribute of our own on torch's handle)
    return handle
