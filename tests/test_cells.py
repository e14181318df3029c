"""Step-wise cells equal the one-layer layer of the same scheme; states interchange."""

import itertools

import pytest
import torch

import momentumrnn as mr
from test_layers import HP, HOSTS, KINDS


@pytest.mark.parametrize("host,kind", list(itertools.product(HOSTS, KINDS)))
def test_cell_loop_equals_layer(host, kind):
    torch.manual_seed(0)
    layer = mr.build_layer(host, kind, 3, 4, dtype=torch.float64, **HP[kind])
    name = {n: (h, k) for n, (h, k, _) in mr.LAYER_NAMES.items()}
    cls_name = [n for n, hk in name.items() if hk == (host, kind)][0]
    cell = mr.cell_class(cls_name + "Cell")(3, 4, dtype=torch.float64, **HP[kind])
    with torch.no_grad():
        cell.weight_ih.copy_(layer.weight_ih_l0)
        cell.weight_hh.copy_(layer.weight_hh_l0)
        cell.bias_ih.copy_(layer.bias_ih_l0)
        cell.bias_hh.copy_(layer.bias_hh_l0)
    x = torch.randn(8, 2, 3, dtype=torch.float64)
    out, st = layer(x)
    # stream: first 3 steps with the layer, then continue step by step with the cell
    _, st3 = layer(x[:3])
    cell_state = type(st3)(*(t[0] if isinstance(t, torch.Tensor) else
                             mr.MomentumState(*(None if f is None else f[0] for f in t)) for t in st3))
    hs = []
    for t in range(3, 8):
        cell_state = cell(x[t], cell_state)
        hs.append(cell_state.h)
    torch.testing.assert_close(torch.stack(hs), out[3:], rtol=1e-10, atol=1e-10)
    for a, b in zip(cell_state.momentum, st.momentum):
        if b is not None:
            torch.testing.assert_close(a, b[0], rtol=1e-10, atol=1e-10)
    # from scratch, unbatched
    s = None
    for t in range(8):
        s = cell(x[t, 0], s)
    torch.testing.assert_close(s.h, out[-1, 0], rtol=1e-10, atol=1e-10)


def test_cell_bad_input():
    cell = mr.MomentumLSTMCell(3, 4)
    with pytest.raises(ValueError, match="expected input of shape"):
        cell(torch.randn(2, 5))
    with pytest.raises(TypeError, match="dtype"):
        cell(torch.randn(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="shape"):
        cell(torch.randn(2, 3), (torch.zeros(3, 4), torch.zeros(2, 4)))


def test_cells_check_their_state_as_the_layers_do():
    # one parser: a restart counter beyond the period is refused by the cell as by the layer
    cell = mr.RestartMomentumLSTMCell(3, 4, restart=2)
    layer = mr.RestartMomentumLSTM(3, 4, restart=2)
    x = torch.randn(2, 3)
    s = cell(x)
    bad = mr.LSTMState(s.h, s.c, mr.MomentumState(v=s.momentum.v, step=s.momentum.step + 5))
    with pytest.raises(ValueError, match=r"restart counter\) must be in \[0, 2\]"):
        cell(x, bad)
    with pytest.raises(ValueError, match=r"restart counter\) must be in \[0, 2\]"):
        layer(x.unsqueeze(0), mr.LSTMState(s.h[None], s.c[None], mr.MomentumState(v=s.momentum.v[None],
                                                                                     step=s.momentum.step[None] + 5)))
    with pytest.raises(ValueError, match="does not use"):
        cell(x, mr.LSTMState(s.h, s.c, mr.MomentumState(m=s.momentum.v)))
    with pytest.raises(TypeError, match="bare MomentumState"):
        mr.AdamGRUCell(3, 4)(x, mr.MomentumState())
    # unbatched state of an unbatched step
    s1 = cell(x[0])
    assert s1.h.shape == (4,) and s1.momentum.step.shape == ()
    assert cell(x[0], s1).momentum.step.shape == ()
