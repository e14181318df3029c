"""Every orthogonal layer (parametrization x scheme) against the literal reference, in float64:
outputs, final states (momentum included: layers built with ``carry_momentum=True``) and gradients
of the input, every parameter (skew parameters, scuRNN's theta, W_ih, modReLU biases) and the
initial state; plus gradcheck; and the default layers' torch.nn state (a tensor h)."""

import itertools

import pytest
import torch
from orthogonal_reference import reference_forward
from states import check_state, momentum_of, parts_of, to_state
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import momentumrnn.orthogonal as orth

HOSTS = ["exprnn", "dtriv", "scornn", "scurnn"]
KINDS = ["none", "heavy_ball", "adam", "rmsprop", "restart", "nesterov"]
CASES = list(itertools.product(HOSTS, KINDS))
TOL = dict(rtol=1e-10, atol=1e-10)

HP = {
    "none": {},
    "heavy_ball": {"mu": 0.7, "epsilon": 0.4},
    "adam": {"mu": 0.5, "epsilon": 0.8, "beta": 0.3},
    "rmsprop": {"epsilon": 0.7, "beta": 0.6},
    "restart": {"epsilon": 0.9, "restart": 3},
    "nesterov": {"epsilon": 0.6, "restart": 3},
}


def make(host, kind, input_size=3, hidden=5, seed=0, **kw):
    """A float64 layer with parameters away from their initial values: a non-trivial skew part
    (and DTRIV base, scuRNN theta), modReLU biases large enough that some units are cut off. It
    carries its momentum (``carry_momentum=True``) unless told otherwise."""
    kw.setdefault("carry_momentum", True)
    if host == "scornn":
        kw.setdefault("num_negative", 2)
    torch.manual_seed(seed)
    layer = orth.build_orthogonal_layer(host, kind, input_size, hidden, dtype=torch.float64, **HP[kind], **kw)
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if "modrelu_bias" in name:
                p.copy_(torch.rand(p.shape, generator=g, dtype=p.dtype) - 0.6)
            elif "weight_hh" in name:  # the skew parameter
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.4)
            elif "theta" in name:
                p.copy_(torch.rand(p.shape, generator=g, dtype=p.dtype) * 6.28)
            else:
                p.mul_(1.5)
        if host == "dtriv":
            for sfx in layer._suffixes:  # a base change away from the identity
                plist = layer.parametrizations["weight_hh" + sfx]
                plist[0].change_base_(plist.original)
                plist.original.copy_(torch.randn(plist.original.shape, generator=g, dtype=torch.float64) * 0.3)
    return layer


def random_state(layer, B, seed=1):
    g = torch.Generator().manual_seed(seed)
    LD = layer.num_layers * layer.num_directions
    H = layer.hidden_size

    def vec():
        t = torch.randn(LD, B, H, generator=g, dtype=torch.float64) * 0.5
        if layer.unitary:
            t = torch.complex(t, torch.randn(LD, B, H, generator=g, dtype=torch.float64) * 0.5)
        return t

    st = {"h": vec()}
    for f in layer.scheme.state_fields:
        if f == "step":
            # in [1, F) so that v_0 matters (k = 0 or F make the next mu_k 0: the chunked test covers them)
            st["step"] = torch.randint(1, layer.scheme.restart, (LD, B), generator=g)
        elif f == "m":
            st["m"] = torch.rand(LD, B, H, generator=g, dtype=torch.float64) + 0.1
        else:
            st[f] = vec()
    for v in st.values():
        if v.is_floating_point() or v.is_complex():
            v.requires_grad_(True)
    return st


def to_layer_state(layer, st):
    """The state ``layer`` takes from a dict of ``random_state`` (every entry is used: a momentum
    field needs a layer built with ``carry_momentum=True``)."""
    if st is None:
        return None
    assert set(st) <= set(layer.state_names), (sorted(st), layer.state_names)
    return to_state(layer, st)


def _weighted(t, g):
    w = torch.randn(t.shape, generator=g, dtype=torch.float64)
    if t.is_complex():
        return (t * torch.complex(w, torch.randn(t.shape, generator=g, dtype=torch.float64))).real.sum()
    return (t * w).sum()


def run_both(layer, x, lengths=None, st=None):
    """As tests/test_layers.py's: a carrying layer returns (and the loss includes) the momentum; a
    default layer returns torch.nn's h (``st`` then holds ``h`` only: momentum from zero)."""
    carried = layer.scheme.state_fields if layer.carry_momentum else ()
    fields = [f for f in carried if f != "step"]
    inputs = [x] + list(layer.parameters()) + [v for v in (st or {}).values() if v.requires_grad]

    def loss_of(out, h, mom):
        g = torch.Generator().manual_seed(7)
        return sum(_weighted(t, g) for t in [out, h] + [mom[f] for f in fields])

    if lengths is not None:
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        out_p, state = layer(packed, to_layer_state(layer, st))
        out, out_lengths = pad_packed_sequence(out_p, total_length=x.shape[0])
        assert out_lengths.tolist() == list(lengths)
    else:
        out, state = layer(x, to_layer_state(layer, st))
    h = check_state(layer, state)["h"]
    mom = momentum_of(layer, state)
    assert tuple(mom) == carried, (tuple(mom), carried)
    lib = (out, h, mom)
    lib_grads = torch.autograd.grad(loss_of(*lib), inputs, allow_unused=True)
    ref = reference_forward(layer, x, lengths, st)
    ref_grads = torch.autograd.grad(loss_of(*ref), inputs, allow_unused=True)
    return lib, ref, lib_grads, ref_grads


def assert_match(layer, lib, ref, lib_grads, ref_grads):
    names = ["x"] + [n for n, _ in layer.named_parameters()] + ["state"] * 10
    torch.testing.assert_close(lib[0], ref[0], **TOL, msg="output")
    torch.testing.assert_close(lib[1], ref[1], **TOL, msg="h_n")
    assert tuple(lib[2]) == (layer.scheme.state_fields if layer.carry_momentum else ())
    for f in lib[2]:
        torch.testing.assert_close(lib[2][f], ref[2][f].to(lib[2][f].dtype), **TOL, msg=f"momentum {f}")
    for name, a, b in zip(names, lib_grads, ref_grads):
        if b is None:
            assert a is None or a.abs().max() == 0, name
            continue
        assert a is not None, f"no gradient for {name}"
        assert b.abs().max() > 0, f"reference gradient of {name} vanishes: the test would be vacuous"
        torch.testing.assert_close(a, b, **TOL, msg=f"gradient of {name}")


@pytest.mark.parametrize("host,kind", CASES)
def test_single_layer_matches_reference(host, kind):
    layer = make(host, kind)
    x = torch.randn(9, 3, 3, dtype=torch.float64, requires_grad=True)
    assert_match(layer, *run_both(layer, x))
    layer.carry_momentum = False  # the default: torch.nn.RNN's h, the same numbers
    assert_match(layer, *run_both(layer, x))


@pytest.mark.parametrize("host,kind", CASES)
def test_default_layer_takes_and_returns_h(host, kind):
    # torch.nn.RNN's contract: a tensor h in and out, the momentum from zero at every call
    layer = make(host, kind, hidden=4, num_layers=2, bidirectional=True, carry_momentum=False)
    assert layer.state_names == ("h",)
    x = torch.randn(7, 4, 3, dtype=torch.float64, requires_grad=True)
    st = {"h": random_state(layer, 4)["h"]}
    assert_match(layer, *run_both(layer, x, [7, 3, 5, 1], st))
    _, s1 = layer(x[:3].detach())
    o2, s2 = layer(x[3:].detach(), s1)
    ref = reference_forward(layer, x[3:].detach(), None, {"h": s1})
    torch.testing.assert_close(o2, ref[0], **TOL)
    torch.testing.assert_close(check_state(layer, s2)["h"], ref[1], **TOL)


@pytest.mark.parametrize("host,kind", CASES)
def test_stacked_bidirectional_packed_with_state(host, kind):
    layer = make(host, kind, hidden=4, num_layers=2, bidirectional=True)
    x = torch.randn(7, 4, 3, dtype=torch.float64, requires_grad=True)
    assert_match(layer, *run_both(layer, x, [7, 3, 5, 1], random_state(layer, 4)))


@pytest.mark.parametrize("host,kind", CASES)
def test_batch_size_one_with_state(host, kind):
    layer = make(host, kind, num_layers=2)
    x = torch.randn(6, 1, 3, dtype=torch.float64, requires_grad=True)
    assert_match(layer, *run_both(layer, x, None, random_state(layer, 1)))


@pytest.mark.parametrize("kind", KINDS)
def test_scurnn_complex_input(kind):
    layer = make("scurnn", kind, complex_input=True, num_layers=2)
    x = torch.randn(6, 2, 3, dtype=torch.complex128, requires_grad=True)
    assert_match(layer, *run_both(layer, x, None, random_state(layer, 2)))


@pytest.mark.parametrize("host,kind", CASES)
def test_chunked_equals_one_call(host, kind):
    layer = make(host, kind, num_layers=2)
    x = torch.randn(11, 3, 3, dtype=torch.float64)
    out_full, st_full = layer(x)
    outs, st = [], None
    for chunk in x.split([3, 1, 7]):  # the first chunk ends at the restart period F = 3
        o, st = layer(chunk, st)
        outs.append(o)
    torch.testing.assert_close(torch.cat(outs), out_full, **TOL)
    parts, parts_full = check_state(layer, st), check_state(layer, st_full)
    assert list(parts) == list(parts_full) == list(layer.state_names)
    for name in parts:  # h and every momentum field (the restart counter exactly)
        torch.testing.assert_close(parts[name], parts_full[name], **TOL, msg=name)


@pytest.mark.parametrize("host", HOSTS)
def test_unbatched_and_batch_first(host):
    layer = make(host, "adam", num_layers=2, bidirectional=True)
    F = layer.output_size
    x = torch.randn(5, 3, dtype=torch.float64)
    out_u, st_u = layer(x)
    out_b, st_b = layer(x.unsqueeze(1))
    parts_u, parts_b = check_state(layer, st_u), check_state(layer, st_b)
    assert out_u.shape == (5, F) and parts_u["h"].shape == (4, 5)
    torch.testing.assert_close(out_u, out_b.squeeze(1), rtol=0, atol=0)
    assert list(parts_u) == list(parts_b) == ["h", "v", "m"]
    for name in parts_u:
        torch.testing.assert_close(parts_u[name], parts_b[name].squeeze(1), rtol=0, atol=0, msg=name)
    out2, st2 = layer(x, st_u)  # unbatched state round trip
    assert out2.shape == (5, F)
    check_state(layer, st2)
    layer.carry_momentum = False  # the default layer: torch.nn's unbatched h, (L * D, H)
    out_d, h_d = layer(x, parts_u["h"])
    assert out_d.shape == (5, F) and check_state(layer, h_d)["h"].shape == (4, 5)
    layer.carry_momentum = True
    layer.batch_first = True
    xb = torch.randn(2, 5, 3, dtype=torch.float64)
    out_f, _ = layer(xb)
    layer.batch_first = False
    out_t, _ = layer(xb.transpose(0, 1))
    torch.testing.assert_close(out_f, out_t.transpose(0, 1), rtol=0, atol=0)


@pytest.mark.parametrize("host,kind", CASES)
def test_gradcheck(host, kind):
    layer = make(host, kind, input_size=2, hidden=3)
    x = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True)
    st = random_state(layer, 2)
    params = list(layer.parameters())
    state_leaves = [v for v in st.values() if v.requires_grad]

    def f(x, *args):
        ps, ss = args[: len(params)], args[len(params) :]
        keys = [k for k, v in st.items() if v.requires_grad]
        s = dict(st, **dict(zip(keys, ss)))
        out, state = torch.func.functional_call(
            layer, {n: a for (n, _), a in zip(layer.named_parameters(), ps)}, (x, to_layer_state(layer, s))
        )
        return (out, *[t for k, t in parts_of(layer, state).items() if k != "step"])  # h, v, m, p

    leaves = [p.detach().clone().requires_grad_(True) for p in params]
    assert torch.autograd.gradcheck(f, (x, *leaves, *state_leaves), atol=1e-7, rtol=1e-6, fast_mode=True)


@pytest.mark.parametrize("host", HOSTS)
def test_heavy_ball_mu0_eps1_is_the_plain_layer(host):
    plain = make(host, "none", num_layers=2, bidirectional=True)
    hb = orth.build_orthogonal_layer(
        host,
        "heavy_ball",
        3,
        5,
        num_layers=2,
        bidirectional=True,
        dtype=torch.float64,
        mu=0.0,
        epsilon=1.0,
        **({"num_negative": 2} if host == "scornn" else {}),
    )
    hb.load_state_dict(plain.state_dict())
    x = torch.randn(8, 3, 3, dtype=torch.float64, requires_grad=True)
    o1, s1 = plain(x)
    o2, s2 = hb(x)  # a default layer: torch.nn.RNN's h, as the plain layer's
    assert isinstance(s1, torch.Tensor) and isinstance(s2, torch.Tensor)
    torch.testing.assert_close(o2, o1, rtol=0, atol=1e-14)
    torch.testing.assert_close(s2, s1, rtol=0, atol=1e-14)
    g1 = torch.autograd.grad(o1.square().sum(), [x, *list(plain.parameters())])
    g2 = torch.autograd.grad(o2.square().sum(), [x, *list(hb.parameters())])
    for a, b in zip(g1, g2):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("input_size", [1, 2])
@pytest.mark.parametrize("host,kind", list(itertools.product(HOSTS, ["adam", "rmsprop"])))
def test_factored_second_moment_drive(host, kind, input_size):
    # input_size^2 < hidden: the loop forms the Adam / RMSProp drive from filtered input features
    layer = make(host, kind, input_size=input_size, hidden=5, bidirectional=True)
    x = torch.randn(8, 3, input_size, dtype=torch.float64, requires_grad=True)
    assert_match(layer, *run_both(layer, x, [8, 5, 2]))
    # resuming a momentum state takes the dense path; both agree with the reference
    assert_match(layer, *run_both(layer, x, None, random_state(layer, 3)))


@pytest.mark.parametrize("host", HOSTS)
def test_exact_zero_pre_activation(host):
    # zero state and zero input: z = 0 exactly (pMNIST images start with zero pixels), where
    # modReLU is 0 with zero derivative, whatever the sign of its bias
    layer = make(host, "heavy_ball", num_layers=2)
    with torch.no_grad():
        layer.modrelu_bias_l0[:2] = torch.tensor([0.3, -0.2], dtype=torch.float64)
    x = torch.randn(7, 3, 3, dtype=torch.float64)
    x[:3] = 0
    x.requires_grad_(True)
    lib, ref, g1, g2 = run_both(layer, x)
    assert (lib[0][:3].abs().max()) == 0
    assert_match(layer, lib, ref, g1, g2)


@pytest.mark.parametrize("kind", ["none", "adam"])
def test_scurnn_gauss_products(kind, monkeypatch):
    # large hidden sizes form the complex products with three real GEMMs: force it on small ones
    from momentumrnn.orthogonal import recurrence

    monkeypatch.setattr(recurrence._ComplexProduct, "GAUSS_FROM", 1)
    layer = make("scurnn", kind, input_size=1, num_layers=2, bidirectional=True)
    x = torch.randn(6, 3, 1, dtype=torch.float64, requires_grad=True)
    assert_match(layer, *run_both(layer, x, [6, 4, 1], random_state(layer, 3)))
    assert_match(layer, *run_both(layer, x))


@pytest.mark.parametrize("host,kind", list(itertools.product(HOSTS, ["none", "adam", "rmsprop", "restart"])))
def test_sequences_longer_than_a_block(host, kind):
    # the loops work in blocks of BLOCK steps: cross several block boundaries, with a partial last
    # block, packed lengths ending inside blocks, and both drive forms (factored from a zero state)
    from momentumrnn.orthogonal.recurrence import BLOCK

    T = 2 * BLOCK + 5
    layer = make(host, kind, input_size=1, hidden=4)
    x = torch.randn(T, 2, 1, dtype=torch.float64, requires_grad=True)
    assert_match(layer, *run_both(layer, x, [T, BLOCK + 3]))
    assert_match(layer, *run_both(layer, x, None, random_state(layer, 2)))


@pytest.mark.parametrize("host,kind", CASES)
def test_wide_input_dense_drive(host, kind):
    # input wider than the hidden state: the drive is computed densely before the loop
    layer = make(host, kind, input_size=7, hidden=3)
    x = torch.randn(6, 2, 7, dtype=torch.float64, requires_grad=True)
    assert_match(layer, *run_both(layer, x, [6, 4], random_state(layer, 2)))
