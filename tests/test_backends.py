"""The dispatch table, and every backend forced on every gated layer it can run, against the
literal reference in float64 (outputs, states, gradients)."""

import itertools

import pytest
import torch
from test_layers import HOSTS, KINDS, assert_match, make, random_state, run_both

import momentumrnn as mr
from momentumrnn import backends


def capable(family, drive):
    return [n for n, b in backends.BACKENDS.items() if family in b.families and drive in b.drives]


def drive_of(kind):
    spec = mr.SCHEMES[kind]
    if kind == "none":
        return "trivial"
    return "lookahead" if spec.lookahead else "normalized" if spec.normalized else "linear"


# scan (what torch.onnx.export runs) has its own cases below: eagerly, autograd traces its step into
# a joint forward-backward graph at every call (about 0.6 s of CPU per layer and direction here),
# so stacked bidirectional layers on every host and scheme would add a minute to the suite
CASES = [
    (host, kind, name)
    for host, kind in itertools.product(HOSTS, KINDS)
    for name in capable("gated", drive_of(kind))
    if name != "scan"
]


def test_every_drive_has_a_backend_on_every_family():
    for family, drive in itertools.product(("gated", "modrelu"), backends.DRIVES):
        name = backends.select(family, drive, "cpu")
        assert family in backends.BACKENDS[name].families and drive in backends.BACKENDS[name].drives
    # what the table says runs where (the README's "How it runs")
    assert backends.select("gated", "trivial", "cpu") == "native"
    assert backends.select("gated", "linear", "cpu") == "compiled_loop"
    assert backends.select("gated", "normalized", "cpu") == "compiled_loop"
    assert backends.select("gated", "lookahead", "cpu") == "compiled_loop"
    assert backends.select("gated", "normalized", "cuda") == "precomputed_native"
    assert backends.select("gated", "lookahead", "cuda") == "graph_loop"
    assert backends.select("gated", "linear", "cuda") == "filtered_native"
    assert backends.select("gated", "lookahead", "mps") == "fused"


@pytest.mark.parametrize("host,kind,backend", CASES)
def test_forced_backend_matches_reference(host, kind, backend):
    layer = make(host, kind, num_layers=2, bidirectional=True)
    layer.backend = backend
    x = torch.randn(7, 4, 3, dtype=torch.float64, requires_grad=True)
    assert_match(layer, *run_both(layer, x))
    if backend != "native":  # a carried momentum is not a trivial drive
        st = random_state(layer, 4, layer.scheme.state_fields)
        assert_match(layer, *run_both(layer, x, [7, 3, 5, 1], st))


@pytest.mark.parametrize("host,kind", list(itertools.product(HOSTS, ["heavy_ball", "adam", "nesterov"])))
def test_stepwise_with_learnable_hyper_parameters(host, kind):
    kw = {"learn_mu": True} if "mu" in mr.SCHEMES[kind].defaults else {}
    layer = make(host, kind, learn_epsilon=True, **kw)
    layer.backend = "stepwise"
    x = torch.randn(6, 2, 3, dtype=torch.float64, requires_grad=True)
    assert_match(layer, *run_both(layer, x))


@pytest.mark.parametrize("host,kind", list(itertools.product(HOSTS, KINDS)))
def test_scan_backend_matches_reference(host, kind):
    # what torch.onnx.export runs, on a packed batch with a carried state: the masking past each
    # sequence's end, the momentum and the restart counter carried in; outputs, states, gradients
    layer = make(host, kind)
    layer.backend = "scan"
    x = torch.randn(5, 3, 3, dtype=torch.float64, requires_grad=True)
    assert_match(layer, *run_both(layer, x, [5, 2, 4], random_state(layer, 3, layer.scheme.state_fields)))


@pytest.mark.parametrize("host,kind", [("lstm", "nesterov"), ("gru", "adam"), ("rnn", "restart")])
def test_scan_backend_stacked_bidirectional(host, kind):
    layer = make(host, kind, num_layers=2, bidirectional=True)
    layer.backend = "scan"
    x = torch.randn(6, 3, 3, dtype=torch.float64, requires_grad=True)
    assert_match(layer, *run_both(layer, x, [6, 2, 4], random_state(layer, 3, layer.scheme.state_fields)))


def test_onnx_dispatch():
    # under torch.onnx.export every family and drive runs on scan; forced backends must export
    for family, drive in itertools.product(("gated", "modrelu"), backends.DRIVES):
        assert backends.select(family, drive, "cpu", onnx_export=True) == "scan"
        assert backends.select(family, drive, "cuda", onnx_export=True) == "scan"
    assert backends.select("gated", "normalized", "cpu", "stepwise", onnx_export=True) == "stepwise"
    with pytest.raises(
        ValueError,
        match=r"backend 'compiled_loop' cannot run under torch.onnx.export: its kernel has no ONNX translation",
    ):
        backends.select("gated", "normalized", "cpu", "compiled_loop", onnx_export=True)
    with pytest.raises(ValueError, match=r"cannot run under torch.onnx.export"):
        backends.select("modrelu", "linear", "cpu", "modrelu", onnx_export=True)


def test_force_context_and_errors():
    layer = make("lstm", "adam")
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    with backends.force("stepwise"):
        a = layer(x)[0]
    torch.testing.assert_close(a, layer(x)[0], rtol=1e-10, atol=1e-10)
    with (
        backends.force("native"),
        pytest.raises(
            ValueError,
            match="cannot run a normalized drive on a gated host; "
            "use one of fused, compiled_loop, "
            "precomputed_native, stepwise",
        ),
    ):
        layer(x)
    layer.backend = "modrelu"
    with pytest.raises(ValueError, match="cannot run"):
        layer(x)
    layer.backend = "cudnn-magic"
    with pytest.raises(ValueError, match="unknown backend 'cudnn-magic'"):
        layer(x)
    with pytest.raises(ValueError, match="unknown backend"), backends.force("nope"):
        pass


def test_double_backward_on_the_stepwise_backend():
    # the literal backend is plain autograd: second derivatives (e.g. gradient penalties) work
    layer = make("gru", "nesterov")
    layer.backend = "stepwise"
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(layer(x)[0].square().sum(), x, create_graph=True)
    (gg,) = torch.autograd.grad(g.square().sum(), x)
    assert gg.abs().sum() > 0
