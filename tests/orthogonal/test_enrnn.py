"""ENRNN (eigenvalue-normalized RNN, Helfrich & Ye 2020) with every scheme against the literal
reference in float64 (outputs, states, gradients: the spectral radius differentiated there by
autograd through ``torch.linalg.eigvals``), the authors' gradient formula, the latch, the
initialisation, and training steps that push ``W2`` up."""

import itertools
import math

import numpy as np
import pytest
import torch
from states import parts_of
from test_orthogonal_parity import HP, assert_match, random_state, run_both, to_layer_state

import momentumrnn as mr
from momentumrnn.hosts.enrnn import spectral_radius

KINDS = list(mr.SCHEME_KINDS)


def make(kind, input_size=3, hidden=7, short=3, latched=True, coupled=True, seed=0, **kw):
    kw.setdefault("carry_momentum", True)  # the momentum state is compared and resumed
    torch.manual_seed(seed)
    layer = mr.build_layer(
        "enrnn",
        kind,
        input_size,
        hidden,
        short_size=short,
        num_negative=1,
        coupled=coupled,
        dtype=torch.float64,
        **HP[kind],
        **kw,
    )
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if "modrelu_bias" in name:
                p.copy_(torch.rand(p.shape, generator=g, dtype=p.dtype) - 0.6)
            elif name.endswith(("original0", "original2")):  # W1's skew parameter, W3
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.4)
            elif name.endswith("original1"):  # W2: a spectral radius above 1
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.8)
            elif "weight_ih" in name:  # U(-0.01, 0.01) at init: make the input matter
                p.mul_(150.0)
        for sfx in layer._suffixes:
            layer.parametrizations["weight_hh" + sfx][0].normalized.fill_(latched)
    return layer


@pytest.mark.parametrize("kind,latched", list(itertools.product(KINDS, [False, True])))
def test_single_layer_matches_reference(kind, latched):
    layer = make(kind, latched=latched)
    x = torch.randn(9, 3, 3, dtype=torch.float64, requires_grad=True)
    assert_match(layer, *run_both(layer, x))
    layer.carry_momentum = False  # the default: torch.nn.RNN's h, the same numbers
    assert_match(layer, *run_both(layer, x))


@pytest.mark.parametrize("kind", KINDS)
def test_stacked_bidirectional_packed_with_state(kind):
    layer = make(kind, hidden=6, short=2, num_layers=2, bidirectional=True)
    x = torch.randn(7, 4, 3, dtype=torch.float64, requires_grad=True)
    assert_match(layer, *run_both(layer, x, [7, 3, 5, 1], random_state(layer, 4)))


@pytest.mark.parametrize("kind", ["none", "adam", "nesterov"])
def test_uncoupled_and_odd_sizes(kind):
    layer = make(kind, hidden=8, short=3, coupled=False)
    assert len(list(layer.parametrizations.weight_hh_l0.parameters())) == 2  # no W3
    x = torch.randn(6, 2, 3, dtype=torch.float64, requires_grad=True)
    assert_match(layer, *run_both(layer, x, None, random_state(layer, 2)))


@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck(kind):
    layer = make(kind, input_size=2, hidden=5, short=2)
    x = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True)
    st = random_state(layer, 2)
    names = [n for n, _ in layer.named_parameters()]
    keys = [k for k, v in st.items() if v.requires_grad]

    def f(x, *args):
        params, states = args[: len(names)], args[len(names) :]
        s = dict(st, **dict(zip(keys, states)))
        out, state = torch.func.functional_call(layer, dict(zip(names, params)), (x, to_layer_state(layer, s)))
        return (out, *[t for k, t in parts_of(layer, state).items() if k != "step"])  # h, v, m, p

    leaves = [p.detach().clone().requires_grad_(True) for p in layer.parameters()]
    assert torch.autograd.gradcheck(f, (x, *leaves, *[st[k] for k in keys]), atol=1e-7, rtol=1e-6, fast_mode=True)


def _authors_en_deriv(W2: np.ndarray, G: np.ndarray) -> np.ndarray:
    """The authors' EN_Deriv: dL/dW2 from G = dL/dW2bar, written from their formula with numpy's
    eigenvectors (left ones from the transpose)."""
    lam, X = np.linalg.eig(W2)
    i = int(np.argmax(np.abs(lam)))
    lamT, Y = np.linalg.eig(W2.T)
    j = int(np.argmin(np.abs(lamT - lam[i])))
    x, y = X[:, i], np.conj(Y[:, j])  # y^H W2 = lam y^H
    P = np.outer(np.conj(y), x) / (np.conj(y) @ x)
    sigma, alpha, beta = abs(lam[i]), lam[i].real, lam[i].imag
    W2bar = W2 / sigma
    return (G - (G * W2bar).sum() / sigma * (alpha * P.real + beta * P.imag)) / sigma


@pytest.mark.parametrize("seed", range(6))
def test_spectral_radius_gradient(seed):
    g = torch.Generator().manual_seed(seed)
    W2 = torch.randn(6, 6, generator=g, dtype=torch.float64, requires_grad=True)
    assert float(spectral_radius(W2.detach())) == pytest.approx(
        float(torch.linalg.eigvals(W2.detach()).abs().max()), rel=1e-12
    )
    # finite differences
    assert torch.autograd.gradcheck(spectral_radius, (W2,), atol=1e-8)
    # the authors' formula for the gradient through W2bar = W2 / rho(W2)
    G = torch.randn(6, 6, generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad((W2 / spectral_radius(W2) * G).sum(), W2)
    expected = _authors_en_deriv(W2.detach().numpy(), G.numpy())
    np.testing.assert_allclose(grad.numpy(), expected, rtol=1e-9, atol=1e-11)


def test_latch():
    layer = mr.ENRNN(2, 10, short_size=4)
    matrix = layer.parametrizations.weight_hh_l0[0]
    W2 = layer.parametrizations.weight_hh_l0.original1
    assert not bool(matrix.normalized) and float(spectral_radius(W2.detach())) < 1  # the authors' init
    torch.testing.assert_close(layer.short_term_matrix(), W2)
    layer.on_optimizer_step()  # rho < 1: stays off
    assert not bool(matrix.normalized)
    with torch.no_grad():
        W2.mul_(3.0 / float(spectral_radius(W2)))  # an optimizer step pushed rho to 3
    layer.on_optimizer_step()
    assert bool(matrix.normalized)
    assert float(spectral_radius(layer.short_term_matrix().detach())) == pytest.approx(1.0, abs=1e-6)
    with torch.no_grad():
        W2.mul_(0.1)  # rho 0.3: the latch stays on, W2bar keeps radius 1 (the authors' rule)
    layer.on_optimizer_step()
    assert bool(matrix.normalized)
    assert float(spectral_radius(layer.short_term_matrix().detach())) == pytest.approx(1.0, abs=1e-6)
    B = layer.weight_hh_l0
    assert B.shape == (10, 10) and bool((B[:6, 6:] == 0).all())  # h1 never sees h2 through W1's rows
    # the latch is saved and restored with the state dict
    state = layer.state_dict()
    assert any(k.endswith("normalized") for k in state)
    fresh = mr.ENRNN(2, 10, short_size=4)
    fresh.load_state_dict(state)
    assert bool(fresh.parametrizations.weight_hh_l0[0].normalized)
    torch.testing.assert_close(fresh.weight_hh_l0, layer.weight_hh_l0)


@pytest.mark.parametrize("name", ["ENRNN", "MomentumENRNN", "AdamENRNN", "NesterovENRNN"])
def test_training_keeps_w1_orthogonal_and_w2bar_stable(name):
    torch.manual_seed(0)
    layer = mr.layer_class(name)(2, 12, short_size=4)
    head = torch.nn.Linear(12, 1)
    orth, other = mr.split_parameters(layer)
    assert [id(p) for p in orth] == [id(layer.parametrizations.weight_hh_l0.original0)]
    opt = torch.optim.Adam([{"params": other + list(head.parameters()), "lr": 0.05}, {"params": orth, "lr": 0.02}])
    x = torch.randn(10, 8, 2)
    latched = []
    for _ in range(40):
        out, _ = layer(x)
        W2 = layer.parametrizations.weight_hh_l0.original1
        # the task plus a pull that grows W2: its spectral radius would pass 1 without the latch
        loss = head(out[-1]).square().mean() - 0.5 * (W2 * torch.eye(4)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        layer.on_optimizer_step()
        latched.append(bool(layer.parametrizations.weight_hh_l0[0].normalized))
        with torch.no_grad():
            B = layer.weight_hh_l0
            W1 = B[:8, :8]
            assert float((W1.T @ W1 - torch.eye(8)).abs().max()) < 1e-5
            assert float(spectral_radius(layer.short_term_matrix())) <= 1 + 1e-5
    assert latched[-1] and not latched[0]
    assert float(spectral_radius(layer.parametrizations.weight_hh_l0.original1.detach())) > 1


def test_initialisation():
    torch.manual_seed(3)
    layer = mr.ENRNN(5, 20, short_size=7, num_negative=4)
    plist = layer.parametrizations.weight_hh_l0
    assert float(layer.weight_ih_l0.detach().abs().max()) <= 0.01
    assert bool((layer.modrelu_bias_l0 == 0).all())
    bound = math.sqrt(6 / (13 + 7))
    assert float(plist.original2.detach().abs().max()) <= bound
    D = plist[0].cayley.D
    assert D.tolist() == [1.0] * 9 + [-1.0] * 4  # the last num_negative entries
    W1 = layer.weight_hh_l0[:13, :13].detach()
    R = W1 * D  # Cayley(A1): rotation blocks [[cos s, -sin s], [sin s, cos s]], s in (0, pi/2)
    for k in range(6):
        block = R[2 * k : 2 * k + 2, 2 * k : 2 * k + 2]
        assert float(block[0, 1]) < 0 < float(block[1, 0]) and float(block[0, 0]) > 0
    W2 = plist.original1.detach()
    for k in range(3):  # d_k Rot(s_k): one scale per 2x2 block
        block = W2[2 * k : 2 * k + 2, 2 * k : 2 * k + 2]
        d = float(torch.linalg.det(block).sqrt()) * (1 if float(block[0, 0]) > 0 else -1)
        assert abs(d) <= 1
        torch.testing.assert_close(
            block, d * torch.tensor([[block[0, 0] / d, block[0, 1] / d], [-block[0, 1] / d, block[0, 0] / d]])
        )
    off = W2.clone()
    for k in range(3):
        off[2 * k : 2 * k + 2, 2 * k : 2 * k + 2] = 0
    off[6, 6] = 0
    assert bool((off == 0).all())
    assert float(spectral_radius(W2)) < 1


def test_defaults_and_errors():
    layer = mr.build_layer("enrnn", "heavy_ball", 3, 192, short_size=20)
    assert (layer.long_size, layer.short_size, layer.num_negative) == (172, 20, 52)  # the authors' ratio
    assert mr.ENRNN(3, 160, short_size=64).num_negative == 29
    assert mr.layer_class("SRENRNN") is mr.RestartMomentumENRNN
    assert "short_size=20" in repr(layer)
    with pytest.raises(ValueError, match="short_size must be less than hidden_size"):
        mr.ENRNN(3, 8, short_size=8)
    with pytest.raises(ValueError, match="hidden_size >= 2"):
        mr.ENRNN(3, 1)
    with pytest.raises(ValueError, match="num_negative must be in"):
        mr.ENRNN(3, 8, short_size=2, num_negative=7)
    with pytest.raises(ValueError, match="no input bias"):
        mr.ENRNN(3, 8, bias=True)
    with pytest.raises(TypeError, match="fixes the scheme"):
        mr.MomentumENRNN(3, 8, scheme="adam")
    with pytest.raises(NotImplementedError, match="cannot be assigned"):
        layer.weight_hh_l0 = torch.eye(192)


@pytest.mark.parametrize("kind", KINDS)
def test_stepwise_backend(kind):
    layer = make(kind, hidden=6, short=2, num_layers=2, bidirectional=True)
    layer.backend = "stepwise"
    x = torch.randn(7, 4, 3, dtype=torch.float64, requires_grad=True)
    assert_match(layer, *run_both(layer, x, [7, 3, 5, 1], random_state(layer, 4)))


@pytest.mark.parametrize("kind,latched", [(k, True) for k in KINDS] + [("adam", False)])
def test_scan_backend(kind, latched):
    # what torch.onnx.export runs, on a packed batch with a carried state (stacked and
    # bidirectional for RMSProp)
    deep = kind == "rmsprop"
    layer = make(kind, hidden=6, short=2, latched=latched, num_layers=2 if deep else 1, bidirectional=deep)
    layer.backend = "scan"
    x = torch.randn(5, 3, 3, dtype=torch.float64, requires_grad=True)
    assert_match(layer, *run_both(layer, x, [5, 2, 4], random_state(layer, 3)))
