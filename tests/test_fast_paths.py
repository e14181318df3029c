"""The compiled CPU time loop (backend ``compiled_loop``: ``csrc/gated_loop.cpp`` behind the
``momentumrnn::gated_loop`` operator) forced on every layer it runs, against the literal reference in
float64: every host x {Adam, RMSProp, Nesterov, heavy ball, scheduled restart}, stacked,
bidirectional, packed with variable lengths, initial state, chunked, several blocks, gradcheck,
double backward, subnormal flushing, NaN, inference mode, the fallbacks, and the operator's
registrations (``torch.library.opcheck``).

(Every other test of the suite runs the compiled loop too where the dispatch table picks it.)"""

import copy
import itertools
import warnings

import pytest
import torch
from states import check_state, momentum_of, parts_of
from test_layers import HOSTS, TOL, assert_match, gradcheck_packed, make, random_state, run_both, to_layer_state
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import momentumrnn as mr
from momentumrnn import backends
from momentumrnn.backends import _build, compiled, loop_ops
from momentumrnn.schemes import MomentumState

KINDS = ["adam", "rmsprop", "nesterov", "heavy_ball", "restart"]
CASES = list(itertools.product(HOSTS, KINDS))

pytestmark = pytest.mark.skipif(_build.load() is None, reason=f"no compiled loop: {_build.status()['reason']}")


@pytest.fixture
def calls(monkeypatch):
    """Counts calls into the compiled operator (so that no test passes on the fallback)."""
    n = [0]
    op = compiled.call_gated_loop

    def counting(*a, **k):
        n[0] += 1
        return op(*a, **k)

    monkeypatch.setattr(compiled, "call_gated_loop", counting)
    return n


def small_blocks(monkeypatch, k=3, rows=20):
    """Blocks of k steps, and one recurrent weight-gradient GEMM per ``rows`` rows (several blocks);
    the normalized drives' states recomputed from each block's checkpoint (not kept step by step)."""
    monkeypatch.setattr(compiled, "block_steps", lambda T, B, G, e: k)
    monkeypatch.setattr(loop_ops, "WEIGHT_ROWS", rows)
    monkeypatch.setattr(compiled, "_KEEP_STATES_BYTES", 0)


@pytest.mark.parametrize("host,kind", CASES)
def test_matches_reference(host, kind, calls, monkeypatch):
    layer = make(host, kind)
    layer.backend = "compiled_loop"
    x = torch.randn(9, 3, 3, dtype=torch.float64, requires_grad=True)
    assert_match(layer, *run_both(layer, x))
    small_blocks(monkeypatch)  # checkpoints, carries and last steps across block boundaries
    monkeypatch.setattr(compiled, "_KEEP_U_INPUTS", 0)  # the backward reads the kept u
    layer = make(host, kind, num_layers=2, bidirectional=True)
    layer.backend = "compiled_loop"
    x = torch.randn(10, 4, 3, dtype=torch.float64, requires_grad=True)
    st = random_state(layer, 4, layer.scheme.state_fields)
    assert_match(layer, *run_both(layer, x, [10, 3, 6, 1], st))
    assert_match(layer, *run_both(layer, x, None, st))
    assert calls[0] == 1 + 2 * 4


@pytest.mark.parametrize("host,kind", CASES)
def test_no_bias_batch_one_and_odd_widths(host, kind, calls, monkeypatch):
    small_blocks(monkeypatch, 2, rows=3)
    for hidden in (1, 5, 17):  # vector tails of every length
        layer = make(host, kind, hidden=hidden, bias=False, num_layers=2)
        layer.backend = "compiled_loop"
        x = torch.randn(5, 1, 3, dtype=torch.float64, requires_grad=True)
        assert_match(layer, *run_both(layer, x, None, random_state(layer, 1, layer.scheme.state_fields)))
    assert calls[0] == 6


@pytest.mark.parametrize("host,kind", CASES)
def test_one_input_feature(host, kind, calls, monkeypatch):
    # pixel sequences: u = x w_ih + b_ih computed where the step reads it (no input pass), both passes
    small_blocks(monkeypatch, 2, rows=3)
    for bias in (True, False):
        layer = make(host, kind, input_size=1, hidden=17, bias=bias)
        layer.backend = "compiled_loop"
        x = torch.randn(7, 3, 1, dtype=torch.float64, requires_grad=True)
        assert_match(layer, *run_both(layer, x, [7, 2, 5], random_state(layer, 3, layer.scheme.state_fields)))
    # one thread, and two: the bias and input-weight gradients summed per thread of a team of rows
    # (hidden 40, batch 100) and of panels (hidden 300), then combined; with x requiring a gradient
    # (du kept for it) and without (du only summed); float32 against float64
    threads = torch.get_num_threads()
    try:
        for nthreads, need_x, (hidden, batch) in itertools.product((1, 2), (True, False), ((40, 100), (300, 6))):
            torch.set_num_threads(nthreads)
            layer = make(host, kind, input_size=1, hidden=hidden)
            x = torch.randn(30, batch, 1, dtype=torch.float64)
            lengths = [30, *torch.randint(1, 31, (batch - 1,)).tolist()]
            res = {}
            for backend in ("compiled_loop", "fused"):
                layer.backend = backend
                xx = x.clone().requires_grad_(need_x)
                out = pad_packed_sequence(layer(pack_padded_sequence(xx, lengths, enforce_sorted=False))[0])[0]
                wrt = [xx] * need_x + list(layer.parameters())
                res[backend] = (out, *torch.autograd.grad(out.sin().sum(), wrt))
            for a, b in zip(res["compiled_loop"], res["fused"]):
                torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    finally:
        torch.set_num_threads(threads)
    _float32_against_float64(
        make(host, kind, input_size=1, hidden=128),
        torch.randn(7, 6, 1, dtype=torch.float64),
        [7, 2, 5, 7, 1, 4],
        threads=2,
    )
    assert calls[0] == 12


@pytest.mark.parametrize("kind", KINDS)
def test_relu_rnn(kind, calls):
    layer = make("rnn", kind, nonlinearity="relu", num_layers=2)
    layer.backend = "compiled_loop"
    x = torch.randn(8, 3, 3, dtype=torch.float64, requires_grad=True)
    assert_match(layer, *run_both(layer, x, [8, 2, 5], random_state(layer, 3, layer.scheme.state_fields)))
    assert calls[0] == 2


@pytest.mark.parametrize("host,kind", CASES)
def test_chunked_equals_one_call(host, kind, calls, monkeypatch):
    small_blocks(monkeypatch)
    layer = make(host, kind, num_layers=2)
    layer.backend = "compiled_loop"
    x = torch.randn(11, 3, 3, dtype=torch.float64)
    out_full, st_full = layer(x)
    outs, st = [], None
    for chunk in x.split([4, 1, 6]):
        o, st = layer(chunk, st)
        outs.append(o)
    torch.testing.assert_close(torch.cat(outs), out_full, **TOL)
    parts, parts_full = check_state(layer, st), check_state(layer, st_full)
    assert list(parts) == list(parts_full) == list(layer.state_names)
    for name in parts:  # h, c and every momentum field
        torch.testing.assert_close(parts[name], parts_full[name], **TOL, msg=name)


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("kind", ["adam", "rmsprop"])
def test_kept_states_equal_recomputed_ones(host, kind, calls, monkeypatch):
    """Every step's m, v kept by the forward (small sizes) or recomputed by the backward from each
    block's checkpoint: the same arithmetic, bit-identical outputs, states and gradients."""
    monkeypatch.setattr(compiled, "block_steps", lambda T, B, G, e: 3)
    layer = make(host, kind, num_layers=2, carry_momentum=True)
    layer.backend = "compiled_loop"
    x = torch.randn(8, 3, 3, dtype=torch.float64)
    st = to_layer_state(layer, random_state(layer, 3, layer.scheme.state_fields))

    def run(kept_bytes):
        monkeypatch.setattr(compiled, "_KEEP_STATES_BYTES", kept_bytes)
        xx = x.clone().requires_grad_()
        out, state = layer(pack_padded_sequence(xx, [8, 3, 6], enforce_sorted=False), st)
        out = pad_packed_sequence(out)[0]
        loss = out.square().sum() + sum(t.square().sum() for t in state)
        return [out, *state, *torch.autograd.grad(loss, [xx, *layer.parameters()])]

    for a, b in zip(run(1 << 30), run(0)):
        assert torch.equal(a, b)
    assert calls[0] == 4


@pytest.mark.parametrize("host,kind", CASES)
def test_gradcheck(host, kind, calls, monkeypatch):
    small_blocks(monkeypatch, 2)
    monkeypatch.setattr(compiled, "_KEEP_U_INPUTS", 0)
    layer = make(host, kind, input_size=2, hidden=3, bidirectional=True)
    layer.backend = "compiled_loop"
    x = torch.randn(5, 2, 2, dtype=torch.float64, requires_grad=True)
    st = random_state(layer, 2, layer.scheme.state_fields)
    assert gradcheck_packed(layer, x, st)
    assert calls[0] > 0


@pytest.mark.parametrize("host,kind", CASES)
def test_double_backward_matches_the_stepwise_backend(host, kind, calls):
    def second(backend):
        layer = make(host, kind)
        layer.backend = backend
        x = torch.randn(6, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3)).requires_grad_()
        out, state = layer(x)
        (g,) = torch.autograd.grad(out.square().sum() + parts_of(layer, state)["h"].sum(), x, create_graph=True)
        return torch.autograd.grad(g.square().sum(), [x, *layer.parameters()])

    for a, b in zip(second("compiled_loop"), second("stepwise")):
        torch.testing.assert_close(a, b, **TOL)
    assert calls[0] == 1


@pytest.mark.parametrize("host,kind", CASES)
def test_larger_sizes_threads_and_float32(host, kind, calls):
    # Rows split over threads (B * G above the parallel grain), several blocks, float32 against float64.
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        layer = make(host, kind, input_size=5, hidden=40)
        x = torch.randn(30, 100, 5, dtype=torch.float64, requires_grad=True)
        res = {}
        for backend in ("compiled_loop", "fused"):
            layer.backend = backend
            out, st = layer(x)
            h = parts_of(layer, st)["h"]
            loss = out.sin().sum() + h.sum()
            res[backend] = (out, h, *torch.autograd.grad(loss, [x, *layer.parameters()]))
        for a, b in zip(res["compiled_loop"], res["fused"]):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
        layer32 = make(host, kind, input_size=5, hidden=40).float()
        layer32.backend = "compiled_loop"
        out32, _ = layer32(x.detach().float())
        torch.testing.assert_close(out32.double(), res["fused"][0], rtol=1e-4, atol=1e-4)
    finally:
        torch.set_num_threads(threads)
    assert calls[0] == 2


def _float32_against_float64(layer, x, lengths, threads):
    """Output and gradients of ``layer`` in float32 against the same layer in float64 (both on the
    compiled loop: float32 runs oneDNN's brgemm per panel of hidden units, float64 ATen's mm)."""

    def run(lay, xx):
        xx = xx.detach().requires_grad_()
        out, _ = pad_packed_sequence(
            lay(pack_padded_sequence(xx, lengths, enforce_sorted=False))[0], total_length=xx.shape[0]
        )
        weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
        return (out, *torch.autograd.grad((out * weights.to(out.dtype)).sum(), [xx, *lay.parameters()]))

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        layer.backend = "compiled_loop"
        expected = run(layer, x)
        layer32 = copy.deepcopy(layer).float()
        got = run(layer32, x.float())
    finally:
        torch.set_num_threads(previous)
    for a, b in zip(got, expected):  # float32 rounding, amplified where RMSProp's m is near 0: ~2e-4 of the
        # largest value (the same with the literal step loop in float32); a misplaced panel or chunk: O(1)
        torch.testing.assert_close(a.double(), b, rtol=0, atol=2e-3 * b.abs().max().item())


# hidden 300, two threads: several panels of units and a narrower last one, split over the threads;
# the backward's GEMM depth (gates x 300) in two chunks. Hidden 128, two threads: the batch split
# by rows (three each), every panel per thread. Hidden 200, one thread: the forward's wide panels
# (128 + 72 units). Sequences of every length, padding.
@pytest.mark.parametrize("hidden,threads", [(300, 2), (128, 2), (200, 1)])
@pytest.mark.parametrize("host,kind", CASES)
def test_float32_panels_threads_padding_and_gemm_depth_chunks(host, kind, hidden, threads, calls):
    layer = make(host, kind, input_size=5, hidden=hidden)
    x = torch.randn(7, 6, 5, dtype=torch.float64)
    _float32_against_float64(layer, x, [7, 2, 5, 7, 1, 4], threads=threads)
    assert calls[0] == 2


def test_float32_forward_gemm_depth_chunks(calls):
    # hidden 1030: the forward's GEMM depth (H) in two chunks as well
    layer = make("lstm", "adam", input_size=2, hidden=1030)
    _float32_against_float64(layer, torch.randn(3, 2, 2, dtype=torch.float64), [3, 2], threads=1)
    assert calls[0] == 2


@pytest.mark.parametrize("kind,fields", [("adam", {"v", "m"}), ("rmsprop", {"m"}), ("heavy_ball", {"v"})])
def test_states_are_flushed_below_the_normal_range(kind, fields, calls):
    tiny = torch.finfo(torch.float32).tiny
    extra = {"beta": 0.1} if kind != "heavy_ball" else {}
    layer = mr.build_layer("lstm", kind, 1, 8, init="authors", forget_bias=0.0, carry_momentum=True, **extra)
    x = torch.zeros(600, 2, 1)
    x[:5] = 1.0
    _, state = layer(x)
    mom = momentum_of(layer, state)
    assert set(mom) == fields
    for t in mom.values():
        assert bool(((t == 0) | (t.abs() >= tiny)).all())
        assert bool((t == 0).all())  # beta^595 and mu^595 are far below the normal range
    assert calls[0] == 1


@pytest.mark.parametrize("host,kind", CASES)
def test_nan_flows_forward_only(host, kind, calls):
    layer = make(host, kind)
    x = torch.randn(8, 2, 3, dtype=torch.float64)
    x[4, 0, 1] = float("nan")
    out, _ = layer(x)
    assert bool(torch.isfinite(out[:4]).all()) and bool(torch.isfinite(out[:, 1]).all())
    assert bool(torch.isnan(out[4:, 0]).any())


def test_fallback_when_the_loop_cannot_be_built(monkeypatch, calls):
    layer = make("lstm", "adam", num_layers=2)
    x = torch.randn(6, 3, 3, dtype=torch.float64)
    expected = layer(x)[0]
    monkeypatch.setattr(compiled._build, "load", lambda: None)
    assert not compiled.applies(layer, x, (0.5, 0.8))
    torch.testing.assert_close(layer(x)[0], expected, **TOL)  # the Python loop, same numbers
    assert calls[0] == 2


@pytest.mark.parametrize("kind", ["adam", "heavy_ball"])
def test_inference_mode_then_training(kind, calls):
    """The loop keeps its scratch memory between calls (per thread): memory it first takes under
    torch.inference_mode() serves a training call after it (and the reverse), with the same results.
    A change of dtype makes the loop take its scratch memory afresh: here inside inference mode."""
    layer = make("lstm", kind)
    layer.backend = "compiled_loop"
    x = torch.randn(6, 3, 3, dtype=torch.float64, requires_grad=True)
    assert_match(layer, *run_both(layer, x))  # float64 scratch, taken outside inference mode
    layer32, x32 = copy.deepcopy(layer).float(), x.detach().float()
    with torch.inference_mode():
        first = layer32(x32)[0]  # float32 scratch, taken inside
    out = layer32(x32.requires_grad_())[0]  # written outside inference mode
    assert all(g is not None for g in torch.autograd.grad(out.square().sum(), [x32, *layer32.parameters()]))
    assert torch.equal(out.detach(), first)
    lib = run_both(layer, x)  # float64 again: taken afresh outside, used inside next
    assert_match(layer, *lib)
    with torch.inference_mode():
        assert torch.equal(layer(x.detach())[0], lib[0][0].detach())
    assert calls[0] == 5


def test_the_linear_drive_falls_back_to_the_native_kernel(monkeypatch, calls):
    """Where the compiled loop cannot run a heavy-ball layer (a learned mu; no compiler) the
    table's fallback gives it the native kernel on the filtered input, not the Python loop."""
    x = torch.randn(6, 3, 3, dtype=torch.float64, requires_grad=True)

    def chosen(layer, x=x):
        return backends.choose(layer, x, MomentumState(), layer.hyper_parameters())

    assert chosen(make("lstm", "heavy_ball")) == chosen(make("gru", "restart")) == "compiled_loop"
    # two threads: a large batch splits by rows (the C++ loop at hidden <= 128); a step shared by
    # panels of units (hidden > 256, or fewer than 4 rows), large enough for a team: the native
    # kernel's own threading
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        big = torch.randn(3, 2048, 3, dtype=torch.float64)
        assert chosen(make("lstm", "heavy_ball"), big) == chosen(make("rnn", "restart"), big) == "compiled_loop"
        wide, few = make("lstm", "heavy_ball", hidden=300), torch.randn(3, 3, 3, dtype=torch.float64)
        assert compiled.team(wide, few) == compiled.team(wide, big) == "panels"
        assert compiled.team(make("lstm", "heavy_ball", hidden=256), big) == "rows"
        assert compiled.team(make("lstm", "heavy_ball", hidden=64), big[:1, :4]) == "alone"
        # rows at hidden 256: the native kernel was faster for the linear drive
        assert chosen(make("lstm", "heavy_ball", hidden=256), big) == "filtered_native"
        assert chosen(wide, few) == chosen(make("rnn", "restart", hidden=300), few) == "filtered_native"
        assert chosen(make("lstm", "adam", hidden=300), few) == "compiled_loop"
        torch.set_num_threads(1)
        assert chosen(wide, few) == "compiled_loop"
    finally:
        torch.set_num_threads(threads)
    layer = make("lstm", "heavy_ball", learn_mu=True)
    assert chosen(layer) == "filtered_native"
    assert_match(layer, *run_both(layer, x))
    monkeypatch.setattr(compiled._build, "load", lambda: None)
    for kind, name in (("heavy_ball", "filtered_native"), ("restart", "filtered_native"), ("adam", "fused")):
        assert chosen(make("rnn", kind)) == name
    assert calls[0] == 0


def test_build_failure_warns_once_and_the_opt_out_is_silent(monkeypatch):
    monkeypatch.setattr(_build, "_state", {"tried": False, "ops": None, "reason": "", "path": None})
    monkeypatch.setattr(_build, "_compiler", lambda: None)
    with pytest.warns(RuntimeWarning, match="no C.. compiler found"):
        assert _build.load() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _build.load() is None  # once only
    monkeypatch.setattr(_build, "_state", {"tried": False, "ops": None, "reason": "", "path": None})
    monkeypatch.setenv("MOMENTUMRNN_NO_EXTENSION", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _build.load() is None
    assert _build.status()["reason"].startswith("disabled")


def test_learnable_and_empty_batch_use_the_python_loop(calls):
    layer = make("gru", "adam", learn_mu=True)
    layer.backend = "compiled_loop"
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    assert_match(layer, *run_both(layer, x))
    layer = make("lstm", "nesterov")
    layer.backend = "compiled_loop"
    out, state = layer(torch.randn(5, 0, 3, dtype=torch.float64))
    assert out.shape == (5, 0, 4) and momentum_of(layer, state)["p"].shape == (1, 0, 16)
    assert calls[0] == 0


@pytest.mark.parametrize(
    "host,mode,scheduled", [(2, 0, False), (3, 1, True), (0, 0, False), (2, 2, False), (3, 2, True)]
)
def test_operator_registration(host, mode, scheduled):
    torch.manual_seed(0)
    T, B, I, H = 4, 2, 3, 5
    G = {0: 1, 2: 4, 3: 3}[host] * H
    d = dict(dtype=torch.float64, requires_grad=True)
    x, w_ih, b_ih = torch.randn(T, B, I, **d), torch.randn(G, I, **d), torch.randn(G, **d)
    bias_e, w_hh, h0 = torch.randn(G, **d), torch.randn(G, H, **d), torch.randn(B, H, **d)
    b_hn = torch.randn(H, **d) if host == 3 else None
    c0 = torch.randn(B, H, **d) if host == 2 else None
    alpha = beta_k = None
    if mode == 1:
        beta_k = torch.rand(T, 1, dtype=torch.float64)
        alpha = 1 + beta_k
    elif mode == 2 and scheduled:  # the linear drive's mu_t
        alpha = torch.rand(T, 1, dtype=torch.float64)
    args = (
        x,
        w_ih,
        b_ih,
        bias_e,
        w_hh,
        b_hn,
        h0,
        c0,
        None,
        None,
        None,
        alpha,
        beta_k,
        torch.tensor([3, 1]),
        host,
        mode,
        True,
        0.5,
        0.7,
        0.3,
        2,
        host == 2,
        host == 0,  # every step's states kept
    )
    torch.library.opcheck(
        loop_ops.gated_loop, args, test_utils=("test_schema", "test_autograd_registration", "test_faketensor")
    )


def test_instruction_set_from_the_running_cpu_is_in_the_flags_and_the_cache_key(monkeypatch):
    """The build's vector instructions follow the capability torch detects on the CPU the process
    runs on, over the x86-64 baseline (a compiler's own default -march cannot add others), and each
    capability gets its own cached library (machines sharing a cache each get one that runs)."""
    keys = {}
    for cap in ("AVX512", "AVX2", "DEFAULT"):
        monkeypatch.setattr(_build, "_capability", lambda cap=cap: cap)
        flags = _build._flags("c++20")
        assert ("-mavx512f" in flags) == (cap == "AVX512") and ("-mavx2" in flags) == (cap != "DEFAULT")
        if _build.platform.machine().lower() in ("x86_64", "amd64"):
            assert flags.index("-march=x86-64") < min(
                [flags.index(f) for f in flags if f.startswith("-mavx")], default=len(flags)
            )
        keys[cap] = _build._cache_key("c++", "g++ 12")
    assert len(set(keys.values())) == 3


def _float_range(lo: float, hi: float, stride: int) -> torch.Tensor:
    """Every ``stride``-th float32 from ``lo`` to ``hi`` (positive), by bit pattern."""
    a, b = (torch.tensor([v], dtype=torch.float32).view(torch.int32).item() for v in (lo, hi))
    return torch.arange(a, b, stride, dtype=torch.int64).to(torch.int32).view(torch.float32)


def test_float32_tanh_within_one_unit_in_the_last_place():
    """The loop's float tanh (an odd polynomial below 0.75, a compensated (1 - z) / (1 + z) above it)
    is within one unit in the last place of tanh, as ATen's (Sleef's) is; float64 runs Sleef's."""
    tanh = _build.load().tanh
    x = torch.cat([_float_range(1e-45, 3.4e38, 2003), _float_range(0.5, 1.5, 13)])
    x = torch.cat([x, -x])
    exact = torch.tanh(x.double())
    e32 = exact.float().abs()
    ulp = (torch.nextafter(e32, torch.tensor(float("inf"))) - e32).double()
    err = ((tanh(x).double() - exact).abs() / ulp).max().item()
    fma = _build.status()["capability"] in ("AVX2", "AVX512")  # without FMA the compensation is inexact
    assert err <= (1.0 if fma else 2.0), err
    special = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan"), 1e-45, -3e-39, 20.0, -9.5])
    got = tanh(special)
    torch.testing.assert_close(got, torch.tanh(special), rtol=0, atol=0, equal_nan=True)
    assert torch.signbit(got[1]) and not torch.signbit(got[0])
    xd = torch.linspace(-6, 6, 1001, dtype=torch.float64)
    torch.testing.assert_close(tanh(xd), torch.tanh(xd), rtol=2e-16, atol=0)


def test_float32_inv_sqrt_within_one_unit_in_the_last_place():
    """The normalized drives' backward takes 1 / sqrt(m + 1e-16) in float from the CPU's reciprocal
    square root estimate and Newton steps (AVX-512: one, AVX2: two): within 1.05 units in the last
    place of the exact value over the drives' whole range (measured: 1.04 / 1.00); float64 (and
    float without AVX2) divides."""
    inv_sqrt = _build.load().inv_sqrt
    x = torch.cat([_float_range(1e-16, 3.4e38, 211), _float_range(0.5, 2.0, 7)])
    exact = 1 / torch.sqrt(x.double())
    e32 = exact.float()
    ulp = (torch.nextafter(e32, torch.tensor(float("inf"))) - e32).double()
    err = ((inv_sqrt(x).double() - exact).abs() / ulp).max().item()
    assert err <= 1.05, err
    special = torch.tensor([float("inf"), float("nan")])  # m overflowed: the drive is 0 (NaN stays NaN)
    torch.testing.assert_close(inv_sqrt(special), torch.tensor([0.0, float("nan")]), rtol=0, atol=0, equal_nan=True)
    xd = torch.rand(1001, dtype=torch.float64) * 100 + 1e-16
    assert torch.equal(inv_sqrt(xd), torch.rsqrt(xd))


def test_eager_calls_skip_the_custom_operator_layer(monkeypatch):
    """In eager mode the kernel body runs directly (ops.invoke); traced, the registered operator."""
    from momentumrnn.backends import ops

    counted = []
    body = ops._BODIES[loop_ops.gated_loop]
    monkeypatch.setitem(ops._BODIES, loop_ops.gated_loop, lambda *a: counted.append(1) or body(*a))
    layer = mr.build_layer("lstm", "adam", 3, 4)
    layer.backend = "compiled_loop"
    x = torch.randn(5, 2, 3)
    expected = layer(x)[0]
    assert counted == [1]

    class OutputOnly(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = layer

        def forward(self, t):
            return self.layer(t)[0]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(OutputOnly(), (x,), check_trace=False)
    assert counted == [1]
    torch.testing.assert_close(traced(x), expected, rtol=0, atol=0)
