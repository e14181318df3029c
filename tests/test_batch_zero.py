"""An empty batch returns empty outputs and states, as torch.nn does, for every layer, backend and
cell (and gradients flow), with torch.nn's state and with the carried momentum."""

import pytest
import torch
from states import check_state
from torch import nn

import momentumrnn as mr
from momentumrnn import backends


def _backends(family):
    return [None] + [n for n, b in backends.BACKENDS.items() if family in b.families and len(b.drives) == 4]


@pytest.mark.parametrize("name", list(mr.LAYER_NAMES))
def test_layers(name):
    cls = mr.layer_class(name)
    for backend in _backends(cls.family):
        for carry in (True, False):
            layer = cls(
                3, 4, num_layers=2, bidirectional=True, batch_first=True, dtype=torch.float64, carry_momentum=carry
            )
            layer.backend = backend
            x = torch.randn(0, 5, 3, dtype=torch.float64, requires_grad=True)
            out, state = layer(x)
            assert out.shape == (0, 5, layer.output_size)
            parts = check_state(layer, state)
            assert parts["h"].shape == (4, 0, 4)
            assert list(parts) == ["h"] + (["c"] if layer.host == "lstm" else []) + (
                list(layer.scheme.state_fields) if carry else []
            )
            for f in layer.scheme.state_fields if carry else ():
                assert parts[f].shape[:2] == (4, 0)
            (out.sum() + parts["h"].abs().sum()).backward()
            assert x.grad.shape == x.shape
            out2, _ = layer(x, state)  # an empty state is a valid state
            assert out2.shape == out.shape


def test_like_torch_nn():
    native = nn.LSTM(3, 4, num_layers=2)
    layer = mr.from_native(native, "none")
    x = torch.randn(6, 0, 3)
    (o1, (h1, c1)), (o2, s2) = native(x), layer(x)
    assert type(s2) is tuple and len(s2) == 2
    assert o1.shape == o2.shape and h1.shape == s2[0].shape and c1.shape == s2[1].shape


@pytest.mark.parametrize("name", list(mr.CELL_NAMES))
def test_cells(name):
    for carry in (True, False):
        cell = mr.cell_class(name)(3, 4, carry_momentum=carry)
        state = cell(torch.randn(0, 3))
        parts = check_state(cell, state)
        assert parts["h"].shape == (0, 4)
        for f in cell.scheme.state_fields if carry else ():
            assert parts[f].shape[0] == 0
        assert check_state(cell, cell(torch.randn(0, 3), state))["h"].shape == (0, 4)
