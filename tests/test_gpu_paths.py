"""The GPU paths, run on the CPU against the literal reference in float64 (issue 11, part 3):

* ``precomputed_native`` (CUDA's choice for Adam / RMSProp: the drive by the filters, then the native
  kernel with an identity input map) on every input-only scheme, learnable hyper-parameters included;
* ``graph_loop`` (CUDA's choice for Nesterov: the few-operation loop that CUDA graphs replay; on the
  CPU it runs eagerly, the very code that is captured) on every host.

tests/test_gpu.py runs them on a GPU (capture and replay included)."""

import itertools

import pytest
import torch
from states import check_state, momentum_of
from test_layers import HOSTS, TOL, assert_match, gradcheck_packed, make, random_state, run_both

from momentumrnn.backends import graph_loop

INPUT_ONLY = ["none", "heavy_ball", "adam", "rmsprop", "restart"]


@pytest.mark.parametrize("host,kind", list(itertools.product(HOSTS, INPUT_ONLY)))
def test_precomputed_native_matches_reference(host, kind):
    layer = make(host, kind, num_layers=2, bidirectional=True)
    layer.backend = "precomputed_native"
    x = torch.randn(37, 4, 3, dtype=torch.float64, requires_grad=True)
    assert_match(layer, *run_both(layer, x))
    if kind != "none":
        st = random_state(layer, 4, layer.scheme.state_fields)
        assert_match(layer, *run_both(layer, x, [37, 16, 20, 3], st))


@pytest.mark.parametrize("host,kind", list(itertools.product(HOSTS, ["adam", "heavy_ball"])))
def test_precomputed_native_learnable_and_no_bias(host, kind):
    layer = make(host, kind, learn_mu=True, learn_epsilon=True, bias=False)
    layer.backend = "precomputed_native"
    x = torch.randn(6, 2, 3, dtype=torch.float64, requires_grad=True)
    assert_match(layer, *run_both(layer, x, None, random_state(layer, 2, layer.scheme.state_fields)))


@pytest.mark.parametrize("host", HOSTS)
def test_graph_loop_matches_reference(host):
    for kw in ({}, {"num_layers": 2, "bidirectional": True}, {"bias": False}):
        layer = make(host, "nesterov", **kw)
        layer.backend = "graph_loop"
        x = torch.randn(37, 4, 3, dtype=torch.float64, requires_grad=True)  # several derivative blocks
        st = random_state(layer, 4, layer.scheme.state_fields)
        assert_match(layer, *run_both(layer, x, [37, 16, 20, 3], st))
        assert_match(layer, *run_both(layer, x, None, st))
        assert_match(layer, *run_both(layer, x[:5, :1]))


def test_graph_loop_relu_rnn_and_chunks():
    layer = make("rnn", "nesterov", nonlinearity="relu", num_layers=2)
    layer.backend = "graph_loop"
    x = torch.randn(8, 3, 3, dtype=torch.float64, requires_grad=True)
    assert_match(layer, *run_both(layer, x, [8, 2, 5], random_state(layer, 3, layer.scheme.state_fields)))
    out_full, st_full = layer(x)
    o1, st = layer(x[:3])
    o2, st = layer(x[3:], st)
    torch.testing.assert_close(torch.cat([o1, o2]), out_full, **TOL)
    parts, parts_full = check_state(layer, st), check_state(layer, st_full)
    assert list(parts) == ["h", "p", "step"]
    torch.testing.assert_close(parts["h"], parts_full["h"], **TOL)
    torch.testing.assert_close(parts["p"], parts_full["p"], **TOL)
    torch.testing.assert_close(parts["step"], parts_full["step"])


@pytest.mark.parametrize("host", HOSTS)
def test_graph_loop_gradcheck_and_double_backward(host):
    layer = make(host, "nesterov", input_size=2, hidden=3)
    layer.backend = "graph_loop"
    x = torch.randn(5, 2, 2, dtype=torch.float64, requires_grad=True)
    st = random_state(layer, 2, layer.scheme.state_fields)
    assert gradcheck_packed(layer, x, st)

    def second(backend):
        layer.backend = backend
        out, state = layer(x)
        (g,) = torch.autograd.grad(out.square().sum() + momentum_of(layer, state)["p"].sum(), x, create_graph=True)
        return torch.autograd.grad(g.square().sum(), [x, *layer.parameters()])

    for a, b in zip(second("graph_loop"), second("stepwise")):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("host", [0, 2, 3])
def test_graph_loop_operator_registration(host):
    torch.manual_seed(0)
    T, B, I, H = 4, 2, 3, 5
    G = {0: 1, 2: 4, 3: 3}[host] * H
    d = dict(dtype=torch.float64, requires_grad=True)
    beta = torch.rand(T, B, 1, dtype=torch.float64)
    args = (
        torch.randn(T, B, I, **d),
        torch.randn(G, I, **d),
        torch.randn(G, **d),
        torch.randn(G, **d),
        torch.randn(G, H, **d),
        torch.randn(H, **d) if host == 3 else None,
        torch.randn(B, H, **d),
        torch.randn(B, H, **d) if host == 2 else None,
        torch.randn(B, G, **d),
        1 + beta,
        beta,
        torch.tensor([3, 1]),
        host,
        0.7,
    )
    torch.library.opcheck(
        graph_loop.lookahead_loop, args, test_utils=("test_schema", "test_autograd_registration", "test_faketensor")
    )
