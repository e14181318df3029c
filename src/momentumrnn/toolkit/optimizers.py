"""Optimizers of the toolkit beyond ``torch.optim``: one algorithm for the orthogonal parameters and
another for the rest (the expRNN / MomentumRNN authors train DTRIV on TIMIT with Adam and the
skew-symmetric parameters with RMSprop), behind the single optimizer Lightning's automatic
optimisation, gradient clipping and checkpoints expect."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Callable, Optional, Sequence

import torch


class _StateView(MutableMapping):
    """The inner optimizers' states as one mapping; a write goes to the optimizer owning the
    parameter (Lightning re-assigns every state entry when it moves optimizers between devices)."""

    def __init__(self, optimizers: Sequence[torch.optim.Optimizer]):
        self._optimizers = optimizers
        self._owner = {id(p): opt for opt in optimizers for g in opt.param_groups for p in g["params"]}

    def _state_of(self, key) -> dict:
        opt = self._owner.get(id(key))
        if opt is None:
            raise KeyError("MixedOptimizer: not one of its parameters")
        return opt.state

    def __getitem__(self, key):
        return self._state_of(key)[key]

    def __setitem__(self, key, value) -> None:
        self._state_of(key)[key] = value

    def __delitem__(self, key) -> None:
        del self._state_of(key)[key]

    def __iter__(self):
        for opt in self._optimizers:
            yield from opt.state

    def __len__(self) -> int:
        return sum(len(opt.state) for opt in self._optimizers)


class MixedOptimizer(torch.optim.Optimizer):
    """Steps several optimizers over disjoint parameter groups as one.

    ``param_groups`` are the inner optimizers' own group dicts (changing a learning rate here
    changes it there), ``state`` is a view over their states, and ``state_dict`` holds each
    inner optimizer's state dict (tensors and primitives only)."""

    def __init__(self, optimizers: Sequence[torch.optim.Optimizer]):
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

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None):
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
