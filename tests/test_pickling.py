"""Whole-layer pickles (src/momentumrnn/pickling.py): ``torch.save(layer)`` / ``torch.load`` under
weights-only with only the layer's class allow-listed, as for torch.nn; ``copy.deepcopy``."""

import copy
import io
import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import momentumrnn as mr


def round_trip(obj, *classes):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    with torch.serialization.safe_globals(list(classes)):
        return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("name", mr.LAYER_NAMES)
def test_every_layer_pickles_with_only_its_class_allowed(name):
    cls = mr.layer_class(name)
    torch.manual_seed(0)
    layer = cls(3, 6, num_layers=2, bidirectional=True, dtype=torch.float64, carry_momentum=True).eval()
    with torch.no_grad():  # move off the initialisation: the loaded layer must not be a fresh one
        for p in layer.parameters():
            p.add_(0.01 * torch.randn_like(p))
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    want = layer(x)
    for twin in (round_trip(layer, cls), copy.deepcopy(layer)):
        assert isinstance(twin, cls) and not twin.training and twin.carry_momentum
        assert twin.state_names == layer.state_names
        got = twin(x)
        for a, b in zip(torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(want)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert {k: v.dtype for k, v in twin.state_dict().items()} == {k: v.dtype for k, v in layer.state_dict().items()}


def test_settings_changed_after_construction_come_back():
    layer = mr.MomentumDTRIV(3, 5, mu=0.3)
    layer.K = 7
    layer.backend = "stepwise"
    layer.carry_momentum = True
    layer.on_optimizer_step()  # a DTRIV step counter in a buffer
    twin = round_trip(layer, mr.MomentumDTRIV)
    assert (twin.K, twin.backend, twin.carry_momentum, twin.scheme.mu) == (7, "stepwise", True, 0.3)
    torch.testing.assert_close(twin.state_dict(), layer.state_dict(), rtol=0, atol=0)
    inf = mr.DTRIV(3, 5, K=math.inf)
    assert math.inf == round_trip(inf, mr.DTRIV).K


def test_enrnn_latch_comes_back():
    layer = mr.MomentumENRNN(3, 8)
    for m in layer.modules():
        if hasattr(m, "normalized"):
            m.normalized.fill_(True)
            m._latched = True
    twin = round_trip(layer, mr.MomentumENRNN)
    assert all(bool(m.normalized) and m._latched for m in twin.modules() if hasattr(m, "normalized"))


@pytest.mark.parametrize("name", mr.CELL_NAMES)
def test_cells_pickle(name):
    cls = mr.cell_class(name)
    cell = cls(3, 4, carry_momentum=True)
    twin = round_trip(cell, cls)
    x = torch.randn(2, 3)
    for a, b in zip(torch.utils._pytree.tree_leaves(twin(x)), torch.utils._pytree.tree_leaves(cell(x))):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = mr.AdamScuRNN(3, 4, batch_first=True)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


def test_a_model_holding_a_layer_pickles_with_the_user_allowlist():
    model = Model()
    x = torch.randn(2, 5, 3)
    twin = round_trip(model, Model, nn.Linear, mr.AdamScuRNN)
    torch.testing.assert_close(twin(x), model(x), rtol=0, atol=0)


def test_user_parametrizations_refuse_with_the_reason():
    class Scale(nn.Module):
        def forward(self, w):
            return 2 * w

    for layer in (mr.MomentumDTRIV(3, 4), mr.MomentumLSTM(3, 4)):
        parametrize.register_parametrization(layer, "weight_ih_l0", Scale())
        with pytest.raises(RuntimeError, match=r"registered on it after construction \(weight_ih_l0\).*state_dict"):
            torch.save(layer, io.BytesIO())
