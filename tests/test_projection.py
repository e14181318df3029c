"""LSTM with projections (``proj_size``, LSTMP: ``h_t = W_hr (o_t * tanh(c_t))``) with every scheme:
torch.nn's constructor signature and messages, parameters, the literal reference (tests/reference.py)
in float64 on every backend that runs projections (outputs, states, gradients), torch.nn at
``mu = 0, epsilon = 1``, the dispatch table's route, gradcheck, and torch.compile / torch.export."""

import inspect
import itertools

import pytest
import torch
from test_layers import KINDS, TOL, assert_match, gradcheck_packed, make, random_state, run_both
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import momentumrnn as mr
from momentumrnn import backends
from momentumrnn.backends import ops
from momentumrnn.backends.fused_kernel import DriveSpec

I, HID, P = 3, 5, 2


def lstmp(kind, **kw):
    return make("lstm", kind, input_size=I, hidden=HID, proj_size=P, **kw)


def drive_of(kind):
    spec = mr.SCHEMES[kind]
    if kind == "none":
        return "trivial"
    return "lookahead" if spec.lookahead else "normalized" if spec.normalized else "linear"


def with_projections(drive):
    return [n for n, b in backends.BACKENDS.items() if "gated" in b.families and drive in b.drives and b.projections]


CASES = [(kind, name) for kind in KINDS for name in with_projections(drive_of(kind))]


@pytest.fixture
def ran(monkeypatch):
    """The names of the backends that ran, in order (every entry of the table wrapped)."""
    names = []
    for name, b in list(backends.BACKENDS.items()):

        def wrapped(*a, _run=b.run, _name=name, **k):
            names.append(_name)
            return _run(*a, **k)

        monkeypatch.setitem(backends.BACKENDS, name, b._replace(run=wrapped))
    return names


# ---------------------------------------------------------------- constructor and parameters
def _message(fn):
    with pytest.raises((ValueError, TypeError)) as info:
        fn()
    return str(info.value)


@pytest.mark.parametrize(
    "host,args,kw",
    [
        ("lstm", (), dict(proj_size=-1)),
        ("lstm", (), dict(proj_size=HID)),
        ("lstm", (), dict(proj_size=HID + 3)),
        ("gru", (1, True, False, 0.0, False, 2), {}),
        ("rnn", (1, "tanh", True, False, 0.0, False, 1), {}),
    ],
)
def test_bad_proj_size_gives_torch_nn_message(host, args, kw):
    torch_cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[host]
    ours = mr.layer_class({"lstm": "MomentumLSTM", "gru": "AdamGRU", "rnn": "NesterovRNN"}[host])
    if host == "lstm":
        expected = _message(lambda: torch_cls(I, HID, *args, **kw))
    else:  # torch.nn refuses it by keyword (and builds a broken module from a positional one)
        expected = _message(lambda: torch_cls(I, HID, proj_size=args[-1]))
    got = _message(lambda: ours(I, HID, *args, **kw))
    assert got.startswith(expected), (got, expected)
    assert str(args[-1] if args else kw["proj_size"]) in got  # and says what was given
    with pytest.raises(ValueError, match="only supported for LSTM"):
        mr.build_layer(host if host != "lstm" else "gru", "adam", I, HID, proj_size=1)


@pytest.mark.parametrize("value", [2.0, True, "2", None])
def test_proj_size_of_another_type(value):
    with pytest.raises(TypeError, match=f"proj_size should be of type int, got: {type(value).__name__}"):
        mr.LSTM(I, HID, proj_size=value)


def test_signature_is_torch_nn_order():
    order = [
        "input_size",
        "hidden_size",
        "num_layers",
        "bias",
        "batch_first",
        "dropout",
        "bidirectional",
        "proj_size",
        "device",
        "dtype",
    ]
    for name in ("LSTM", "AdamLSTM", "GRU", "NesterovGRU"):
        params = list(inspect.signature(mr.layer_class(name)).parameters.values())
        positional = [p.name for p in params if p.kind == p.POSITIONAL_OR_KEYWORD]
        assert positional == order, name
        assert all(p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD) for p in params[len(order) :])
    rnn = [p.name for p in inspect.signature(mr.MomentumRNN).parameters.values() if p.kind == p.POSITIONAL_OR_KEYWORD]
    assert rnn == [*order[:3], "nonlinearity", *order[3:]]
    # positional calls as torch.nn's
    assert mr.LSTM(I, HID, 2, False, True, 0.0, True, P).proj_size == P
    layer = mr.MomentumRNN(I, HID, 2, "relu", False, mu=0.3)
    assert (layer.nonlinearity, layer.bias, layer.scheme.mu) == ("relu", False, 0.3)
    assert mr.GRU(I, HID, 1, True, False, 0.0, False, 0).proj_size == 0
    assert mr.GRU(I, HID, proj_size=0).proj_size == mr.RNN(I, HID, proj_size=0).proj_size == 0
    with pytest.raises(TypeError):  # the momentum keywords stay keyword-only
        mr.MomentumLSTM(I, HID, 1, True, False, 0.0, False, 0, None, None, 0.5)


@pytest.mark.parametrize("kw", [dict(), dict(num_layers=3, bidirectional=True), dict(bias=False, num_layers=2)])
def test_parameters_as_torch_nn(kw):
    native = nn.LSTM(I, HID, proj_size=P, **kw)
    layer = mr.AdamLSTM(I, HID, proj_size=P, **kw)
    assert [(n, p.shape) for n, p in native.named_parameters()] == [(n, p.shape) for n, p in layer.named_parameters()]
    assert layer._flat_weights_names == native._flat_weights_names
    assert [[w.shape for w in ws] for ws in layer.all_weights] == [[w.shape for w in ws] for ws in native.all_weights]
    assert repr(layer).startswith(repr(native).replace("LSTM(", "AdamLSTM(")[:-1])
    assert layer.output_size == P * layer.num_directions
    bound = 1 / HID**0.5  # torch.nn's initialisation, W_hr included
    assert all(p.abs().max() <= bound for p in layer.parameters())
    layer.load_state_dict(native.state_dict())
    native.load_state_dict(layer.state_dict())


def test_authors_init_with_projection():
    layer = mr.MomentumLSTM(I, HID, proj_size=P, num_layers=2, init="authors", forget_bias=-4.0)
    eye = torch.eye(HID, P)
    for sfx in ("_l0", "_l1"):
        assert getattr(layer, "weight_hr" + sfx).equal(torch.eye(P, HID))
        for block in getattr(layer, "weight_hh" + sfx).split(HID):
            assert block.equal(eye)
    native = mr.init.authors_init_(nn.LSTM(I, HID, proj_size=P))  # the same on torch.nn's module
    assert native.weight_hr_l0.equal(torch.eye(P, HID)) and native.weight_hh_l0[:HID].equal(eye)
    out, state = layer(torch.randn(4, 2, I))
    assert out.shape == (4, 2, P) and state[0].shape == (2, 2, P) and state[1].shape == (2, 2, HID)


# ---------------------------------------------------------------- against the literal reference
@pytest.mark.parametrize("kind,backend", CASES)
def test_forced_backend_matches_reference(kind, backend, ran):
    layer = lstmp(kind)
    layer.backend = backend
    x = torch.randn(9, 3, I, dtype=torch.float64, requires_grad=True)
    assert_match(layer, *run_both(layer, x))
    layer = lstmp(kind, num_layers=2, bidirectional=True)
    layer.backend = backend
    x = torch.randn(7, 4, I, dtype=torch.float64, requires_grad=True)
    assert_match(layer, *run_both(layer, x))
    if backend != "native":  # a carried momentum is not a trivial drive
        st = random_state(layer, 4, layer.scheme.state_fields)
        assert_match(layer, *run_both(layer, x, [7, 3, 5, 1], st))
        layer = lstmp(kind, num_layers=2, bias=False)
        layer.backend = backend
        x = torch.randn(6, 1, I, dtype=torch.float64, requires_grad=True)
        assert_match(layer, *run_both(layer, x, None, random_state(layer, 1, layer.scheme.state_fields)))
    assert set(ran) == {backend}


@pytest.mark.parametrize("kind", KINDS)
def test_table_choice_matches_reference_and_longer_than_a_block(kind, ran):
    layer = lstmp(kind, bidirectional=True)
    x = torch.randn(37, 4, I, dtype=torch.float64, requires_grad=True)
    st = random_state(layer, 4, layer.scheme.state_fields)
    assert_match(layer, *run_both(layer, x, [37, 16, 20, 3], st))
    assert_match(layer, *run_both(layer, x, None, None))
    expected = backends.select("gated", drive_of(kind), "cpu")
    if not backends.BACKENDS[expected].projections:  # the table's capability fallback
        replacement = backends.FALLBACK[expected][1]
        expected = replacement if isinstance(replacement, str) else replacement.get(drive_of(kind), replacement["*"])
    assert set(ran) <= {expected, "filtered_native"}  # (a carried v makes the trivial drive linear)
    assert expected in ran


@pytest.mark.parametrize("kind", ["adam", "nesterov"])
def test_backends_without_projections_are_refused_when_forced(kind):
    layer = lstmp(kind)
    x = torch.randn(5, 2, I, dtype=torch.float64)
    for name in ("compiled_loop", "graph_loop"):
        if drive_of(kind) not in backends.BACKENDS[name].drives:
            continue
        layer.backend = name
        with pytest.raises(
            ValueError, match=f"backend '{name}' cannot run an LSTM with projections .*use one of .*fused.*stepwise"
        ):
            layer(x)
    # the route of the table: the capability fallback, no branch elsewhere
    assert backends.FALLBACK["compiled_loop"][1]["*"] == backends.FALLBACK["graph_loop"][1] == "fused"
    assert not backends.FALLBACK["compiled_loop"][0](layer, x) and backends.FALLBACK["compiled_loop"][0](
        make("lstm", kind), x
    )


@pytest.mark.parametrize("kind", KINDS)
def test_learnable_hyper_parameters(kind):
    kw = {"learn_mu": True} if "mu" in mr.SCHEMES[kind].defaults else {}
    if kind != "none":
        kw["learn_epsilon"] = True
    layer = lstmp(kind, num_layers=2, **kw)
    x = torch.randn(6, 2, I, dtype=torch.float64, requires_grad=True)
    assert_match(layer, *run_both(layer, x, None, random_state(layer, 2, layer.scheme.state_fields)))


@pytest.mark.parametrize("kind", KINDS)
def test_chunked_equals_one_call(kind):
    layer = lstmp(kind, num_layers=2, bidirectional=False)
    layer.carry_momentum = True
    x = torch.randn(11, 3, I, dtype=torch.float64)
    out_full, st_full = layer(x)
    assert len(st_full) == len(layer.state_names) == 2 + len(layer.scheme.state_fields)
    outs, st = [], None
    for chunk in x.split([4, 1, 6]):
        o, st = layer(chunk, st)
        outs.append(o)
    torch.testing.assert_close(torch.cat(outs), out_full, **TOL)
    for name, a, b in zip(layer.state_names, st, st_full):
        torch.testing.assert_close(a, b, **TOL, msg=name)


@pytest.mark.parametrize("kind", KINDS)
def test_unbatched_and_batch_first(kind):
    layer = lstmp(kind, num_layers=2, bidirectional=True)
    x = torch.randn(5, I, dtype=torch.float64)
    out_u, st_u = layer(x)
    out_b, st_b = layer(x.unsqueeze(1))
    assert out_u.shape == (5, 2 * P) and st_u[0].shape == (4, P) and st_u[1].shape == (4, HID)
    torch.testing.assert_close(out_u, out_b.squeeze(1), **TOL)
    torch.testing.assert_close(st_u[0], st_b[0].squeeze(1), **TOL)
    out2, _ = layer(x, st_u)  # an unbatched state goes back in
    assert out2.shape == (5, 2 * P)
    layer.batch_first = True
    xb = torch.randn(2, 5, I, dtype=torch.float64)
    out_f, _ = layer(xb)
    layer.batch_first = False
    torch.testing.assert_close(out_f, layer(xb.transpose(0, 1))[0].transpose(0, 1), rtol=0, atol=0)


def test_state_of_the_wrong_width_is_refused():
    layer = mr.MomentumLSTM(I, HID, proj_size=P)
    x = torch.randn(4, 2, I)
    with pytest.raises(ValueError, match=r"h0 \(state h\) has shape \(1, 2, 5\), expected \(1, 2, 2\)"):
        layer(x, (torch.zeros(1, 2, HID), torch.zeros(1, 2, HID)))
    with pytest.raises(ValueError, match=r"c0 \(state c\) has shape \(1, 2, 2\), expected \(1, 2, 5\)"):
        layer(x, (torch.zeros(1, 2, P), torch.zeros(1, 2, P)))


@pytest.mark.parametrize(
    "kind,backend",
    [
        (kind, backend)
        for kind in KINDS
        for backend in (None, "fused")
        if backend is None or drive_of(kind) in ("trivial", "linear")
    ],
)
def test_gradcheck(kind, backend):
    # the table's choice (fused for the normalized and lookahead drives), and fused for the others
    layer = make("lstm", kind, input_size=2, hidden=3, proj_size=2, bidirectional=True)
    layer.backend = backend
    x = torch.randn(5, 2, 2, dtype=torch.float64, requires_grad=True)
    st = random_state(layer, 2, layer.scheme.state_fields)
    assert gradcheck_packed(layer, x, st, fast_mode=True)


# ---------------------------------------------------------------- torch.nn at mu = 0, epsilon = 1
CONFIGS = [dict(), dict(num_layers=2, bidirectional=True), dict(bias=False, batch_first=True, num_layers=2)]


@pytest.mark.parametrize("kind,cfg", list(itertools.product(["none", "heavy_ball"], range(3))))
def test_trivial_momentum_equals_torch_nn(kind, cfg):
    kw = CONFIGS[cfg]
    torch.manual_seed(0)
    native = nn.LSTM(I, HID, proj_size=P, dtype=torch.float64, **kw)
    hp = {"mu": 0.0, "epsilon": 1.0} if kind == "heavy_ball" else {}
    layer = mr.from_native(native, kind, **hp)
    assert layer.proj_size == P
    bf = bool(kw.get("batch_first"))
    x = torch.randn(6, 4, I, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(layer.num_layers * layer.num_directions, 6 if bf else 4, P, dtype=torch.float64)
    c0 = torch.randn(layer.num_layers * layer.num_directions, 6 if bf else 4, HID, dtype=torch.float64)
    for state in (None, (h0, c0)):
        out_n, (h_n, c_n) = native(x, state)
        for backend in (None, "fused", "stepwise"):
            layer.backend = backend
            out_m, st_m = layer(x, state)
            tol = dict(rtol=0, atol=0) if backend is None else dict(rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(out_m, out_n, **tol)
            torch.testing.assert_close(st_m[0], h_n, **tol)
            torch.testing.assert_close(st_m[1], c_n, **tol)
            g_n = torch.autograd.grad(out_n.sum() + c_n.sum(), [x, *native.parameters()], retain_graph=True)
            g_m = torch.autograd.grad(out_m.sum() + st_m[1].sum(), [x, *layer.parameters()])
            for a, b in zip(g_n, g_m):
                torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    layer.backend = None
    # packed, variable lengths
    packed = pack_padded_sequence(
        x.detach(), [4, 1, 3, 4, 2, 2] if bf else [6, 1, 3, 4], batch_first=bf, enforce_sorted=False
    )
    pn, (hn, cn) = native(packed)
    pm, sm = layer(packed)
    torch.testing.assert_close(pm.data, pn.data, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(sm[0], hn, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(sm[1], cn, rtol=1e-13, atol=1e-15)


def test_weights_both_ways_and_to_native():
    layer = mr.MomentumLSTM(I, HID, proj_size=P, num_layers=2, bidirectional=True, mu=0.0, epsilon=1.0)
    native = mr.to_native(layer)
    assert isinstance(native, nn.LSTM) and native.proj_size == P
    x = torch.randn(5, 2, I)
    assert torch.equal(native(x)[0], layer(x)[0])
    other = nn.LSTM(I, HID, proj_size=P, num_layers=2, bidirectional=True)
    layer.load_state_dict(other.state_dict())
    assert torch.equal(other(x)[0], layer(x)[0])
    other.load_state_dict(mr.AdamLSTM(I, HID, proj_size=P, num_layers=2, bidirectional=True).state_dict())
    with pytest.raises(ValueError, match="only supported for LSTM"):
        mr.from_native(nn.GRU(I, HID, 1, True, False, 0.0, False, 2))  # torch.nn builds this one


# ---------------------------------------------------------------- the fused operator, PyTorch 2
@pytest.mark.parametrize("kind", ["given", "adam", "nesterov"])
def test_fused_operator_gradgradcheck_with_projection(kind):
    g = torch.Generator().manual_seed(0)
    Tn, Bn, In, Hn, Pn = 3, 2, 2, 3, 2

    def r(*shape, scale=0.5):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).requires_grad_(True)

    x, w_ih, b_ih, bias_e, h0, w_hh = r(Tn, Bn, In), r(4 * Hn, In), r(4 * Hn), r(4 * Hn), r(Bn, Pn), r(4 * Hn, Pn)
    c0, w_hr = r(Bn, Hn), r(Pn, Hn)
    kw = dict(c0=c0, w_hr=w_hr)
    tensors = [h0, w_hh, c0, w_hr]
    if kind == "given":
        kw["e"] = r(Tn, Bn, 4 * Hn)
        tensors.append(kw["e"])
    else:
        kw.update(x=x, w_ih=w_ih, b_ih=b_ih, bias_e=bias_e)
        tensors += [x, w_ih, b_ih, bias_e]
    if kind == "nesterov":
        mu_k = torch.tensor([0.0, 0.25, 0.4], dtype=torch.float64).view(Tn, 1, 1)
        kw.update(alpha=1 + mu_k, beta=mu_k, p0=r(Bn, 4 * Hn))
        tensors.append(kw["p0"])
    spec = DriveSpec(kind, mu=0.5, epsilon=0.7, beta=0.3) if kind != "given" else None

    def fn(*_):
        return tuple(t for t in ops.fused_recurrence("lstm", h0, w_hh, spec=spec, **kw) if t is not None)

    assert torch.autograd.gradcheck(lambda *ts: fn(), tensors)
    assert torch.autograd.gradgradcheck(lambda *ts: fn(), tensors)


@pytest.mark.filterwarnings(
    "ignore::torch.jit.TracerWarning", "ignore::UserWarning", "ignore:`torch.jit:DeprecationWarning"
)
@pytest.mark.parametrize("name", ["LSTM", "MomentumLSTM", "AdamLSTM", "NesterovLSTM"])
def test_compile_export_and_trace_match_eager(name):
    torch._dynamo.reset()
    torch.manual_seed(0)
    layer = mr.layer_class(name)(I, HID, proj_size=P, num_layers=2, bidirectional=True, dtype=torch.float64)
    x = torch.randn(5, 2, I, dtype=torch.float64)

    def evaluate(fn, params):
        xx = x.clone().requires_grad_(True)
        out, state = fn(xx)
        h, c = state[0], state[1]
        loss = (out * out.detach().cos()).sum() + h.sum() + c.sum()
        return (out, h, c, *torch.autograd.grad(loss, [xx, *params]))

    params = list(layer.parameters())
    ref = evaluate(layer, params)
    compiled = evaluate(torch.compile(layer, backend="aot_eager", fullgraph=True), params)
    # (other values than the example's: nothing data-dependent is baked in; the exported module
    # holds its own copies of the parameters)
    example = torch.randn(5, 2, I, dtype=torch.float64)
    exported = evaluate(torch.export.export(layer, (example,)).module(), [])
    traced = evaluate(torch.jit.trace(layer, (example,), check_trace=False), params)
    for got in (compiled, exported, traced):
        for a, b in zip(got, ref):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    torch._dynamo.reset()
