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
