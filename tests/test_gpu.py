"""The GPU paths on a GPU (skipped without CUDA; scripts/device-check.sh runs them): the dispatch
table's CUDA choices (heavy ball on cuDNN through the filtered input, Adam / RMSProp on cuDNN through
the precomputed drive, Nesterov on the CUDA-graph loop) against the same layer on the CPU (itself
checked against the literal reference) in float64, graph capture and replay, float32 and half."""

import itertools
import os

import pytest
import torch
from states import check_state
from test_layers import HOSTS, make, random_state, to_layer_state
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import momentumrnn as mr
from momentumrnn import backends
from momentumrnn.backends import graph_loop

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

KINDS = ["none", "heavy_ball", "adam", "rmsprop", "restart", "nesterov"]
CUDA_CHOICE = {
    "none": "native",
    "heavy_ball": "filtered_native",
    "restart": "filtered_native",
    "adam": "precomputed_native",
    "rmsprop": "precomputed_native",
    "nesterov": "graph_loop",
}
TOL64 = dict(rtol=1e-8, atol=1e-8)


def forward_backward(layer, x, lengths=None, st=None):
    """Outputs, final state tensors and the gradients of input, parameters and state of a fixed loss."""
    inputs = [x] + list(layer.parameters()) + [v for v in (st or {}).values() if v.is_floating_point()]
    inp = pack_padded_sequence(x, lengths, enforce_sorted=False) if lengths is not None else x
    out, state = layer(inp, to_layer_state(layer, st) if st else None)
    if lengths is not None:
        out = pad_packed_sequence(out, total_length=x.shape[0])[0]
    terms = [out] + [t for t in check_state(layer, state).values() if t.is_floating_point()]  # h, c, momentum
    g = torch.Generator().manual_seed(5)
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype).to(t.device)).sum() for t in terms)
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    return [t.detach() for t in terms], [None if gr is None else gr.detach() for gr in grads]


def to(st, device):
    return {k: v.detach().to(device).requires_grad_(v.requires_grad) for k, v in st.items()}


def assert_same(a, b, **tol):
    for x, y in zip(a, b):
        if x is None or y is None:
            assert (x is None or x.abs().max() == 0) and (y is None or y.abs().max() == 0)
            continue
        torch.testing.assert_close(x.cpu(), y.cpu(), **tol)


def test_the_dispatch_table_on_cuda(monkeypatch):
    seen = []
    select = backends.select
    monkeypatch.setattr(backends, "select", lambda *a, **k: seen.append(select(*a, **k)) or seen[-1])
    for kind in KINDS:
        seen.clear()
        layer = mr.build_layer("lstm", kind, 3, 4, device="cuda")
        layer(torch.randn(5, 2, 3, device="cuda"))
        assert seen == [CUDA_CHOICE[kind]], (kind, seen)


@pytest.mark.parametrize("host,kind", list(itertools.product(HOSTS, KINDS)))
def test_cuda_matches_cpu_in_float64(host, kind):
    cpu = make(host, kind, num_layers=2, bidirectional=True)
    gpu = make(host, kind, num_layers=2, bidirectional=True).cuda()
    x = torch.randn(37, 4, 3, dtype=torch.float64)
    st = random_state(cpu, 4, cpu.scheme.state_fields)
    for lengths, state in ((None, None), ([37, 16, 20, 3], st)):
        a = forward_backward(cpu, x.clone().requires_grad_(), lengths, state and to(state, "cpu"))
        b = forward_backward(gpu, x.cuda().requires_grad_(), lengths, state and to(state, "cuda"))
        assert_same(a[0], b[0], **TOL64)
        assert_same(a[1], b[1], **TOL64)


@pytest.mark.parametrize("host", HOSTS)
def test_graph_replay_equals_eager(host, monkeypatch):
    graph_loop.clear_graphs()
    layer = make(host, "nesterov", num_layers=2, input_size=4, hidden=4).cuda()  # layer 2 reuses layer 1's graph
    xs = [torch.randn(20, 3, 4, dtype=torch.float64, device="cuda") for _ in range(3)]
    graphed = [forward_backward(layer, x.clone().requires_grad_()) for x in xs]  # capture, then replays
    assert len(graph_loop._graphs) == 2  # one forward and one backward graph, shared by both layers
    monkeypatch.setenv("MOMENTUMRNN_CUDA_GRAPHS", "0")
    for x, g in zip(xs, graphed):
        e = forward_backward(layer, x.clone().requires_grad_())
        assert_same(g[0], e[0], rtol=1e-12, atol=1e-12)
        assert_same(g[1], e[1], rtol=1e-12, atol=1e-12)


def test_two_calls_before_one_backward():
    # outputs and saved tensors are copied out of the graph: a second call does not overwrite the first
    layer = make("lstm", "nesterov").cuda()
    x1, x2 = (torch.randn(10, 2, 3, dtype=torch.float64, device="cuda", requires_grad=True) for _ in range(2))
    o1, _ = layer(x1)
    o2, _ = layer(x2)
    (g1,) = torch.autograd.grad(o1.sum(), x1)
    (g2,) = torch.autograd.grad(o2.sum(), x2)
    ref = make("lstm", "nesterov")
    for x, o, g in ((x1, o1, g1), (x2, o2, g2)):
        xc = x.detach().cpu().requires_grad_()
        oc, _ = ref(xc)
        (gc,) = torch.autograd.grad(oc.sum(), xc)
        torch.testing.assert_close(o.detach().cpu(), oc.detach(), **TOL64)
        torch.testing.assert_close(g.cpu(), gc, **TOL64)


@pytest.mark.parametrize("kind", ["adam", "rmsprop", "nesterov", "heavy_ball"])
def test_float32_and_half(kind):
    cpu = make("lstm", kind, hidden=32, input_size=8)
    gpu = make("lstm", kind, hidden=32, input_size=8).float().cuda()
    x = torch.randn(50, 16, 8, dtype=torch.float64)
    ref = cpu(x)[0]
    out = gpu(x.float().cuda())[0]
    torch.testing.assert_close(out.double().cpu(), ref, rtol=1e-3, atol=1e-3)
    half = make("lstm", kind, hidden=32, input_size=8).half().cuda()
    out16, _ = half(x.half().cuda())
    assert bool(torch.isfinite(out16).all())
    out16.float().sum().backward()


def test_compiled_loop_and_fused_on_cuda():
    # the CPU loop hands CUDA tensors to the Python loop; both agree with the dispatch table's choice
    x = torch.randn(12, 3, 3, dtype=torch.float64, device="cuda")
    for kind in ("adam", "nesterov"):
        layer = make("gru", kind).cuda()
        ref = layer(x)[0]
        for name in ("compiled_loop", "fused", "stepwise"):
            layer.backend = name
            torch.testing.assert_close(layer(x)[0], ref, **TOL64)


def test_double_backward_on_cuda():
    layer = make("lstm", "nesterov").cuda()
    x = torch.randn(6, 2, 3, dtype=torch.float64, device="cuda", requires_grad=True)
    out, _ = layer(x)
    (g,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
    (gg,) = torch.autograd.grad(g.square().sum(), x)
    layer.backend = "stepwise"
    out, _ = layer(x)
    (g2,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
    (gg2,) = torch.autograd.grad(g2.square().sum(), x)
    torch.testing.assert_close(gg, gg2, **TOL64)


def test_no_capture_inside_a_callers_capture():
    # inside the caller's own torch.cuda.graph the loop runs eagerly (and is captured by the caller)
    layer = make("lstm", "nesterov").float().cuda()
    x = torch.randn(8, 2, 3, device="cuda")
    with torch.no_grad():
        ref = layer(x)[0]
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            layer(x)
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            out = layer(x)[0]
        g.replay()
    torch.testing.assert_close(out, ref)
    assert os.environ.get("MOMENTUMRNN_CUDA_GRAPHS", "1") != "0"
