"""Orthogonality under training (float32, several optimizers, base changes), the dynamic
trivialization, the lr / lr_orth split, assignment of recurrent matrices, initializers."""

import math

import pytest
import torch

import momentumrnn.orthogonal as orth
from momentumrnn.orthogonal.parametrizations import skew

HOSTS = ["exprnn", "dtriv", "scornn", "scurnn"]
OPTIMIZERS = {
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
    "adam": lambda ps: torch.optim.Adam(ps, lr=0.05),
    "rmsprop": lambda ps: torch.optim.RMSprop(ps, lr=0.02),
}


def _train(layer, opt, steps, seed=0, hook=None):
    g = torch.Generator().manual_seed(seed)
    dtype = layer.modrelu_bias_l0.dtype
    target = torch.randn(6, 4, layer.output_size, generator=g, dtype=dtype)
    for _ in range(steps):
        x = torch.randn(6, 4, layer.input_size, generator=g, dtype=dtype)
        out, _ = layer(x)
        loss = (out - target).square().mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(layer.parameters(), 1.0)  # as the authors train
        opt.step()
        if hook is not None:
            hook()
    return loss


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_recurrent_matrix_stays_orthogonal_float32(host, opt_name):
    torch.manual_seed(0)
    kw = {"K": 3} if host == "dtriv" else {}
    layer = orth.build_orthogonal_layer(host, "heavy_ball", 3, 24, num_layers=2, bidirectional=True, **kw)
    before = layer.weight_hh_l0.detach().clone()
    opt = OPTIMIZERS[opt_name](layer.parameters())
    _train(layer, opt, 60, hook=layer.on_optimizer_step)
    for sfx in layer._suffixes:
        B = getattr(layer, "weight_hh" + sfx)
        assert B.dtype == (torch.complex64 if host == "scurnn" else torch.float32)
        assert orth.orthogonality_error(B) < 1e-5, sfx
    # the matrix moved far from its start: the check is not about a matrix that stayed put
    assert (layer.weight_hh_l0.detach() - before).abs().max() > 0.05
    if host == "dtriv":
        p = layer.parametrizations.weight_hh_l0[0]
        assert int(p.steps) == 60 and int(p.base_changes) == 20


@pytest.mark.parametrize("K", [1, math.inf])
def test_dtriv_many_base_changes_float32(K):
    torch.manual_seed(1)
    layer = orth.MomentumDTRIV(2, 32, K=K)
    opt = torch.optim.RMSprop(layer.parameters(), lr=0.01)
    handle = orth.register_optimizer_hook(opt, layer)
    _train(layer, opt, 150)
    p = layer.parametrizations.weight_hh_l0[0]
    assert int(p.base_changes) == (150 if K == 1 else 0)
    assert handle.trivialization.steps == 150
    assert orth.orthogonality_error(layer.weight_hh_l0) < 1e-5
    assert orth.orthogonality_error(p.base) < 1e-5
    if K == 1:
        assert layer.parametrizations.weight_hh_l0.original.abs().max() == 0
    handle.remove()


def test_base_change_keeps_the_matrix_and_resets_the_chart():
    torch.manual_seed(2)
    layer = orth.DTRIV(3, 6, dtype=torch.float64, K=2)
    plist = layer.parametrizations.weight_hh_l0
    with torch.no_grad():
        plist.original.normal_(0, 0.5)
    B0 = layer.weight_hh_l0.detach().clone()
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    out0, _ = layer(x)
    layer.on_optimizer_step()  # step 1 of K = 2: nothing yet
    assert plist.original.abs().max() > 0
    layer.on_optimizer_step()  # step 2: base change
    assert plist.original.abs().max() == 0
    torch.testing.assert_close(plist[0].base, B0, rtol=0, atol=1e-13)
    torch.testing.assert_close(layer.weight_hh_l0, B0, rtol=0, atol=1e-13)
    out1, _ = layer(x)
    torch.testing.assert_close(out1, out0, rtol=0, atol=1e-12)


def test_dynamic_trivialization_helper_and_optimizer_hook():
    torch.manual_seed(3)
    model = torch.nn.ModuleList([orth.DTRIV(2, 5, K=100), orth.MomentumExpRNN(2, 5)])
    dt = orth.DynamicTrivialization(model, K=2)  # overrides the layer's K
    assert len(dt) == 1 and model[0].K == 2
    assert sum(dt.step() for _ in range(5)) == 2
    with pytest.raises(ValueError, match="positive"):
        orth.DynamicTrivialization(model, K=0)
    # the hook runs after any optimizer's step
    opt = torch.optim.Adagrad(model.parameters(), lr=0.1)
    h = orth.register_optimizer_hook(opt, model, K=1)
    before = int(model[0].parametrizations.weight_hh_l0[0].base_changes)
    out, _ = model[0](torch.randn(3, 1, 2))
    out.sum().backward()
    opt.step()
    assert int(model[0].parametrizations.weight_hh_l0[0].base_changes) == before + 1
    h.remove()


def test_dtriv_state_dict_round_trip_keeps_the_base():
    torch.manual_seed(4)
    a = orth.SRDTRIV(2, 5, K=1, dtype=torch.float64)
    opt = torch.optim.SGD(a.parameters(), lr=0.3)
    _train(a, opt, 3, hook=a.on_optimizer_step)
    b = orth.SRDTRIV(2, 5, K=1, dtype=torch.float64)
    b.load_state_dict(a.state_dict())
    x = torch.randn(4, 2, 2, dtype=torch.float64)
    torch.testing.assert_close(b(x)[0], a(x)[0], rtol=0, atol=0)
    assert int(b.parametrizations.weight_hh_l0[0].steps) == 3


@pytest.mark.parametrize("host", HOSTS)
def test_split_parameters(host):
    model = torch.nn.Sequential()
    model.add_module("rnn", orth.build_orthogonal_layer(host, "adam", 2, 4, num_layers=2, bidirectional=True))
    model.add_module("head", torch.nn.Linear(4, 3))
    o, other = orth.split_parameters(model)
    ids_o, ids_other = {id(p) for p in o}, {id(p) for p in other}
    assert not ids_o & ids_other
    assert ids_o | ids_other == {id(p) for p in model.parameters()}
    rnn = model.rnn
    expected = {id(rnn.parametrizations["weight_hh" + s].original) for s in rnn._suffixes}
    if host == "scurnn":
        expected |= {id(rnn.parametrizations["weight_hh" + s][0].theta) for s in rnn._suffixes}
    assert ids_o == expected
    assert {id(p) for p in rnn.orthogonal_parameters()} == expected
    # the authors' two optimizers
    opt = torch.optim.RMSprop([{"params": other, "lr": 7e-4}, {"params": o, "lr": 2e-4}])
    assert len(opt.param_groups) == 2


@pytest.mark.parametrize("host", ["dtriv", "scornn", "scurnn"])
def test_assign_recurrent_matrix(host):
    torch.manual_seed(5)
    layer = orth.build_orthogonal_layer(host, "none", 2, 6, dtype=torch.float64)
    Q = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))[0]
    if host == "scurnn":
        Q = torch.linalg.qr(torch.randn(6, 6, dtype=torch.complex128))[0]
    elif host == "scornn":
        # B D^-1 must not have the eigenvalue -1: take det(B D^-1) = +1 (generic otherwise)
        if torch.linalg.det(Q) < 0:
            Q[:, 0] = -Q[:, 0]
        Q = Q * layer.parametrizations.weight_hh_l0[0].D
    layer.weight_hh_l0 = Q
    torch.testing.assert_close(layer.weight_hh_l0, Q, rtol=0, atol=1e-10)


def test_assign_errors():
    layer = orth.DTRIV(2, 4)
    with pytest.raises(ValueError, match="4 x 4"):
        layer.weight_hh_l0 = torch.eye(5)
    with pytest.raises(ValueError, match="square"):
        layer.weight_hh_l0 = torch.ones(4, 3)
    with pytest.raises(ValueError, match="orthogonal"):
        layer.weight_hh_l0 = 2 * torch.eye(4)
    with pytest.raises(TypeError, match="real"):
        layer.weight_hh_l0 = torch.eye(4, dtype=torch.complex64)
    with pytest.raises(TypeError, match="complex"):
        orth.ScuRNN(2, 4).weight_hh_l0 = torch.eye(4)
    with pytest.raises(NotImplementedError, match="logarithm"):
        orth.ExpRNN(2, 4).weight_hh_l0 = torch.eye(4)
    with pytest.raises(ValueError, match="square"):
        orth.Expm(4)(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="4 x 4"):
        orth.ScaledCayley(4)(torch.zeros(5, 5))


@pytest.mark.parametrize("n", [6, 7])
def test_initializers(n):
    g = torch.Generator().manual_seed(0)
    for name, init in orth.INITIALIZERS.items():
        A = init(torch.empty(n, n, dtype=torch.float64), generator=g)
        torch.testing.assert_close(A, -A.T, rtol=0, atol=0)
        vals = A[torch.arange(0, 2 * (n // 2), 2), torch.arange(1, 2 * (n // 2), 2)]
        assert (A.abs() > 0).sum() == 2 * (n // 2)
        if name == "cayley":  # -tan(s / 2), s in [0, pi / 2]
            assert (vals <= 0).all() and (vals >= -1).all()
        elif name == "henaff":
            assert (vals.abs() <= math.pi).all()
    # torus: B's rotation angles are the sampled ones, for both maps
    A = orth.torus_init_(torch.empty(n, n, dtype=torch.float64), g, low=0.3, high=0.6)
    theta = A[0, 1]
    B = torch.linalg.matrix_exp(A)
    torch.testing.assert_close(B[0, 0], torch.cos(theta))
    A = orth.torus_init_(torch.empty(n, n, dtype=torch.float64), g, low=0.3, high=0.6, map="cayley")
    eye = torch.eye(n, dtype=torch.float64)
    B = torch.linalg.solve(eye + A, eye - A)
    angles = torch.atan2(B[0, 1], B[0, 0]).abs()
    assert 0.3 - 1e-12 <= angles <= 0.6 + 1e-12


@pytest.mark.parametrize("init", ["cayley", "henaff", "torus"])
@pytest.mark.parametrize("host", HOSTS)
def test_layers_take_every_initializer(host, init):
    layer = orth.build_orthogonal_layer(host, "none", 2, 7, init=init)
    assert orth.orthogonality_error(layer.weight_hh_l0) < 1e-6
    P = layer.parametrizations.weight_hh_l0.original
    if host == "dtriv":
        assert P.abs().max() == 0  # the authors' first base change: base = B(init), P = 0
        assert (layer.parametrizations.weight_hh_l0[0].base - torch.eye(7)).abs().max() > 0
    else:
        assert P.abs().max() > 0
    # a callable skew initializer
    layer = orth.build_orthogonal_layer(host, "none", 2, 4, init=lambda A: A.copy_(skew(torch.randn(4, 4))))
    assert orth.orthogonality_error(layer.weight_hh_l0) < 1e-6
