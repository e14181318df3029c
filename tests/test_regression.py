"""Saved models keep loading and give the same outputs (artifact of version 0.1.0)."""

import os

import pytest
import torch
from states import check_state, momentum_of

import momentumrnn as mr

ARTIFACT = torch.load(os.path.join(os.path.dirname(__file__), "artifacts", "regression_v1.pt"), weights_only=True)


@pytest.mark.parametrize("name", sorted(ARTIFACT["cases"]))
def test_saved_model_gives_same_outputs(name):
    case = ARTIFACT["cases"][name]
    # the artifact continues a sequence with its momentum: the carrying layer
    layer = mr.layer_class(name)(3, 4, num_layers=2, bidirectional=True, dtype=torch.float64, carry_momentum=True)
    layer.load_state_dict(case["state_dict"])
    x = case["x"]
    out, state = layer(x[:4])
    out2, state2 = layer(x[4:], state)
    torch.testing.assert_close(torch.cat([out, out2]), case["out"], rtol=1e-12, atol=1e-12)
    parts = check_state(layer, state2)
    torch.testing.assert_close(parts["h"], case["h"], rtol=1e-12, atol=1e-12)
    momentum = momentum_of(layer, state2)
    assert sorted(momentum) == sorted(case["momentum"]) == sorted(layer.scheme.state_fields)
    for k, v in case["momentum"].items():
        torch.testing.assert_close(momentum[k], v, rtol=1e-12, atol=1e-12)


def test_dropout_between_layers():
    layer = mr.MomentumLSTM(3, 4, num_layers=3, dropout=0.5)
    x = torch.randn(5, 2, 3)
    torch.manual_seed(0)
    a = layer(x)[0]
    torch.manual_seed(1)
    b = layer(x)[0]
    assert not torch.equal(a, b)  # training mode: dropout active between layers
    layer.eval()
    plain = mr.MomentumLSTM(3, 4, num_layers=3)
    plain.load_state_dict(layer.state_dict())
    assert torch.equal(layer(x)[0], plain(x)[0])  # eval mode: no dropout
