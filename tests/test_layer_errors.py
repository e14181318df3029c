"""Bad input gets a clear error, says what was given and what is expected, and mutates nothing."""

import math

import pytest
import torch

import momentumrnn as mr


@pytest.mark.parametrize(
    "kw,exc,match",
    [
        (dict(mu=1.0), ValueError, r"mu must be in \[0, 1\), got 1.0"),
        (dict(mu=-0.1), ValueError, "mu must be in"),
        (dict(mu=float("nan")), ValueError, "finite"),
        (dict(epsilon=0.0), ValueError, "epsilon must be > 0"),
        (dict(mu="0.5"), TypeError, "real number"),
        (dict(beta=0.5), ValueError, "has no hyper-parameter 'beta'"),
        (dict(nonlinearity="relu"), ValueError, "RNN hosts only"),
        (dict(dropout=1.5), ValueError, "dropout"),
        (dict(init="xavier"), ValueError, "init must be"),
    ],
)
def test_bad_hyper_parameters(kw, exc, match):
    with pytest.raises(exc, match=match):
        mr.MomentumLSTM(3, 4, **kw)


def test_bad_scheme_specific_hyper_parameters():
    with pytest.raises(ValueError, match="beta must be in"):
        mr.AdamLSTM(3, 4, beta=1.0)
    with pytest.raises(ValueError, match="restart must be >= 0"):
        mr.SRLSTM(3, 4, restart=-1)
    with pytest.raises(TypeError, match="restart must be a non-negative int"):
        mr.SRLSTM(3, 4, restart=2.5)
    with pytest.raises(ValueError, match="has no hyper-parameter 'mu'"):
        mr.RMSPropLSTM(3, 4, mu=0.5)
    with pytest.raises(ValueError, match="learn_mu"):
        mr.SRLSTM(3, 4, learn_mu=True)
    with pytest.raises(ValueError, match="unknown momentum scheme"):
        mr.build_layer("lstm", "adagrad", 3, 4)
    with pytest.raises(ValueError, match="unknown host"):
        mr.build_layer("transformer", "adam", 3, 4)
    with pytest.raises(ValueError, match="unknown layer"):
        mr.layer_class("MomentumTransformer")
    with pytest.raises(TypeError, match="hidden_size should be of type int"):
        mr.MomentumLSTM(3, 4.0)
    with pytest.raises(ValueError, match="hidden_size must be greater than zero"):
        mr.MomentumLSTM(3, 0)


def test_bad_inputs():
    layer = mr.MomentumLSTM(3, 4, num_layers=2)
    with pytest.raises(ValueError, match="Expected 3, got 5"):
        layer(torch.randn(5, 2, 5))
    with pytest.raises(ValueError, match=r"expected input to be 2D .* or 3D"):
        layer(torch.randn(5, 2, 3, 1))
    with pytest.raises(TypeError, match=r"dtype torch.float64 but the layer's parameters are torch.float32"):
        layer(torch.randn(5, 2, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"must be a torch.Tensor"):
        layer([[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match="sequence length 0"):
        layer(torch.randn(0, 2, 3))


def test_bad_states_and_nothing_mutated():
    layer = mr.MomentumLSTM(3, 4, num_layers=2, carry_momentum=True)
    x = torch.randn(5, 2, 3)
    _, st = layer(x)
    h, c, v = st
    before = [t.clone() for t in st]
    params = [p.clone() for p in layer.parameters()]
    want = (
        r"MomentumLSTM: hx must be a tuple \(h_0, c_0\) \(torch.nn's form; momentum from zero\) or a tuple "
        r"\(h_0, c_0, v\) \(a previous call's state, momentum carried\), got "
    )
    bad = [
        ((h[:1], c, v), ValueError, r"h0 \(state h\) has shape \(1, 2, 4\), expected \(2, 2, 4\)"),
        ((h, c.double(), v), TypeError, r"c0 \(state c\) has dtype torch.float64 but the layer's parameters are"),
        ((h, c, v[..., :3]), ValueError, r"momentum v has shape \(2, 2, 3\), expected \(2, 2, 16\)"),
        ((h, c, v.double()), TypeError, r"momentum v has dtype torch.float64 but the layer's parameters are"),
        ((h, c, v.to(torch.complex64)), TypeError, "momentum v must be real for this layer"),
        ((h, c, None), TypeError, "momentum v must be a torch.Tensor, got NoneType"),
        ((h, c, v, v), TypeError, want + "a tuple of length 4$"),  # a field the scheme does not have
        (h, TypeError, want + "a single tensor$"),
        ((h,), TypeError, want + "a tuple of length 1$"),
        ("state", TypeError, want + "str$"),
    ]
    for state, exc, match in bad:
        with pytest.raises(exc, match=match):
            layer(x, state)
    # a carried state to a layer without carry_momentum (torch.nn's contract)
    plain = mr.MomentumLSTM(3, 4, num_layers=2)
    with pytest.raises(
        TypeError,
        match=r"MomentumLSTM: hx must be a tuple \(h_0, c_0\), got a tuple of length 3; "
        r"a state with the momentum \('v',\) is taken only by a layer built with "
        r"carry_momentum=True",
    ):
        plain(x, st)
    with pytest.raises(TypeError, match=r"hx must be a tuple \(h_0, c_0\), got a single tensor"):
        plain(x, h)
    for a, b in zip(before, st):
        assert torch.equal(a, b)
    for a, b in zip(params, layer.parameters()):
        assert torch.equal(a, b)
    sr = mr.SRLSTM(3, 4, restart=3, carry_momentum=True)
    _, s = sr(x)
    h, c, p, step = s
    assert sr.state_names == ("h", "c", "p", "step")
    with pytest.raises(ValueError, match=r"restart counter\) must be in \[0, 3\]"):
        sr(x, (h, c, p, step + 5))
    with pytest.raises(ValueError, match=r"restart counter\) must be in \[0, 3\], got values in \[-1, -1\]"):
        sr(x, (h, c, p, torch.full_like(step, -1)))
    with pytest.raises(TypeError, match="momentum step must be an integer tensor"):
        sr(x, (h, c, p, step.float()))
    with pytest.raises(ValueError, match=r"momentum step has shape \(1, 1\), expected \(1, 2\)"):
        sr(x, (h, c, p, step[:, :1]))
    with pytest.raises(TypeError, match=r"momentum step must be a torch.Tensor, got int"):
        sr(x, (h, c, p, 0))
    with pytest.raises(TypeError, match=r"got a tuple of length 3$"):  # the counter left out
        sr(x, (h, c, p))


@pytest.mark.parametrize("name", ["MomentumLSTM", "AdamLSTM", "SRGRU", "RestartMomentumRNN", "RMSPropGRU"])
def test_nan_propagates_like_torch_nn(name):
    layer = mr.layer_class(name)(2, 3)
    x = torch.randn(6, 2, 2)
    x[2, 0, 0] = math.nan
    out, _ = layer(x)
    assert torch.isnan(out[2:, 0]).all()  # from the NaN on, sequence 0 is NaN
    assert torch.isfinite(out[:2]).all()  # before it, nothing is touched
    assert torch.isfinite(out[:, 1]).all()  # the other sequence is unaffected


def test_build_layer_covers_orthogonal_hosts():
    layer = mr.build_layer("dtriv", "heavy_ball", 1, 6, mu=0.3, epsilon=0.3)
    assert type(layer).__name__.endswith("MomentumDTRIV")
    assert mr.layer_class("AdamScoRNN").__name__ == "AdamScoRNN"
    out, state = layer(torch.randn(5, 2, 1))
    assert out.shape == (5, 2, 6)
    assert isinstance(state, torch.Tensor) and state.shape == (1, 2, 6)  # torch.nn.RNN's h_n


def test_a_one_tuple_is_no_state_with_or_without_carry():
    """torch.nn.GRU takes a tensor h, never ``(h,)``; a carrying layer takes ``(h, *fields)``."""
    x, h = torch.randn(5, 2, 3), torch.zeros(1, 2, 4)
    for layer in (
        mr.MomentumGRU(3, 4),
        mr.MomentumGRU(3, 4, carry_momentum=True),
        mr.AdamDTRIV(3, 4, carry_momentum=True),
    ):
        with pytest.raises(TypeError, match=r"hx must be a tensor h_0.*got a tuple of length 1"):
            layer(x, (h,))
        layer(x, h)  # torch.nn's form: accepted
