"""mu = 0, epsilon = 1 (and scheme none) equal torch.nn exactly; to_native / from_native; the
authors' initialisation."""

import itertools

import pytest
import torch
from states import check_state
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import momentumrnn as mr

NATIVE = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
CONFIGS = [dict(), dict(num_layers=2, bidirectional=True), dict(bias=False, batch_first=True)]


@pytest.mark.parametrize("host,kind,cfg", list(itertools.product(NATIVE, ["none", "heavy_ball"], range(3))))
def test_trivial_momentum_equals_torch_nn(host, kind, cfg):
    kw = CONFIGS[cfg]
    torch.manual_seed(0)
    native = NATIVE[host](3, 5, dtype=torch.float64, **kw)
    hp = {"mu": 0.0, "epsilon": 1.0} if kind == "heavy_ball" else {}
    layer = mr.from_native(native, kind, **hp)
    bf = bool(kw.get("batch_first"))
    x = (
        torch.randn(6, 4, 3, dtype=torch.float64, requires_grad=True)
        if bf
        else torch.randn(4, 6, 3, dtype=torch.float64, requires_grad=True)
    )
    out_n, st_n = native(x)
    out_m, st_m = layer(x)
    assert torch.equal(out_n, out_m)
    check_state(layer, st_m)  # torch.nn's form: (h, c) on the LSTM, h otherwise
    assert type(st_m) is type(st_n)
    if host == "lstm":
        assert len(st_m) == len(st_n) == 2
        assert torch.equal(st_n[0], st_m[0]) and torch.equal(st_n[1], st_m[1])
    else:
        assert torch.equal(st_n, st_m)
    # and it takes torch.nn's state back as torch.nn does
    out_n2, st_n2 = native(x.detach(), st_n)
    out_m2, st_m2 = layer(x.detach(), st_m)
    assert torch.equal(out_n2, out_m2) and type(st_m2) is type(st_n2)
    g_n = torch.autograd.grad(out_n.sum(), [x, *native.parameters()])
    g_m = torch.autograd.grad(out_m.sum(), [x, *layer.parameters()])
    for a, b in zip(g_n, g_m):  # per-layer calls may sum weight gradients in another order
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # packed, variable lengths
    lengths = [4, 1, 3, 4, 2, 2]
    packed = pack_padded_sequence(x.detach(), lengths, batch_first=bf, enforce_sorted=False)
    pn, sn = native(packed)
    pm, sm = layer(packed)
    # packed: native GEMMs shrink with the batch, so rounding may differ in the last bit
    torch.testing.assert_close(pm.data, pn.data, rtol=1e-13, atol=1e-15)
    assert torch.equal(pm.sorted_indices, pn.sorted_indices)
    check_state(layer, sm)
    assert type(sm) is type(sn)
    for a, b in zip(sm, sn) if host == "lstm" else ((sm, sn),):  # h (and c)
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("host", NATIVE)
def test_filtered_path_with_trivial_momentum_equals_torch_nn(host):
    # learn_epsilon forces the filtered native path even at mu = 0, epsilon = 1
    torch.manual_seed(1)
    native = NATIVE[host](2, 4, num_layers=2, dtype=torch.float64)
    layer = mr.from_native(native, "heavy_ball", mu=0.0, epsilon=1.0)
    layer_f = mr.build_layer(host, "heavy_ball", 2, 4, num_layers=2, mu=1e-12, epsilon=1.0, dtype=torch.float64)
    layer_f.load_state_dict(native.state_dict())
    x = torch.randn(7, 3, 2, dtype=torch.float64)
    torch.testing.assert_close(layer_f(x)[0], native(x)[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(layer(x)[0], native(x)[0], rtol=0, atol=0)


def test_to_native_round_trip_and_strictness():
    layer = mr.MomentumLSTM(3, 4, num_layers=2, mu=0.0, epsilon=1.0)
    native = mr.to_native(layer)
    x = torch.randn(5, 2, 3)
    assert torch.equal(native(x)[0], layer(x)[0])
    with pytest.raises(ValueError, match="strict=False"):
        mr.to_native(mr.MomentumLSTM(3, 4))
    plain = mr.to_native(mr.MomentumLSTM(3, 4), strict=False)
    assert isinstance(plain, nn.LSTM)
    with pytest.raises(TypeError):
        mr.from_native(nn.Linear(2, 2))


def test_load_state_dict_from_torch_nn():
    native = nn.GRU(3, 4, num_layers=2, bidirectional=True)
    layer = mr.AdamGRU(3, 4, num_layers=2, bidirectional=True)
    layer.load_state_dict(native.state_dict())  # same parameter names
    for (n1, p1), (n2, p2) in zip(native.named_parameters(), layer.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)


@pytest.mark.parametrize("host", NATIVE)
def test_authors_init(host):
    layer = mr.build_layer(host, "heavy_ball", 3, 4, init="authors", forget_bias=-4.0)
    H = 4
    for name, p in layer.named_parameters():
        if name.startswith("weight_hh"):
            for block in p.split(H):
                assert torch.equal(block, torch.eye(H))
        elif name.startswith("weight_ih"):
            for block in p.split(H):
                # orthogonal columns (block is H x 3, H >= 3)
                torch.testing.assert_close(block.t() @ block, torch.eye(3), rtol=1e-5, atol=1e-5)
        else:
            expected = torch.zeros_like(p)
            if host == "lstm":
                expected[H : 2 * H] = -4.0
            assert torch.equal(p, expected)
