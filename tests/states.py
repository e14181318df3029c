"""Test helpers for the state contract: a dict of named state tensors to and from the flat state
of a layer or cell built with ``carry_momentum=True`` (``layer.state_names`` gives the order)."""

import torch


def to_state(module, parts):
    """The state ``module`` takes, from ``{name: tensor}`` (``None``: ``None``). Without the
    momentum fields (or without ``carry_momentum``): ``torch.nn``'s ``(h, c)`` / ``h``."""
    if parts is None:
        return None
    names = [n for n in module.state_names if n in parts]
    if names == ["h"]:
        return parts["h"]
    return tuple(parts[n] for n in names)


def parts_of(module, state) -> dict:
    """``{name: tensor}`` of a state ``module`` returned."""
    if isinstance(state, torch.Tensor):
        return {"h": state}
    return dict(zip(module.state_names, state))


def momentum_of(module, state) -> dict:
    """The momentum fields of a carried state: ``{name: tensor}`` without ``h`` and ``c``."""
    return {k: v for k, v in parts_of(module, state).items() if k not in ("h", "c")}


def check_state(module, state):
    """Assert that ``state`` has the form ``module`` returns: with ``carry_momentum`` and momentum
    fields, a plain tuple ``(h, [c,] *fields)`` of tensors in the scheme table's order (``step``
    int64); otherwise ``torch.nn``'s: a plain tuple ``(h, c)`` of two tensors on the LSTM host, a
    tensor ``h`` on every other host. Returns ``parts_of(module, state)``."""
    hidden = ("h", "c") if module.host == "lstm" else ("h",)
    fields = tuple(module.scheme.state_fields) if module.carry_momentum else ()
    assert module.state_names == hidden + fields, (module.state_names, hidden + fields)
    if len(hidden + fields) == 1:
        assert isinstance(state, torch.Tensor), type(state)
    else:
        assert type(state) is tuple, type(state)
        assert len(state) == len(hidden + fields), (len(state), hidden + fields)
        assert all(isinstance(t, torch.Tensor) for t in state), [type(t) for t in state]
    parts = parts_of(module, state)
    if "step" in parts:
        assert parts["step"].dtype == torch.int64, parts["step"].dtype
    return parts
