"""Optimizers of the toolkit beyond ``torch.optim``: one algorithm for the orthogonal parameters and
another for the rest (the expRNN / MomentumRNN authors train DTRIV on TIMIT with Adam and the
skew-symmetric parameters with RMSprop), behind the single optimizer Lightning's automatic
optimisation, gradient clipping and checkpoints expect; and TensorFlow 1's RMSProp, which the ENRNN
authors trained with (its running average starts at ones, its epsilon sits inside the square root)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, overload

import torch

if TYPE_CHECKING:
    from torch.optim.optimizer import ParamsT


class _StateView(MutableMapping):
    """The inner optimizers' states as one mapping; a write goes to the optimizer owning the
    parameter (Lightning re-assigns every state entry when it moves optimizers between devices)."""

    def __init__(self, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        self._optimizers = optimizers
        self._owner = {id(p): opt for opt in optimizers for g in opt.param_groups for p in g["params"]}

    def _state_of(self, key: torch.Tensor) -> dict:
        opt = self._owner.get(id(key))
        if opt is None:
            raise KeyError("MixedOptimizer: not one of its parameters")
        return opt.state

    def __getitem__(self, key: torch.Tensor) -> Any:
        return self._state_of(key)[key]

    def __setitem__(self, key: torch.Tensor, value: Any) -> None:
        self._state_of(key)[key] = value

    def __delitem__(self, key: torch.Tensor) -> None:
        del self._state_of(key)[key]

    def __iter__(self) -> Iterator[torch.Tensor]:
        for opt in self._optimizers:
            yield from opt.state

    def __len__(self) -> int:
        return sum(len(opt.state) for opt in self._optimizers)


class MixedOptimizer(torch.optim.Optimizer):
    """Steps several optimizers over disjoint parameter groups as one.

    ``param_groups`` are the inner optimizers' own group dicts (changing a learning rate here
    changes it there), ``state`` is a view over their states, and ``state_dict`` holds each
    inner optimizer's state dict (tensors and primitives only)."""

    def __init__(self, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        if len(optimizers) < 2:
            raise ValueError("MixedOptimizer needs at least two optimizers")
        seen: set[int] = set()
        for opt in optimizers:
            for group in opt.param_groups:
                for p in group["params"]:
                    if id(p) in seen:
                        raise ValueError("MixedOptimizer: a parameter belongs to two optimizers")
                    seen.add(id(p))
        self.optimizers = list(optimizers)
        params = [p for opt in self.optimizers for g in opt.param_groups for p in g["params"]]
        super().__init__(params, {})
        self.param_groups = [g for opt in self.optimizers for g in opt.param_groups]
        self.state = _StateView(self.optimizers)  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "MixedOptimizer(" + ", ".join(type(o).__name__ for o in self.optimizers) + ")"

    @overload
    def step(self, closure: None = None) -> None: ...
    @overload
    def step(self, closure: Callable[[], float]) -> float: ...

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for opt in self.optimizers:
            opt.step()
        return loss

    def state_dict(self) -> dict:
        return {"mixed": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state_dict: dict) -> None:
        inner = state_dict.get("mixed") if isinstance(state_dict, dict) else None
        if not isinstance(inner, list) or len(inner) != len(self.optimizers):
            raise ValueError("MixedOptimizer.load_state_dict: the state was saved by another optimizer setup")
        for opt, sd in zip(self.optimizers, inner):
            opt.load_state_dict(sd)
        self.param_groups = [g for opt in self.optimizers for g in opt.param_groups]
        self.state = _StateView(self.optimizers)  # type: ignore[assignment]


class RMSpropTF(torch.optim.Optimizer):
    """TensorFlow 1's ``RMSPropOptimizer``:
    ``ms <- alpha ms + (1 - alpha) g^2`` with ``ms`` starting at **ones**,
    ``mom <- momentum mom + lr g / sqrt(ms + eps)`` (eps **inside** the square root),
    ``p <- p - mom``; ``weight_decay`` adds ``weight_decay * p`` to ``g`` first. TF's defaults are
    ``alpha = 0.9``, ``eps = 1e-10``, ``momentum = 0``. (``torch.optim.RMSprop`` starts at zeros and
    adds eps outside the root: the first steps differ by orders of magnitude.)"""

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        alpha: float = 0.9,
        eps: float = 1e-10,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        if not lr > 0 or not 0 < alpha < 1 or not eps > 0 or not 0 <= momentum < 1 or weight_decay < 0:
            raise ValueError(
                f"RMSpropTF: bad settings lr={lr}, alpha={alpha}, eps={eps}, momentum={momentum}, "
                f"weight_decay={weight_decay}"
            )
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, momentum=momentum, weight_decay=weight_decay))

    @overload
    def step(self, closure: None = None) -> None: ...
    @overload
    def step(self, closure: Callable[[], float]) -> float: ...

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["weight_decay"]:
                    g = g.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["ms"] = torch.ones_like(p, memory_format=torch.preserve_format)
                    state["mom"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                ms, mom = state["ms"], state["mom"]
                ms.mul_(group["alpha"]).addcmul_(g, g, value=1 - group["alpha"])
                mom.mul_(group["momentum"]).addcdiv_(g, ms.add(group["eps"]).sqrt_(), value=group["lr"])
                p.sub_(mom)
        return loss
