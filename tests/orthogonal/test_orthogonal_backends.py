"""modReLU hosts (orthogonal, unitary, ENRNN) on every backend that can run them, and with
learnable hyper-parameters, against the literal reference in float64."""

import itertools

import pytest
import torch
from test_orthogonal_parity import HOSTS, KINDS, assert_match, make, random_state, run_both

import momentumrnn as mr


@pytest.mark.parametrize("host,kind", list(itertools.product(HOSTS, KINDS)))
def test_stepwise_backend(host, kind):
    layer = make(host, kind, hidden=4, num_layers=2, bidirectional=True)
    layer.backend = "stepwise"
    x = torch.randn(7, 4, 3, dtype=torch.float64, requires_grad=True)
    assert_match(layer, *run_both(layer, x, [7, 3, 5, 1], random_state(layer, 4)))


@pytest.mark.parametrize(
    "host,kind,input_size",
    [
        (h, k, i)
        for h, k in itertools.product([*HOSTS, "enrnn"], ["heavy_ball", "adam", "rmsprop", "restart", "nesterov"])
        for i in (1, 7)
    ],
)
def test_learnable_hyper_parameters(host, kind, input_size):
    # input_size 1: the factored drive; 7 (wider than the state): the dense one
    kw = {"learn_mu": True} if "mu" in mr.SCHEMES[kind].defaults else {}
    if host == "enrnn":
        torch.manual_seed(0)
        layer = mr.build_layer(
            "enrnn",
            kind,
            input_size,
            5,
            short_size=2,
            dtype=torch.float64,
            learn_epsilon=True,
            carry_momentum=True,
            **kw,
        )
        with torch.no_grad():
            layer.weight_ih_l0.mul_(100.0)
            layer.modrelu_bias_l0.fill_(-0.05)
    else:
        layer = make(host, kind, input_size=input_size, learn_epsilon=True, **kw)
    x = torch.randn(8, 3, input_size, dtype=torch.float64, requires_grad=True)
    lib, ref, g1, g2 = run_both(layer, x, [8, 5, 2])
    assert_match(layer, lib, ref, g1, g2)
    names = [n for n, _ in layer.named_parameters()]
    assert g1[1 + names.index("epsilon_raw_l0")].abs() > 0
    if kw:
        assert g1[1 + names.index("mu_raw_l0")].abs() > 0


@pytest.mark.parametrize("host,kind", list(itertools.product(HOSTS, ["heavy_ball", "adam"])))
def test_learnable_mu_with_a_carried_velocity(host, kind):
    # the gradient of a learnable mu through the decay of a carried v0 (pi_t v0) in the factored drive
    layer = make(host, kind, input_size=1, learn_mu=True)
    x = torch.randn(8, 3, 1, dtype=torch.float64, requires_grad=True)
    assert_match(layer, *run_both(layer, x, None, random_state(layer, 3)))


def test_learnable_repr():
    layer = mr.MomentumDTRIV(1, 4, learn_mu=True)
    assert "learn_mu=True" in repr(layer) and isinstance(layer.hyper_parameters()[0], torch.Tensor)
    with pytest.raises(ValueError, match="learn_mu needs a scheme with a constant mu"):
        mr.RestartMomentumDTRIV(1, 4, learn_mu=True)


@pytest.mark.parametrize("host,kind", list(itertools.product(HOSTS, KINDS)))
def test_scan_backend(host, kind):
    # what torch.onnx.export runs: complex units as [Re, Im] pairs, Adam / RMSProp's second moment
    # on their modulus; a packed batch with a carried state (masking, momentum, restart counter)
    layer = make(host, kind)
    layer.backend = "scan"
    x = torch.randn(5, 3, 3, dtype=torch.float64, requires_grad=True)
    assert_match(layer, *run_both(layer, x, [5, 2, 4], random_state(layer, 3)))


@pytest.mark.parametrize("host,kind", [("scurnn", "adam"), ("dtriv", "nesterov")])
def test_scan_backend_stacked_bidirectional(host, kind):
    layer = make(host, kind, num_layers=2, bidirectional=True, complex_input=host == "scurnn")
    layer.backend = "scan"
    x = torch.randn(6, 3, 3, dtype=torch.complex128 if host == "scurnn" else torch.float64, requires_grad=True)
    lengths = None if host == "scurnn" else [6, 2, 4]  # (torch packs no complex tensor with autograd)
    assert_match(layer, *run_both(layer, x, lengths, random_state(layer, 3)))
