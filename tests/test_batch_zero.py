"""An empty batch returns empty outputs and states, as torch.nn does, for every layer, backend and
cell (and gradients flow)."""

import pytest
import torch
from torch import nn

import momentumrnn as mr
from momentumrnn import backends


def _backends(family):
    return [None] + [n for n, b in backends.BACKENDS.items() if family in b.families and len(b.drives) == 4]


@pytest.mark.parametrize("name", list(mr.LAYER_NAMES))
def test_layers(name):
    cls = mr.layer_class(name)
    for backend in _backends(cls.family):
        layer = cls(3, 4, num_layers=2, bidirectional=True, batch_first=True, dtype=torch.float64)
        layer.backend = backend
        x = torch.randn(0, 5, 3, dtype=torch.float64, requires_grad=True)
        out, state = layer(x)
        assert out.shape == (0, 5, layer.output_size)
        assert state.h.shape == (4, 0, 4)
        for f in layer.scheme.state_fields:
            assert getattr(state.momentum, f).shape[:2] == (4, 0)
        (out.sum() + state.h.abs().sum()).backward()
        assert x.grad.shape == x.shape
        out2, _ = layer(x, state)  # an empty state is a valid state
        assert out2.shape == out.shape


def test_like_torch_nn():
    native = nn.LSTM(3, 4, num_layers=2)
    layer = mr.from_native(native, "none")
    x = torch.randn(6, 0, 3)
    (o1, (h1, c1)), (o2, s2) = native(x), layer(x)
    assert o1.shape == o2.shape and h1.shape == s2.h.shape and c1.shape == s2.c.shape


@pytest.mark.parametrize("name", list(mr.CELL_NAMES))
def test_cells(name):
    cell = mr.cell_class(name)(3, 4)
    state = cell(torch.randn(0, 3))
    assert state.h.shape == (0, 4)
    for f in cell.scheme.state_fields:
        assert getattr(state.momentum, f).shape[0] == 0
    assert cell(torch.randn(0, 3), state).h.shape == (0, 4)
