"""Every layer (8 hosts x 6 schemes) and every cell in the PyTorch 2 stack, against eager mode:
torch.compile (forward + backward; aot_eager for the whole matrix, inductor for a few cases),
torch.export.export, torch.jit.trace, torch.func.grad / functional_call, double backward, half and
bfloat16 weights, autocast. Small sizes; the layers of one host run together in one module (one
compile / export / trace per host). The layers and cells carry their momentum (``carry_momentum=True``:
the momentum state is compared too, and the cells feed it back); one default layer per host and one
default cell per gated host keep torch.nn's state contract in every sweep."""

import io
import shutil
import warnings

import pytest
import torch
from states import check_state, parts_of
from torch import nn
from torch.func import functional_call

import momentumrnn as mr
from momentumrnn import backends
from momentumrnn.backends import modrelu_ops, native, ops
from momentumrnn.backends.fused_kernel import DriveSpec
from momentumrnn.backends.modrelu_loop import DriveFactors

T, B, I, H = 5, 2, 3, 4
TOL = dict(rtol=1e-9, atol=1e-9)
HOSTS = list(mr.HOSTS)
BY_HOST = {host: [n for n, (h, _, _) in mr.LAYER_NAMES.items() if h == host] for host in HOSTS}
CELLS = list(mr.CELL_NAMES)
#: the member of each group built without carry_momentum (torch.nn's state): the heavy-ball one
DEFAULT = {host: mr.registry.paper_name(host, "heavy_ball") for host in HOSTS}

pytestmark = pytest.mark.filterwarnings(
    "ignore::UserWarning", "ignore::torch.jit.TracerWarning", "ignore:`torch.jit:DeprecationWarning"
)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()  # every test compiles new modules: no recompile limit, no stale guards
    yield
    torch._dynamo.reset()


class Group(nn.Module):
    """Several layers (or cells) fed the same input; returns their (output, state) pairs."""

    def __init__(self, members, cells=False):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.cells = cells

    def forward(self, x):
        if self.cells:  # two steps: from no state, then from the returned state
            return tuple(cell(x[1], cell(x[0])) for cell in self.members)
        return tuple(layer(x) for layer in self.members)


def layer_group(host, dtype=torch.float64):
    """Every layer of the host carrying its momentum, then the host's default heavy-ball layer."""
    torch.manual_seed(0)
    return Group(
        [mr.layer_class(name)(I, H, dtype=dtype, carry_momentum=True) for name in BY_HOST[host]]
        + [mr.layer_class(DEFAULT[host])(I, H, dtype=dtype)]
    )


def cell_group(dtype=torch.float64):
    """Every cell carrying its momentum, then the default heavy-ball cell of each gated host."""
    torch.manual_seed(0)
    return Group(
        [mr.cell_class(name)(I, H, dtype=dtype, carry_momentum=True) for name in CELLS]
        + [mr.cell_class(DEFAULT[host] + "Cell")(I, H, dtype=dtype) for host in ("rnn", "lstm", "gru")],
        cells=True,
    )


def inputs(dtype=torch.float64, seed=1):
    return torch.randn(T, B, I, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def values(results):
    """The floating tensors of a list of results (outputs, states, momentum; complex as real
    pairs) and the integer ones (restart counters)."""
    floats, ints = [], []

    def walk(v):
        if isinstance(v, torch.Tensor):
            v = torch.view_as_real(v) if v.is_complex() else v
            (floats if v.is_floating_point() else ints).append(v)
        elif isinstance(v, (tuple, list)):
            for u in v:
                walk(u)

    walk(results)
    return floats, ints


def loss_of(floats):
    g = torch.Generator().manual_seed(7)
    return sum((t * torch.randn(t.shape, generator=g, dtype=torch.float64).to(t.dtype)).sum() for t in floats)


def evaluate(module, params, x):
    """Values and the gradients of a random loss with respect to x and params."""
    x = x.detach().requires_grad_(True)
    floats, ints = values(module(x))
    grads = torch.autograd.grad(loss_of(floats), [x, *params], allow_unused=True)
    return floats, ints, grads


def assert_same(got, ref, tol=TOL):
    for a, b in zip(got, ref):
        assert len(a) == len(b)
        for u, v in zip(a, b):
            if u is None or v is None:
                assert u is None or u.abs().max() == 0
                assert v is None or v.abs().max() == 0
                continue
            torch.testing.assert_close(u, v, **tol)


def params_of(module):
    return [p for p in module.parameters() if p.requires_grad]


# ---------------------------------------------------------------- torch.compile
@pytest.mark.parametrize("host", HOSTS)
def test_compile_matches_eager(host):
    group = layer_group(host)
    params = params_of(group)
    ref = evaluate(group, params, inputs())
    got = evaluate(torch.compile(group, backend="aot_eager", fullgraph=True), params, inputs())
    assert_same(got, ref)


def test_compile_cells_match_eager():
    group = cell_group()
    params = params_of(group)
    ref = evaluate(group, params, inputs())
    got = evaluate(torch.compile(group, backend="aot_eager", fullgraph=True), params, inputs())
    assert_same(got, ref)


def _cxx():
    return shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")


@pytest.mark.skipif(_cxx() is None, reason="torch.compile's default backend (inductor) needs a C++ compiler on CPU")
def test_compile_inductor_matches_eager():
    torch.manual_seed(0)
    group = Group(
        [
            mr.MomentumLSTM(I, H, carry_momentum=True),
            mr.AdamGRU(I, H, carry_momentum=True),
            mr.NesterovRNN(I, H, carry_momentum=True),
            mr.AdamLSTM(I, H),
        ]
    )
    params = params_of(group)
    ref = evaluate(group, params, inputs(torch.float32))
    got = evaluate(torch.compile(group, fullgraph=True), params, inputs(torch.float32))
    assert_same(got, ref, dict(rtol=1e-5, atol=1e-5))


def test_compile_keeps_nan_causal():
    layer = mr.AdamLSTM(2, 3)
    x = torch.randn(6, 2, 2)
    x[2, 0, 0] = float("nan")
    for fn in (
        layer,
        torch.compile(layer, backend="aot_eager", fullgraph=True),
        torch.compile(mr.MomentumLSTM(2, 3), backend="aot_eager", fullgraph=True),
    ):
        out, _ = fn(x)
        assert torch.isnan(out[2:, 0]).all() and torch.isfinite(out[:2]).all() and torch.isfinite(out[:, 1]).all()


def test_native_kernel_under_compile_is_replaced_by_the_table_and_refused_when_forced():
    assert backends.select("gated", "linear", "cuda", None, under_compile=True) == "fused"
    assert backends.select("gated", "linear", "cuda", None, under_compile=False) == "filtered_native"
    # the CPU's choice, the C++ loop, is an operator with a fake implementation: it compiles
    assert backends.select("gated", "linear", "cpu", None, under_compile=True) == "compiled_loop"
    with pytest.raises(ValueError, match=r"cannot run under torch.compile.*do not compile"):
        backends.select("gated", "linear", "cpu", "filtered_native", under_compile=True)
    # CUDA's Adam / RMSProp path ends in cuDNN's kernel: the fused operator under torch.compile
    assert backends.select("gated", "normalized", "cuda", None, under_compile=True) == "fused"
    assert backends.select("gated", "normalized", "cpu", None, under_compile=True) == "compiled_loop"
    assert backends.select("gated", "lookahead", "cuda", None, under_compile=True) == "graph_loop"
    for forced in ("native", "precomputed_native"):
        with pytest.raises(ValueError, match=r"cannot run under torch.compile"):
            backends.select("gated", "trivial", "cpu", forced, under_compile=True)
    assert "precomputed_native" in backends.FALLBACK  # a CPU whose oneDNN lacks the dtype falls back too
    layer = mr.MomentumLSTM(I, H)
    layer.backend = "filtered_native"
    with pytest.raises(Exception, match=r"cannot run under torch.compile.*do not compile"):  # dynamo wraps it
        torch.compile(layer, backend="aot_eager", fullgraph=True)(inputs(torch.float32))


# ---------------------------------------------------------------- torch.export
@pytest.mark.parametrize("host", HOSTS)
def test_export_matches_eager(host):
    group = layer_group(host)
    program = torch.export.export(group, (inputs(seed=3),))
    x = inputs()  # other values than the example: nothing data-dependent is baked in
    ref = evaluate(group, [], x)
    got = evaluate(program.module(), [], x)
    assert_same(got, ref)


def test_export_cells_match_eager():
    group = cell_group()
    program = torch.export.export(group, (inputs(seed=3),))
    assert_same(evaluate(program.module(), [], inputs()), evaluate(group, [], inputs()))


# ---------------------------------------------------------------- torch.jit.trace
@pytest.mark.parametrize("host", HOSTS)
def test_jit_trace_matches_eager(host):
    group = layer_group(host)
    params = params_of(group)
    traced = torch.jit.trace(group, (inputs(seed=3),), check_trace=False)
    assert_same(evaluate(traced, params, inputs()), evaluate(group, params, inputs()))


def test_jit_trace_cells_match_eager():
    group = cell_group()
    params = params_of(group)
    traced = torch.jit.trace(group, (inputs(seed=3),), check_trace=False)
    assert_same(evaluate(traced, params, inputs()), evaluate(group, params, inputs()))


@pytest.mark.parametrize("name", ["AdamLSTM", "NesterovGRU", "RestartMomentumDTRIV"])
def test_jit_trace_state_feeds_back_and_saves(name):
    # a traced carrying layer returns the flat all-tensor state (restart counters int64) and takes it back
    torch.manual_seed(0)
    layer = mr.layer_class(name)(I, H, dtype=torch.float64, carry_momentum=True)
    x = inputs()
    out_full, state_full = layer(x)
    out3, state3 = layer(x[:3])

    def saved(module):
        buf = io.BytesIO()
        torch.jit.save(module, buf)  # the custom operator is in the graph: serializable
        buf.seek(0)
        return torch.jit.load(buf)

    first = saved(torch.jit.trace(layer, (x[:3],), check_trace=False))
    then = saved(torch.jit.trace(layer, (x[3:], state3), check_trace=False))
    out_a, state_a = first(x[:3])
    parts_a = check_state(layer, state_a)
    assert list(parts_a) == list(layer.state_names) and len(parts_a) > (2 if layer.host == "lstm" else 1)
    for got, want in zip(state_a, state3):
        assert got.dtype == want.dtype and got.shape == want.shape
        torch.testing.assert_close(got, want, **TOL)
    torch.testing.assert_close(out_a, out3, **TOL)
    out_b, state_b = then(x[3:], state_a)  # the traced state fed back into a traced call
    check_state(layer, state_b)
    torch.testing.assert_close(out_b, out_full[3:], **TOL)
    for got, want in zip(state_b, state_full):
        torch.testing.assert_close(got, want, **TOL)
    out_e, _ = layer(x[3:], state_a)  # and into the eager layer
    torch.testing.assert_close(out_e, out_full[3:], **TOL)


# ---------------------------------------------------------------- torch.func
@pytest.mark.parametrize("group_of", [*HOSTS, "cells"])
def test_func_grad_matches_autograd(group_of):
    group = cell_group() if group_of == "cells" else layer_group(group_of)
    names = [n for n, p in group.named_parameters() if p.requires_grad]
    params = {n: p.detach() for n, p in group.named_parameters() if p.requires_grad}
    x = inputs()

    def loss(p):
        return loss_of(values(functional_call(group, p, (x,)))[0])

    got = torch.func.grad(loss)(params)
    _, _, ref = evaluate(group, params_of(group), x)
    for name, r in zip(names, ref[1:]):
        torch.testing.assert_close(got[name], r if r is not None else torch.zeros_like(got[name]), **TOL)


# ---------------------------------------------------------------- double backward
def second_order(module, params, x):
    x = x.detach().requires_grad_(True)
    (gx,) = torch.autograd.grad(loss_of(values(module(x))[0]), x, create_graph=True)
    r = torch.randn(gx.shape, generator=torch.Generator().manual_seed(5), dtype=gx.dtype)
    return torch.autograd.grad((gx * r).sum(), [x, *params], allow_unused=True)


@pytest.mark.parametrize("host", HOSTS)
def test_double_backward_matches_stepwise(host):
    group = layer_group(host)
    params = params_of(group)
    got = second_order(group, params, inputs())
    with backends.force("stepwise"):  # the literal step, plain autograd
        ref = second_order(group, params, inputs())
    assert_same([got], [ref])


def test_double_backward_of_cells_matches_finite_differences():
    group = cell_group()
    params = dict(group.named_parameters())
    x = inputs()
    v = {
        n: torch.randn(p.shape, generator=torch.Generator().manual_seed(i), dtype=p.dtype)
        for i, (n, p) in enumerate(params.items())
    }

    def first(shift):
        """sum(dL/dx) with the parameters moved by shift * v (a differentiable function of them)."""
        moved = {n: p + shift * v[n] for n, p in params.items()}
        xx = x.detach().requires_grad_(True)
        (gx,) = torch.autograd.grad(loss_of(values(functional_call(group, moved, (xx,)))[0]), xx, create_graph=True)
        return gx.sum()

    grads = torch.autograd.grad(first(0.0), list(params.values()))
    exact = sum((g * v[n]).sum() for g, n in zip(grads, params))
    h = 1e-6
    numeric = (first(h).detach() - first(-h).detach()) / (2 * h)
    torch.testing.assert_close(exact, numeric, rtol=1e-6, atol=1e-6)


def _fused_case(kind, host):
    g = torch.Generator().manual_seed(0)
    Tn, Bn, In, Hn = 3, 2, 2, 2
    G = {"rnn": 1, "lstm": 4, "gru": 3}[host] * Hn

    def r(*shape, scale=0.5):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).requires_grad_(True)

    x, w_ih, b_ih, bias_e, h0, w_hh = r(Tn, Bn, In), r(G, In), r(G), r(G), r(Bn, Hn), r(G, Hn)
    c0 = r(Bn, Hn) if host == "lstm" else None
    b_hn = r(Hn) if host == "gru" else None
    kw = dict(x=x, w_ih=w_ih, b_ih=b_ih, bias_e=bias_e, c0=c0, b_hn=b_hn)
    if kind == "nesterov":
        mu_k = torch.tensor([0.0, 0.25, 0.4], dtype=torch.float64).view(Tn, 1, 1)
        kw.update(alpha=1 + mu_k, beta=mu_k, p0=r(Bn, G))
    elif kind == "adam":
        kw.update(v0=r(Bn, G), m0=(torch.rand(Bn, G, generator=g, dtype=torch.float64) + 0.2).requires_grad_(True))
    spec = DriveSpec(kind, mu=0.5, epsilon=0.7, beta=0.3)
    tensors = [
        t for t in (x, w_ih, b_ih, bias_e, h0, w_hh, *kw.values()) if isinstance(t, torch.Tensor) and t.requires_grad
    ]

    def fn(*_):
        return tuple(t for t in ops.fused_recurrence(host, h0, w_hh, spec=spec, **kw) if t is not None)

    return fn, tensors


@pytest.mark.parametrize("kind,host", [("adam", "lstm"), ("rmsprop", "gru"), ("nesterov", "gru"), ("nesterov", "rnn")])
def test_fused_operator_gradgradcheck(kind, host):
    fn, tensors = _fused_case(kind, host)
    assert torch.autograd.gradgradcheck(lambda *ts: fn(), tensors)


@pytest.mark.parametrize("paired,normalized,dense", [(False, True, False), (True, True, False), (True, False, True)])
def test_modrelu_operator_gradgradcheck(paired, normalized, dense):
    g = torch.Generator().manual_seed(1)
    Tn, Bn, In, Hn = 3, 2, 2, 2
    N = 2 * Hn if paired else Hn

    def r(*shape, scale=0.6):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).requires_grad_(True)

    h0, W, bias = r(Bn, N), r(2, Hn, Hn) if paired else r(N, N), r(Hn if paired else N, scale=0.1)
    if dense:
        d = r(Tn, Bn, N)
        tensors = [h0, W, bias, d]

        def fn(*_):
            return modrelu_ops.modrelu_recurrence(d, h0, W, bias, paired)
    else:
        xs, a, v0 = r(Tn, Bn, In), r(N, In), r(Bn, N)
        pv = torch.rand(Tn, 1, 1, generator=g, dtype=torch.float64)
        f = DriveFactors(xs, a, pv, v0)
        tensors = [h0, W, bias, xs, a, v0]
        if normalized:
            qs, c = (torch.rand(Tn, Bn, In, generator=g, dtype=torch.float64) + 0.5).requires_grad_(True), r(Hn, In)
            f = f._replace(qs=qs, c=c.detach().abs().requires_grad_(True))
            tensors += [f.qs, f.c]

        def fn(*_):
            return modrelu_ops.modrelu_recurrence(None, h0, W, bias, paired, f)

    assert torch.autograd.gradgradcheck(lambda *ts: fn(), tensors)
    # and the lookahead recurrence
    x, a, p0 = r(Tn, Bn, In), r(N, In), r(Bn, N)
    mu_k = torch.tensor([0.0, 0.25, 0.4], dtype=torch.float64).view(Tn, 1, 1)
    assert torch.autograd.gradgradcheck(
        lambda *ts: modrelu_ops.modrelu_lookahead(x, a, h0, W, bias, 1 + mu_k, mu_k, p0, paired),
        [x, a, h0, W, bias, p0],
    )


# ---------------------------------------------------------------- half, bfloat16, autocast
# Against float32 with the same (rounded) weights and input. float16 with Adam / RMSProp is refused
# (the 1e-16 under the square root is 0 in float16 and 1/sqrt(m) overflows: infinite gradients).
LOW = {torch.bfloat16: 0.1, torch.float16: 0.02}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("host", HOSTS)
def test_low_precision_weights_match_float32(host, dtype):
    group32 = layer_group(host, torch.float32)
    low = layer_group(host, torch.float32).to(dtype)
    x = inputs(dtype)
    if host == "scurnn":  # complex state: no complex bfloat16, too few complex float16 ops
        with pytest.raises(TypeError, match="complex"):
            low(x)
        return
    with torch.no_grad():
        for p32, p in zip(group32.parameters(), low.parameters()):
            p32.copy_(p.float())
    outs = []
    for layer, ref_layer in zip(low.members, group32.members):
        if dtype == torch.float16 and layer.scheme.spec.normalized:
            with pytest.raises(TypeError, match=r"float16.*bfloat16"):
                layer(x)
            continue
        out, _ = layer(x)
        assert out.dtype == dtype
        torch.testing.assert_close(out.float(), ref_layer(x.float())[0], rtol=0, atol=LOW[dtype])
        outs.append(out)
    loss_of(outs).backward()
    assert all(torch.isfinite(p.grad).all() for p in params_of(low) if p.grad is not None)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_cells_match_float32(dtype):
    cells32, low = cell_group(torch.float32), cell_group(torch.float32).to(dtype)
    x = inputs(dtype)
    outs = []
    for cell, ref_cell in zip(low.members, cells32.members):
        if dtype == torch.float16 and cell.scheme.spec.normalized:
            with pytest.raises(TypeError, match=r"float16.*bfloat16"):
                cell(x[0])
            continue
        h = parts_of(cell, cell(x[1], cell(x[0])))["h"]
        ref = parts_of(ref_cell, ref_cell(x[1].float(), ref_cell(x[0].float())))["h"]
        assert h.dtype == dtype
        torch.testing.assert_close(h.float(), ref, rtol=0, atol=LOW[dtype])
        outs.append(h)
    loss_of(outs).backward()
    assert all(torch.isfinite(p.grad).all() for p in params_of(low) if p.grad is not None)


@pytest.mark.parametrize("group_of", [*HOSTS, "cells"])
def test_autocast_computes_in_float32(group_of):
    group = cell_group(torch.float32) if group_of == "cells" else layer_group(group_of, torch.float32)
    x = inputs(torch.float32)
    ref = values(group(x))[0]
    lin = nn.Linear(I, I).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = values(group(x))[0]
        x_low = lin(x)  # an autocast layer's bfloat16 output feeds the next layer
        assert x_low.dtype == torch.bfloat16
        got_low = values(group(x_low))[0]
    loss_of(got_low).backward()  # (backward outside the autocast region, as torch recommends)
    assert_same([got], [ref], dict(rtol=0, atol=0))
    assert_same([got_low], [values(group(x_low.float()))[0]], dict(rtol=0, atol=0))


def test_low_precision_native_kernel_is_probed_and_replaced(monkeypatch):
    layer = mr.MomentumLSTM(I, H).to(torch.bfloat16)
    x = inputs(torch.bfloat16)
    assert native.capable(layer, x) in (True, False)  # probed once, kept
    seen = []
    fused = backends.BACKENDS["fused"]
    monkeypatch.setitem(backends.BACKENDS, "fused", fused._replace(run=lambda *a: seen.append(1) or fused.run(*a)))
    monkeypatch.setitem(native._CAPABLE, ("lstm", None, "cpu", torch.bfloat16), False)
    out, _ = layer(x)
    assert seen and out.dtype == torch.bfloat16


# ---------------------------------------------------------------- ENRNN with its latch on
def test_enrnn_latched_in_the_stack():
    torch.manual_seed(0)
    layer = mr.MomentumENRNN(I, H, dtype=torch.float64, carry_momentum=True)
    with torch.no_grad():
        plist = layer.parametrizations.weight_hh_l0
        plist.original1.mul_(3.0 / float(mr.hosts.enrnn.spectral_radius(plist.original1)))
    layer.on_optimizer_step()  # rho(W2) = 3 > 1: the latch goes on, W2 / rho(W2) from now on
    assert plist[0].latched()
    group = Group([layer])
    params = params_of(group)
    ref = evaluate(group, params, inputs())
    assert_same(evaluate(torch.compile(group, backend="aot_eager", fullgraph=True), params, inputs()), ref)
    assert_same(evaluate(torch.export.export(group, (inputs(seed=3),)).module(), params, inputs())[:2], ref[:2])
    got = second_order(group, params, inputs())
    with backends.force("stepwise"):
        assert_same([got], [second_order(group, params, inputs())])


def test_no_warning_from_eager_calls():
    # eager calls of the operators stay quiet (no tracer or deprecation warnings)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in ("AdamLSTM", "NesterovGRU", "MomentumDTRIV", "NesterovScuRNN"):
            out, _ = mr.layer_class(name)(I, H)(inputs(torch.float32))
            out.sum().backward()


@pytest.mark.parametrize("name", ["RestartMomentumLSTM"])
def test_compile_and_export_stacked_bidirectional_batch_first_with_state(name):
    torch.manual_seed(0)
    layer = mr.layer_class(name)(
        I, H, num_layers=2, bidirectional=True, batch_first=True, dtype=torch.float64, carry_momentum=True
    )
    x = inputs().transpose(0, 1)
    _, state = layer(x)  # a state with momentum (and restart counters) to continue from
    assert list(check_state(layer, state)) == ["h", "c", "v", "step"]
    state = tuple(t.detach() for t in state)

    class Continue(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = layer

        def forward(self, x):
            return self.layer(x, state)

    module = Continue()
    params = params_of(module)
    ref = evaluate(module, params, x)
    assert_same(evaluate(torch.compile(module, backend="aot_eager", fullgraph=True), params, x), ref)
    assert_same(evaluate(torch.export.export(module, (x,)).module(), params, x), ref)
