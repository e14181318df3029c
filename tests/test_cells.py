"""Step-wise cells equal the one-layer layer of the same scheme (both carrying their momentum:
``carry_momentum=True``); states interchange; default cells keep torch.nn's state contract."""

import itertools

import pytest
import torch
from states import check_state, parts_of, to_state
from test_layers import HOSTS, HP, KINDS

import momentumrnn as mr


@pytest.mark.parametrize("host,kind", list(itertools.product(HOSTS, KINDS)))
def test_cell_loop_equals_layer(host, kind):
    torch.manual_seed(0)
    layer = mr.build_layer(host, kind, 3, 4, dtype=torch.float64, carry_momentum=True, **HP[kind])
    name = {n: (h, k) for n, (h, k, _) in mr.LAYER_NAMES.items()}
    cls_name = next(n for n, hk in name.items() if hk == (host, kind))
    cell = mr.cell_class(cls_name + "Cell")(3, 4, dtype=torch.float64, carry_momentum=True, **HP[kind])
    assert cell.state_names == layer.state_names
    with torch.no_grad():
        cell.weight_ih.copy_(layer.weight_ih_l0)
        cell.weight_hh.copy_(layer.weight_hh_l0)
        cell.bias_ih.copy_(layer.bias_ih_l0)
        cell.bias_hh.copy_(layer.bias_hh_l0)
    x = torch.randn(8, 2, 3, dtype=torch.float64)
    out, st = layer(x)
    # stream: first 3 steps with the layer, then continue step by step with the cell
    _, st3 = layer(x[:3])
    cell_state = to_state(cell, {k: v[0] for k, v in parts_of(layer, st3).items()})
    hs = []
    for t in range(3, 8):
        cell_state = cell(x[t], cell_state)
        hs.append(check_state(cell, cell_state)["h"])
    torch.testing.assert_close(torch.stack(hs), out[3:], rtol=1e-10, atol=1e-10)
    final, final_layer = parts_of(cell, cell_state), parts_of(layer, st)
    assert list(final) == list(final_layer)
    for k in final:  # h, c and the momentum fields (the restart counter exactly)
        torch.testing.assert_close(final[k], final_layer[k][0], rtol=1e-10, atol=1e-10, msg=k)
    # and back: the cell's state (a layer dimension added) continues the layer
    _, st5 = layer(x[:5])
    s = to_state(cell, {k: v[0] for k, v in parts_of(layer, st5).items()})
    s = cell(x[5], s)
    out6, _ = layer(x[6:], to_state(layer, {k: v[None] for k, v in parts_of(cell, s).items()}))
    torch.testing.assert_close(out6, out[6:], rtol=1e-10, atol=1e-10)
    # from scratch, unbatched
    s = None
    for t in range(8):
        s = cell(x[t, 0], s)
    torch.testing.assert_close(check_state(cell, s)["h"], out[-1, 0], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("host,kind", list(itertools.product(HOSTS, KINDS)))
def test_default_cell_has_torch_nns_state(host, kind):
    # without carry_momentum a cell takes and returns torch.nn's h / (h, c) and its momentum
    # starts at zero at every call: one step equals a carrying cell's step from torch.nn's state
    torch.manual_seed(0)
    cls = mr.cell_class(next(n for n, (h, k) in mr.CELL_NAMES.items() if (h, k) == (host, kind)))
    cell = cls(3, 4, dtype=torch.float64, **HP[kind])
    carrying = cls(3, 4, dtype=torch.float64, carry_momentum=True, **HP[kind])
    carrying.load_state_dict(cell.state_dict())
    assert cell.state_names == (("h", "c") if host == "lstm" else ("h",))
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    s = None
    for t in range(4):
        new = cell(x[t], s)
        parts = check_state(cell, new)
        assert all(v.shape == (2, 4) for v in parts.values())
        want = parts_of(carrying, carrying(x[t], s))
        for k, v in parts.items():
            torch.testing.assert_close(v, want[k], rtol=0, atol=0, msg=k)
        s = new
    assert check_state(cell, cell(x[0, 0], to_state(cell, {k: v[0] for k, v in parts.items()})))["h"].shape == (4,)


def test_cell_bad_input():
    cell = mr.MomentumLSTMCell(3, 4)
    with pytest.raises(ValueError, match="input has inconsistent input_size: got 5 expected 3"):
        cell(torch.randn(2, 5))
    with pytest.raises(ValueError, match="Expected input to be 1D or 2D, got 3D instead"):
        cell(torch.randn(1, 2, 3))
    with pytest.raises(TypeError, match="dtype"):
        cell(torch.randn(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"h0 \(state h\) has shape \(3, 4\), expected \(2, 4\)"):
        cell(torch.randn(2, 3), (torch.zeros(3, 4), torch.zeros(2, 4)))


def test_cells_check_their_state_as_the_layers_do():
    # one parser: a restart counter beyond the period is refused by the cell as by the layer
    cell = mr.RestartMomentumLSTMCell(3, 4, restart=2, carry_momentum=True)
    layer = mr.RestartMomentumLSTM(3, 4, restart=2, carry_momentum=True)
    x = torch.randn(2, 3)
    s = cell(x)
    h, c, v, step = s
    assert cell.state_names == ("h", "c", "v", "step")
    with pytest.raises(ValueError, match=r"restart counter\) must be in \[0, 2\]"):
        cell(x, (h, c, v, step + 5))
    with pytest.raises(ValueError, match=r"restart counter\) must be in \[0, 2\]"):
        layer(x.unsqueeze(0), (h[None], c[None], v[None], step[None] + 5))
    with pytest.raises(TypeError, match="momentum step must be an integer tensor"):
        cell(x, (h, c, v, step.float()))
    with pytest.raises(ValueError, match=r"momentum v has shape \(2, 8\), expected \(2, 16\)"):
        cell(x, (h, c, v[:, :8], step))
    # a tuple of the wrong length (a field missing)
    with pytest.raises(
        TypeError,
        match=r"RestartMomentumLSTMCell: hx must be a tuple \(h_0, c_0\) .* or a tuple "
        r"\(h_0, c_0, v, step\) .*got a tuple of length 3",
    ):
        cell(x, (h, c, v))
    # a carried state to a cell without carry_momentum
    with pytest.raises(
        TypeError,
        match=r"got a tuple of length 4; a state with the momentum \('v', 'step'\) is "
        r"taken only by a layer built with carry_momentum=True",
    ):
        mr.RestartMomentumLSTMCell(3, 4, restart=2)(x, s)
    adam = mr.AdamGRUCell(3, 4)
    with pytest.raises(
        TypeError, match=r"AdamGRUCell: hx must be a tensor h_0, got a tuple of length 3; .*carry_momentum=True"
    ):
        adam(x, adam.__class__(3, 4, carry_momentum=True)(x))
    with pytest.raises(TypeError, match=r"momentum v must be a torch.Tensor, got NoneType"):
        adam.__class__(3, 4, carry_momentum=True)(x, (torch.zeros(2, 4), None, torch.zeros(2, 12)))
    # unbatched state of an unbatched step
    s1 = cell(x[0])
    assert s1[0].shape == (4,) and s1[3].shape == ()
    assert cell(x[0], s1)[3].shape == ()
