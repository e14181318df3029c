"""Every layer (host x scheme) against the literal reference (tests/reference.py), in float64: outputs, final
states (momentum included: layers built with ``carry_momentum=True``) and gradients of the input, every
parameter and the initial state; and the default layers' torch.nn state contract (momentum from zero)."""

import itertools

import pytest
import torch
from reference import reference_forward
from states import check_state, momentum_of, parts_of, to_state
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import momentumrnn as mr

HOSTS = ["rnn", "lstm", "gru"]
KINDS = ["none", "heavy_ball", "adam", "rmsprop", "restart", "nesterov"]
TOL = dict(rtol=1e-10, atol=1e-10)

# Hyper-parameters away from the defaults, so that nothing passes by coincidence.
HP = {
    "none": {},
    "heavy_ball": {"mu": 0.7, "epsilon": 0.4},
    "adam": {"mu": 0.5, "epsilon": 0.8, "beta": 0.3},
    "rmsprop": {"epsilon": 0.7, "beta": 0.6},
    "restart": {"epsilon": 0.9, "restart": 3},
    "nesterov": {"epsilon": 0.6, "restart": 3},
}


def make(host, kind, input_size=3, hidden=4, seed=0, **kw):
    """A float64 layer; it carries its momentum (``carry_momentum=True``) unless told otherwise, so
    that the momentum state is compared and resumed."""
    kw.setdefault("carry_momentum", True)
    torch.manual_seed(seed)
    layer = mr.build_layer(host, kind, input_size, hidden, dtype=torch.float64, **HP[kind], **kw)
    with torch.no_grad():  # larger weights than the default init: exercise the nonlinearities
        for name, p in layer.named_parameters():
            if name.startswith(("weight", "bias")):
                p.mul_(2.0)
    return layer


def random_state(layer, B, fields, with_step=True, seed=1):
    g = torch.Generator().manual_seed(seed)
    LD = layer.num_layers * layer.num_directions
    H = layer.hidden_size
    GH = mr.GATES[layer.host] * H
    H_out = getattr(layer, "proj_size", 0) or H  # h's width (an LSTM's proj_size)
    st = {"h": torch.randn(LD, B, H_out, generator=g, dtype=torch.float64) * 0.5}
    if layer.host == "lstm":
        st["c"] = torch.randn(LD, B, H, generator=g, dtype=torch.float64) * 0.5
    for f in fields:
        if f == "step":
            if with_step:
                st["step"] = torch.randint(0, layer.scheme.restart + 1, (LD, B), generator=g)
        elif f == "m":
            st["m"] = torch.rand(LD, B, GH, generator=g, dtype=torch.float64) + 0.1
        else:
            st[f] = torch.randn(LD, B, GH, generator=g, dtype=torch.float64) * 0.5
    for v in st.values():
        if v.is_floating_point():
            v.requires_grad_(True)
    return st


def to_layer_state(layer, st):
    """The state ``layer`` takes from a dict of ``random_state`` (every entry is used: a momentum
    field needs a layer built with ``carry_momentum=True``)."""
    if st is None:
        return None
    assert set(st) <= set(layer.state_names), (sorted(st), layer.state_names)
    return to_state(layer, st)


def hidden_part(layer, st):
    """The ``torch.nn`` part (``h``, ``c``) of a dict of ``random_state``."""
    return None if st is None else {k: v for k, v in st.items() if k in ("h", "c")}


def gradcheck_packed(layer, x, st, lengths=(5, 3), fast_mode=False):
    """``gradcheck`` of a layer on a packed batch with an initial state, through
    ``torch.func.functional_call``: inputs, the state tensors that need a gradient and every
    parameter; outputs, the padded output and every floating tensor of the state (``h``, ``c``, the
    momentum fields)."""
    names = [k for k, v in st.items() if v.requires_grad]
    pnames = [n for n, _ in layer.named_parameters()]

    def f(x, *tensors):
        s = dict(st)
        s.update(zip(names, tensors[: len(names)]))
        packed = pack_padded_sequence(x, list(lengths), enforce_sorted=False)
        out, state = torch.func.functional_call(
            layer, dict(zip(pnames, tensors[len(names) :])), (packed, to_layer_state(layer, s))
        )
        return (pad_packed_sequence(out)[0], *[t for t in parts_of(layer, state).values() if t.is_floating_point()])

    return torch.autograd.gradcheck(
        f, (x, *[st[n] for n in names], *layer.parameters()), eps=1e-6, atol=1e-7, fast_mode=fast_mode
    )


def run_both(layer, x, lengths=None, st=None):
    """Forward + backward of the library and of the reference with the same random loss. A layer
    with ``carry_momentum=True`` returns (and the loss includes) the momentum fields; a default
    layer returns torch.nn's state (``st`` then holds ``h`` / ``c`` only: momentum from zero)."""
    fields = layer.scheme.state_fields if layer.carry_momentum else ()
    inputs = [x] + list(layer.parameters()) + [v for v in (st or {}).values() if v.requires_grad]

    def loss_of(out, h, c, mom):
        g = torch.Generator().manual_seed(7)
        terms = [out, h] + ([c] if c is not None else []) + [mom[f] for f in fields if f != "step"]
        return sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum() for t in terms)

    # library
    if lengths is not None:
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        out_p, state = layer(packed, to_layer_state(layer, st))
        out, out_lengths = pad_packed_sequence(out_p, total_length=x.shape[0])
        assert out_lengths.tolist() == list(lengths)
    else:
        out, state = layer(x, to_layer_state(layer, st))
    parts = check_state(layer, state)
    mom = momentum_of(layer, state)
    assert tuple(mom) == fields, (tuple(mom), fields)
    lib = (out, parts["h"], parts.get("c"), mom)
    lib_grads = torch.autograd.grad(loss_of(*lib), inputs, allow_unused=True)
    # reference
    ref = reference_forward(layer, x, lengths, st)
    ref_grads = torch.autograd.grad(loss_of(*ref), inputs, allow_unused=True)
    return lib, ref, lib_grads, ref_grads


def assert_match(layer, lib, ref, lib_grads, ref_grads):
    names = ["x"] + [n for n, _ in layer.named_parameters()] + ["state"] * 10
    torch.testing.assert_close(lib[0], ref[0], **TOL, msg="output")
    torch.testing.assert_close(lib[1], ref[1], **TOL, msg="h_n")
    assert (lib[2] is None) == (layer.host != "lstm")
    if lib[2] is not None:
        torch.testing.assert_close(lib[2], ref[2], **TOL, msg="c_n")
    assert tuple(lib[3]) == (layer.scheme.state_fields if layer.carry_momentum else ())
    for f in lib[3]:
        torch.testing.assert_close(lib[3][f], ref[3][f].to(lib[3][f].dtype), **TOL, msg=f"momentum {f}")
    for name, a, b in zip(names, lib_grads, ref_grads):
        if b is None:
            assert a is None or a.abs().max() == 0, name
            continue
        assert a is not None, f"no gradient for {name}"
        torch.testing.assert_close(a, b, **TOL, msg=f"gradient of {name}")


@pytest.mark.parametrize("host,kind", list(itertools.product(HOSTS, KINDS)))
def test_single_layer_matches_reference(host, kind):
    layer = make(host, kind)
    x = torch.randn(9, 3, 3, dtype=torch.float64, requires_grad=True)
    assert_match(layer, *run_both(layer, x))
    layer.carry_momentum = False  # the default: torch.nn's state, the same numbers
    assert_match(layer, *run_both(layer, x))


@pytest.mark.parametrize("host,kind", list(itertools.product(HOSTS, KINDS)))
def test_default_layer_takes_and_returns_torch_nns_state(host, kind):
    # A default layer (no carry_momentum) takes torch.nn's h / (h, c), returns torch.nn's form and
    # starts its momentum at zero at every call: a chunked run restarts the momentum at each chunk.
    layer = make(host, kind, num_layers=2, bidirectional=True, carry_momentum=False)
    assert layer.state_names == (("h", "c") if host == "lstm" else ("h",))
    x = torch.randn(7, 4, 3, dtype=torch.float64, requires_grad=True)
    st = hidden_part(layer, random_state(layer, 4, layer.scheme.state_fields))
    assert_match(layer, *run_both(layer, x, [7, 3, 5, 1], st))
    assert_match(layer, *run_both(layer, x, None, st))
    _, s1 = layer(x[:3].detach())
    o2, s2 = layer(x[3:].detach(), s1)
    parts = check_state(layer, s2)
    ref = reference_forward(layer, x[3:].detach(), None, parts_of(layer, s1))
    torch.testing.assert_close(o2, ref[0], **TOL)
    torch.testing.assert_close(parts["h"], ref[1], **TOL)
    if host == "lstm":
        torch.testing.assert_close(parts["c"], ref[2], **TOL)


@pytest.mark.parametrize("host,kind", list(itertools.product(HOSTS, KINDS)))
def test_stacked_bidirectional_packed_with_state(host, kind):
    layer = make(host, kind, num_layers=2, bidirectional=True)
    x = torch.randn(7, 4, 3, dtype=torch.float64, requires_grad=True)
    lengths = [7, 3, 5, 1]
    st = random_state(layer, 4, layer.scheme.state_fields)
    assert_match(layer, *run_both(layer, x, lengths, st))


@pytest.mark.parametrize("host,kind", list(itertools.product(HOSTS, KINDS)))
def test_initial_state_and_batch_size_one(host, kind):
    layer = make(host, kind, num_layers=2, bias=False)
    x = torch.randn(6, 1, 3, dtype=torch.float64, requires_grad=True)
    st = random_state(layer, 1, layer.scheme.state_fields)
    assert_match(layer, *run_both(layer, x, None, st))


@pytest.mark.parametrize("kind", KINDS)
def test_relu_rnn(kind):
    layer = make("rnn", kind, nonlinearity="relu", num_layers=2)
    x = torch.randn(8, 3, 3, dtype=torch.float64, requires_grad=True)
    assert_match(layer, *run_both(layer, x, [8, 2, 5], random_state(layer, 3, layer.scheme.state_fields)))


@pytest.mark.parametrize("kind", ["heavy_ball", "adam", "restart"])
def test_many_sequences_more_than_gate_units(kind):
    # B > G*H takes the other branch of the resumed-momentum channels in the native fast path.
    layer = make("rnn", kind, hidden=2)
    x = torch.randn(5, 6, 3, dtype=torch.float64, requires_grad=True)
    assert_match(layer, *run_both(layer, x, None, random_state(layer, 6, layer.scheme.state_fields)))


@pytest.mark.parametrize("host,kind", list(itertools.product(HOSTS, KINDS)))
def test_learnable_hyper_parameters(host, kind):
    kw = {}
    if kind in ("heavy_ball", "adam"):
        kw["learn_mu"] = True
    if kind != "none":
        kw["learn_epsilon"] = True
    layer = make(host, kind, **kw)
    x = torch.randn(6, 2, 3, dtype=torch.float64, requires_grad=True)
    lib, ref, g1, g2 = run_both(layer, x)
    assert_match(layer, lib, ref, g1, g2)
    if kw:
        mu, eps = layer.hyper_parameters()
        if "learn_mu" in kw:
            assert 0 < float(mu.detach()) < 1 and abs(float(mu.detach()) - HP[kind]["mu"]) < 1e-12
        if "learn_epsilon" in kw:
            assert abs(float(eps.detach()) - HP[kind]["epsilon"]) < 1e-12


@pytest.mark.parametrize("host,kind", list(itertools.product(HOSTS, KINDS)))
def test_chunked_equals_one_call(host, kind):
    layer = make(host, kind, num_layers=2)
    x = torch.randn(11, 3, 3, dtype=torch.float64)
    out_full, st_full = layer(x)
    outs, st = [], None
    for chunk in x.split([4, 1, 6]):
        o, st = layer(chunk, st)
        outs.append(o)
    torch.testing.assert_close(torch.cat(outs), out_full, **TOL)
    parts, parts_full = check_state(layer, st), check_state(layer, st_full)
    assert list(parts) == list(parts_full) == list(layer.state_names)
    for name in parts:  # h, c and every momentum field (the restart counter exactly)
        torch.testing.assert_close(parts[name], parts_full[name], **TOL, msg=name)


@pytest.mark.parametrize("host,kind", list(itertools.product(HOSTS, KINDS)))
def test_unbatched_and_batch_first(host, kind):
    layer = make(host, kind, num_layers=2, bidirectional=True)
    x = torch.randn(5, 3, dtype=torch.float64)
    out_u, st_u = layer(x)
    out_b, st_b = layer(x.unsqueeze(1))
    parts_u, parts_b = check_state(layer, st_u), check_state(layer, st_b)
    assert out_u.shape == (5, 8) and parts_u["h"].shape == (4, 4)
    torch.testing.assert_close(out_u, out_b.squeeze(1), **TOL)
    assert list(parts_u) == list(parts_b)
    for name in parts_u:
        if name in ("h", "c"):
            torch.testing.assert_close(parts_u[name], parts_b[name].squeeze(1), **TOL, msg=name)
        else:
            torch.testing.assert_close(parts_u[name], parts_b[name].squeeze(1), rtol=0, atol=0, msg=name)
    # unbatched state round trip
    out2, st2 = layer(x, st_u)
    assert out2.shape == (5, 8)
    check_state(layer, st2)
    # the default layer: torch.nn's unbatched state, (L * D, H)
    layer.carry_momentum = False
    out_d, st_d = layer(x, to_state(layer, {k: v for k, v in parts_u.items() if k in ("h", "c")}))
    assert out_d.shape == (5, 8) and all(t.shape == (4, 4) for t in check_state(layer, st_d).values())
    layer.carry_momentum = True
    layer.batch_first = True
    xb = torch.randn(2, 5, 3, dtype=torch.float64)
    out_f, _ = layer(xb)
    layer.batch_first = False
    out_t, _ = layer(xb.transpose(0, 1))
    torch.testing.assert_close(out_f, out_t.transpose(0, 1), rtol=0, atol=0)


@pytest.mark.parametrize("host,kind", list(itertools.product(HOSTS, KINDS)))
def test_sequences_longer_than_a_block(host, kind):
    # Longer than the 16-step blocks of the filters and of the Adam / RMSProp drive, with
    # lengths ending inside, at the end of, and before a block boundary.
    layer = make(host, kind, bidirectional=True)
    x = torch.randn(37, 4, 3, dtype=torch.float64, requires_grad=True)
    st = random_state(layer, 4, layer.scheme.state_fields)
    assert_match(layer, *run_both(layer, x, [37, 16, 20, 3], st))
    assert_match(layer, *run_both(layer, x, None, None))
