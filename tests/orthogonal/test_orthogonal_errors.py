"""Clear errors for bad construction arguments, bad input and bad state; the public names."""

import math

import pytest
import torch
from torch.nn.utils.rnn import pack_sequence

import momentumrnn.orthogonal as orth

HOSTS = ["exprnn", "dtriv", "scornn", "scurnn"]


def test_paper_names_are_importable():
    from momentumrnn.orthogonal import (  # noqa: F401
        DTRIV,
        SRDTRIV,
        AdamDTRIV,
        AdamScuRNN,
        ExpRNN,
        MomentumDTRIV,
        MomentumExpRNN,
        MomentumScoRNN,
        MomentumScuRNN,
        RMSPropDTRIV,
        ScoRNN,
        ScuRNN,
        SRExpRNN,
    )

    assert len(orth.ORTHOGONAL_LAYER_NAMES) == 24  # 4 hosts x 6 schemes
    for name, (host, kind, _) in orth.ORTHOGONAL_LAYER_NAMES.items():
        cls = orth.layer_class(name)
        layer = cls(1, 4)
        assert isinstance(layer, orth.OrthogonalRNN) and isinstance(layer, cls)
        assert layer.host == host and layer.scheme.kind == kind
        assert type(orth.build_orthogonal_layer(host, kind, 1, 4)).__mro__[1] is cls
    assert orth.MomentumDTRIV(1, 4).scheme.hyper_parameters == {"mu": 0.6, "epsilon": 0.6}
    assert math.inf == orth.MomentumDTRIV(1, 4, mu=0.3, epsilon=0.3, K=math.inf).K
    layer = orth.OrthogonalRNN(1, 4, parametrization="scornn", scheme="heavy_ball", num_negative=1)
    assert layer.parametrization == "scaled_cayley" and layer.num_negative == 1
    assert "num_negative=1" in repr(layer)


def test_unknown_names():
    with pytest.raises(ValueError, match="unknown parametrization 'givens'"):
        orth.OrthogonalRNN(1, 4, parametrization="givens")
    with pytest.raises(TypeError, match="parametrization must be a string"):
        orth.OrthogonalRNN(1, 4, parametrization=3)
    with pytest.raises(ValueError, match="unknown orthogonal host 'lstm'"):
        orth.build_orthogonal_layer("lstm", "none", 1, 4)
    with pytest.raises(ValueError, match="unknown momentum scheme"):
        orth.build_orthogonal_layer("dtriv", "lion", 1, 4)
    with pytest.raises(ValueError, match="unknown orthogonal layer 'MomentumLSTM'"):
        orth.layer_class("MomentumLSTM")
    with pytest.raises(ValueError, match="unknown initializer 'zeros'"):
        orth.ExpRNN(1, 4, init="zeros")
    with pytest.raises(TypeError, match="fixes the parametrization"):
        orth.MomentumDTRIV(1, 4, parametrization="expm")
    with pytest.raises(TypeError, match="fixes the scheme"):
        orth.MomentumDTRIV(1, 4, scheme="adam")


@pytest.mark.parametrize("host", HOSTS)
def test_every_scheme_on_every_orthogonal_host(host):
    # Nesterov runs on the orthogonal hosts too (its parity is tested in test_orthogonal_parity);
    # the authors' SR<host> is the scheduled-restart heavy ball, an alias of RestartMomentum<host>.
    layer = orth.build_orthogonal_layer(host, "nesterov", 1, 4)
    assert layer.scheme.kind == "nesterov" and layer.scheme.state_fields == ("p", "step")
    title = type(layer).__mro__[1].__name__[len("Nesterov") :]
    assert orth.layer_class("SR" + title) is orth.layer_class("RestartMomentum" + title)


@pytest.mark.parametrize("K", [0, -3, 1.5, "abc", True, None])
def test_bad_K(K):
    if K is None:  # None means the default
        assert orth.DTRIV(1, 4, K=None).K == 100
        return
    with pytest.raises((TypeError, ValueError), match="positive int or inf"):
        orth.DTRIV(1, 4, K=K)
    with pytest.raises((TypeError, ValueError), match="positive int or inf"):
        orth.DynamicTrivialization(orth.DTRIV(1, 4), K=K)


@pytest.mark.parametrize("K", [1, 7, math.inf, "inf", "infty"])
def test_good_K(K):
    assert orth.DTRIV(1, 4, K=K).K in (1, 7, math.inf)


def test_bad_construction_arguments():
    with pytest.raises(ValueError, match=r"K .*DTRIV host only"):
        orth.ExpRNN(1, 4, K=3)
    with pytest.raises(ValueError, match=r"K .*DTRIV host only"):
        orth.ScoRNN(1, 4).K = 3
    layer = orth.DTRIV(1, 4, bidirectional=True)
    layer.K = "inf"
    assert math.inf == layer.K and math.inf == layer.parametrizations.weight_hh_l0_reverse[0].K
    with pytest.raises(ValueError, match="positive int or inf"):
        layer.K = 0
    with pytest.raises(ValueError, match="num_negative applies to the scoRNN"):
        orth.DTRIV(1, 4, num_negative=1)
    with pytest.raises(ValueError, match="num_negative must be in"):
        orth.ScoRNN(1, 4, num_negative=5)
    with pytest.raises(TypeError, match="num_negative"):
        orth.ScoRNN(1, 4, num_negative=1.0)
    with pytest.raises(ValueError, match="no input bias"):
        orth.DTRIV(1, 4, bias=True)
    with pytest.raises(ValueError, match="complex_input applies to the scuRNN"):
        orth.DTRIV(1, 4, complex_input=True)
    with pytest.raises(TypeError, match="real floating dtype"):
        orth.ScuRNN(1, 4, dtype=torch.complex64)
    with pytest.raises(ValueError, match="hidden_size must be greater than zero"):
        orth.DTRIV(1, 0)
    with pytest.raises(TypeError, match="input_size should be of type int"):
        orth.DTRIV(1.0, 4)
    with pytest.raises(ValueError, match="mu must be in"):
        orth.MomentumDTRIV(1, 4, mu=1.0)
    with pytest.raises(ValueError, match="has no hyper-parameter 'mu'"):
        orth.RMSPropDTRIV(1, 4, mu=0.5)
    with pytest.raises(TypeError):
        orth.DTRIV(1, 4, nonlinearity="tanh")
    with pytest.raises(ValueError, match="skew-symmetric"):
        orth.DTRIV(1, 4, init=lambda A: A.fill_(1.0))


@pytest.mark.parametrize("host", ["exprnn", "dtriv", "scornn"])
def test_complex_input_to_a_real_host(host):
    layer = orth.build_orthogonal_layer(host, "heavy_ball", 2, 4)
    with pytest.raises(TypeError, match=r"expects real input, got complex.*only the scuRNN"):
        layer(torch.randn(5, 3, 2, dtype=torch.complex64))
    with pytest.raises(TypeError, match="complex"):
        layer(pack_sequence([torch.randn(3, 2, dtype=torch.complex64)]))


def test_complex_and_real_input_for_scurnn():
    real_in = orth.ScuRNN(2, 4)
    with pytest.raises(TypeError, match="complex_input=True"):
        real_in(torch.randn(5, 3, 2, dtype=torch.complex64))
    cplx_in = orth.ScuRNN(2, 4, complex_input=True)
    with pytest.raises(TypeError, match="expects complex input, got real"):
        cplx_in(torch.randn(5, 3, 2))
    with pytest.raises(TypeError, match="dtype"):
        cplx_in(torch.randn(5, 3, 2, dtype=torch.complex128))
    out, h = cplx_in(torch.randn(5, 3, 2, dtype=torch.complex64))
    assert out.shape == (5, 3, 8) and out.dtype == torch.float32
    assert isinstance(h, torch.Tensor) and h.shape == (1, 3, 4) and h.dtype == torch.complex64  # torch.nn's h_n


def test_state_real_versus_complex():
    real = orth.MomentumDTRIV(2, 4)
    x = torch.randn(5, 3, 2)
    with pytest.raises(TypeError, match=r"h0 .*must be real"):
        real(x, torch.zeros(1, 3, 4, dtype=torch.complex64))
    unitary = orth.MomentumScuRNN(2, 4)
    with pytest.raises(TypeError, match=r"h0 .*must be complex"):
        unitary(x, torch.zeros(1, 3, 4))
    _, h = unitary(x)
    unitary(x, h)  # torch.nn's state round-trips
    unitary.carry_momentum = True
    with pytest.raises(TypeError, match=r"h0 .*must be complex"):
        unitary(x, torch.zeros(1, 3, 4))
    _, st = unitary(x)
    assert unitary.state_names == ("h", "v") and st[1].dtype == torch.complex64
    with pytest.raises(TypeError, match="momentum v must be complex"):
        unitary(x, (st[0], st[1].real.contiguous()))
    with pytest.raises(TypeError, match=r"h0 .*must be complex"):
        unitary(x, (st[0].real.contiguous(), st[1]))
    unitary(x, st)  # the layer's own state round-trips


def test_bad_input_and_state():
    layer = orth.AdamDTRIV(2, 4, num_layers=2)
    with pytest.raises(ValueError, match=r"input_size. Expected 2, got 3"):
        layer(torch.randn(5, 3, 3))
    with pytest.raises(ValueError, match="expected input to be 2D"):
        layer(torch.randn(5))
    with pytest.raises(TypeError, match=r"dtype torch.float64"):
        layer(torch.randn(5, 3, 2, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"must be a torch.Tensor"):
        layer([[1.0, 2.0]])
    with pytest.raises(ValueError, match="sequence length 0"):
        layer(torch.randn(0, 3, 2))
    x = torch.randn(5, 3, 2)
    with pytest.raises(ValueError, match=r"h0 \(state h\) has shape \(1, 3, 4\), expected \(2, 3, 4\)"):
        layer(x, torch.zeros(1, 3, 4))
    h, v, m = torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), torch.ones(2, 3, 4)
    # torch.nn.RNN's contract: a tensor h; a tuple only from a layer built with carry_momentum=True
    with pytest.raises(
        TypeError,
        match=r"AdamDTRIV: hx must be a tensor h_0, got a tuple of length 3; a state with "
        r"the momentum \('v', 'm'\) is taken only by a layer built with "
        r"carry_momentum=True",
    ):
        layer(x, (h, v, m))
    with pytest.raises(TypeError, match=r"AdamDTRIV: hx must be a tensor h_0, got a tuple of length 2$"):
        layer(x, (h, v))
    with pytest.raises(TypeError, match=r"AdamDTRIV: hx must be a tensor h_0, got a tuple of length 1$"):
        layer(x, (h,))
    with pytest.raises(TypeError, match=r"AdamDTRIV: hx must be a tensor h_0, got dict$"):
        layer(x, {"h": h})
    carrying = orth.AdamDTRIV(2, 4, num_layers=2, carry_momentum=True)
    carrying(x, (h, v, m))
    want = (
        r"AdamDTRIV: hx must be a tensor h_0 \(torch.nn's form; momentum from zero\) or a tuple \(h_0, v, m\) "
        r"\(a previous call's state, momentum carried\), got "
    )
    with pytest.raises(TypeError, match=want + "a tuple of length 4$"):  # a field Adam does not have
        carrying(x, (h, v, m, torch.zeros(2, 3, dtype=torch.long)))
    with pytest.raises(TypeError, match=want + "a tuple of length 2$"):  # a field left out
        carrying(x, (h, v))
    with pytest.raises(ValueError, match=r"momentum m has shape \(2, 3, 3\), expected \(2, 3, 4\)"):
        carrying(x, (h, v, m[..., :3]))
    with pytest.raises(TypeError, match=r"momentum v has dtype torch.float64 but the layer's parameters are"):
        carrying(x, (h, v.double(), m))
    with pytest.raises(TypeError, match=r"momentum m must be a torch.Tensor, got NoneType"):
        carrying(x, (h, v, None))
    sr = orth.SRDTRIV(2, 4, restart=3, carry_momentum=True)
    assert sr.state_names == ("h", "v", "step")
    h1, v1 = torch.zeros(1, 3, 4), torch.zeros(1, 3, 4)
    with pytest.raises(ValueError, match=r"restart counter\) must be in \[0, 3\]"):
        sr(x, (h1, v1, torch.full((1, 3), 4)))
    with pytest.raises(TypeError, match="momentum step must be an integer tensor"):
        sr(x, (h1, v1, torch.zeros(1, 3)))
    with pytest.raises(ValueError, match=r"momentum step has shape \(3,\), expected \(1, 3\)"):
        sr(x, (h1, v1, torch.zeros(3, dtype=torch.long)))
    sr(x, (h1, v1, torch.full((1, 3), 3)))  # the period itself is a valid counter


def test_dropout_and_repr():
    with pytest.warns(UserWarning, match="dropout"):
        orth.DTRIV(2, 4, dropout=0.5)
    layer = orth.MomentumScuRNN(2, 4, num_layers=2, dropout=0.5, bidirectional=True, batch_first=True)
    assert layer.output_size == 16
    text = repr(layer)
    for piece in (
        "unitary_scaled_cayley",
        "num_layers=2",
        "dropout=0.5",
        "bidirectional=True",
        "heavy_ball(mu=0.6, epsilon=0.6)",
        "batch_first=True",
    ):
        assert piece in text
    layer.eval()
    x = torch.randn(3, 5, 2)
    torch.testing.assert_close(layer(x)[0], layer(x)[0])
