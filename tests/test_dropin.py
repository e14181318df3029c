"""Code written for ``torch.nn``, run unchanged with every layer of the library.

Each idiom below is client code as tutorials and example repositories write it for
``torch.nn.RNN`` / ``LSTM`` / ``GRU`` (a classifier on ``h_n[-1]``, a bidirectional concat, a
packed batch, truncated BPTT with ``repackage_hidden``, an encoder handing its state to a
decoder, ``torch.save(model)``, ...). It runs once with the ``torch.nn`` class and once with each
of the 48 layers (the modReLU hosts against ``nn.RNN``, whose contract they take) and must
behave the same: the same return structure, types and shapes; and, for the layers that compute
the plain cell (plain layers, heavy ball at ``mu=0, epsilon=1``) with ``torch.nn``'s weights
copied in, the same numbers.
"""

import copy
import io
import subprocess
import sys
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from torch.utils import _pytree as pytree

import momentumrnn as mr

NATIVE = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
I, H, B, T = 3, 4, 2, 5
#: heavy ball at mu = 0, epsilon = 1 computes the plain cell: numbers compared with torch.nn
TRIVIAL = {"heavy_ball": {"mu": 0.0, "epsilon": 1.0}}


def _kind(name):
    return mr.layer_class(name).scheme_kind


class Factory:
    """Stands in for ``nn.LSTM`` (or ``nn.RNN`` / ``nn.GRU``) in client code: ``RNN(input_size,
    hidden_size, num_layers, ...)`` gives our layer, with torch.nn's weights copied in where the
    host has torch.nn's parameters (so a plain layer computes torch.nn's numbers)."""

    def __init__(self, name=None, native=None, **hyper):
        self.name, self.native, self.hyper = name, native, hyper
        self.cls = native if name is None else mr.layer_class(name)

    def __call__(self, input_size, hidden_size, num_layers=1, **kw):
        torch.manual_seed(0)
        if self.name is None:
            return self.native(input_size, hidden_size, num_layers, **kw)
        layer = self.cls(input_size, hidden_size, num_layers, **kw, **self.hyper)
        if self.cls.host in NATIVE:
            torch.manual_seed(0)
            layer.load_state_dict(NATIVE[self.cls.host](input_size, hidden_size, num_layers, **kw).state_dict())
        return layer


def native_of(name):
    return Factory(native=NATIVE.get(mr.layer_class(name).host, nn.RNN))


def ours(name):
    return Factory(name, **TRIVIAL.get(_kind(name), {}))


def inputs(batch_first=False):
    torch.manual_seed(1)
    x = torch.randn(B, T, I) if batch_first else torch.randn(T, B, I)
    return x


# ----------------------------------------------------------------------------------- idioms
# Each takes the factory ``RNN`` and whether it is an LSTM (client code knows what it built) and
# returns what the client code computed.


def unpack(RNN, lstm):
    rnn = RNN(I, H)
    if lstm:
        out, (h_n, c_n) = rnn(inputs())
        return out, h_n, c_n
    out, h_n = rnn(inputs())
    return out, h_n


def classifier_head(RNN, lstm):
    class Classifier(nn.Module):  # the usual "last layer's final state -> linear" classifier
        def __init__(self):
            super().__init__()
            self.rnn = RNN(I, H, num_layers=2, batch_first=True)
            self.fc = nn.Linear(H, 3)

        def forward(self, x):
            _, hidden = self.rnn(x)
            h_n = hidden[0] if isinstance(hidden, tuple) else hidden
            return self.fc(h_n[-1])

    return Classifier()(inputs(batch_first=True))


def bidirectional_concat(RNN, lstm):
    rnn = RNN(I, H, bidirectional=True)
    out, hidden = rnn(inputs())
    h_n = hidden[0] if lstm else hidden
    return torch.cat((h_n[-2, :, :], h_n[-1, :, :]), dim=1), out[-1]


def shapes(RNN, lstm):
    rnn = RNN(I, H, num_layers=3)
    out, hidden = rnn(inputs())
    h_n = hidden[0] if lstm else hidden
    return tuple(out.shape), tuple(h_n.shape), h_n.size(0), h_n.dim(), len(hidden) if lstm else h_n.ndim


def packed(RNN, lstm):
    rnn = RNN(I, H, batch_first=True, bidirectional=True)
    x = inputs(batch_first=True)
    lengths = torch.tensor([5, 3])
    pk = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    packed_out, hidden = rnn(pk)
    out, out_lengths = pad_packed_sequence(packed_out, batch_first=True)
    return type(packed_out).__name__, out, out_lengths, hidden


def unbatched(RNN, lstm):
    rnn = RNN(I, H, num_layers=2)
    return rnn(inputs()[:, 0])


def explicit_initial_state(RNN, lstm):
    rnn = RNN(I, H, num_layers=2, batch_first=True)

    def init_hidden(bsz):  # word_language_model's init_hidden
        weight = next(rnn.parameters())
        if lstm:
            return weight.new_zeros(2, bsz, H), weight.new_zeros(2, bsz, H)
        return weight.new_zeros(2, bsz, H)

    return rnn(inputs(batch_first=True), init_hidden(B))


def repackage_hidden(h):
    """Wraps hidden states in new Tensors, to detach them from their history (PyTorch's
    word_language_model)."""
    if isinstance(h, torch.Tensor):
        return h.detach()
    return tuple(repackage_hidden(v) for v in h)


def truncated_bptt(RNN, lstm):
    torch.manual_seed(2)
    rnn = RNN(I, H)
    decoder = nn.Linear(H, I)
    opt = torch.optim.SGD(list(rnn.parameters()) + list(decoder.parameters()), lr=0.1)
    data = torch.randn(4 * T, B, I)
    hidden = None
    losses = []
    for i in range(0, data.size(0) - 1, T):
        x, y = data[i : i + T], data[i + 1 : i + 1 + T]
        if hidden is not None:
            hidden = repackage_hidden(hidden)
        opt.zero_grad()
        out, hidden = rnn(x, hidden)
        out = out[: y.shape[0]]
        loss = nn.functional.mse_loss(decoder(out), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(rnn.parameters(), 0.25)
        opt.step()
        losses.append(loss.detach())
    return torch.stack(losses), hidden


def detach_by_comprehension(RNN, lstm):
    rnn = RNN(I, H)
    x = inputs()
    _, hidden = rnn(x)
    hidden = tuple(h.detach() for h in hidden) if lstm else hidden.detach()
    out, hidden = rnn(x, hidden)
    return out, hidden


def encoder_decoder(RNN, lstm):
    encoder, decoder = RNN(I, H, num_layers=2), RNN(I, H, num_layers=2)
    _, hidden = encoder(inputs())
    return decoder(inputs()[:3], hidden)


def to_double(RNN, lstm):
    rnn = RNN(I, H).double()
    x = inputs().double()
    _, hidden = rnn(x)
    hidden = tuple(h.to(torch.float64) for h in hidden) if lstm else hidden.to(torch.float64)
    return rnn(x, hidden)


def state_dict_round_trip(RNN, lstm):
    a = RNN(I, H, num_layers=2)
    with torch.no_grad():
        for p in a.parameters():
            p.mul_(1.5)
    b = RNN(I, H, num_layers=2)
    b.load_state_dict(a.state_dict())
    return b(inputs()), sorted(a.state_dict()) == sorted(b.state_dict())


class Model(nn.Module):
    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn
        self.fc = nn.Linear(H, 2)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.fc(out[:, -1])


def save_whole_model(RNN, lstm):
    model = Model(RNN(I, H, batch_first=True))
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    with torch.serialization.safe_globals([Model, nn.Linear, RNN.cls]):  # only the classes the user built
        loaded = torch.load(buf)  # weights_only=True, torch's default
    x = inputs(batch_first=True)
    return loaded(x), type(loaded.rnn).__name__.endswith(RNN.cls.__name__)


def copies(RNN, lstm):
    rnn = RNN(I, H)
    twin = copy.deepcopy(rnn)
    twin.flatten_parameters()
    return twin(inputs()), rnn(inputs())


def training_step(RNN, lstm):
    model = Model(RNN(I, H, batch_first=True, num_layers=2, dropout=0.1))
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss = model(inputs(batch_first=True)).pow(2).mean()
    loss.backward()
    opt.step()
    model.eval()
    with torch.no_grad():
        y = model(inputs(batch_first=True))
    return all(p.grad is not None for p in model.parameters()), y


def jit_trace(RNN, lstm):
    rnn = RNN(I, H, batch_first=True)
    x = inputs(batch_first=True)
    with warnings.catch_warnings():  # the tracer's notes on Python values: not this test's subject
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates jit.trace itself
        traced = torch.jit.trace(rnn, (x,), check_trace=False)
    return traced(x)


IDIOMS = [
    unpack,
    classifier_head,
    bidirectional_concat,
    shapes,
    packed,
    unbatched,
    explicit_initial_state,
    truncated_bptt,
    detach_by_comprehension,
    encoder_decoder,
    to_double,
    state_dict_round_trip,
    save_whole_model,
    copies,
    training_step,
    jit_trace,
]
#: idioms that make or feed real H-wide states, or read widths: scuRNN's state is complex and its
#: output [Re h, Im h] is 2H wide (documented), so these cannot run unchanged on it
REAL_WIDTH = {
    classifier_head,
    truncated_bptt,
    save_whole_model,
    training_step,
    shapes,
    explicit_initial_state,
    to_double,
}


def describe(value):
    """The structure of what client code got: containers, and for tensors their type, dtype and
    shape (python values as they are)."""
    leaves, spec = pytree.tree_flatten(value)
    return spec, [(type(v).__name__, v.dtype, tuple(v.shape)) if isinstance(v, torch.Tensor) else v for v in leaves]


@pytest.mark.parametrize("idiom", IDIOMS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("name", mr.LAYER_NAMES)
def test_client_idiom(name, idiom):
    host = mr.layer_class(name).host
    lstm = host == "lstm"
    if host == "scurnn" and idiom in REAL_WIDTH:
        pytest.skip("scuRNN: complex state and a 2H-wide output (README, Drop-in: what is different)")
    expected = idiom(native_of(name), lstm)
    got = idiom(ours(name), lstm)
    if host == "scurnn":  # the documented differences, exactly: h complex, the output [Re h, Im h]
        (spec, want), (spec_got, have) = describe(expected), describe(got)
        assert spec_got == spec
        for w, g in zip(want, have):
            if isinstance(w, tuple) and w[0] == "Tensor" and w[1].is_floating_point:
                assert g[2][:-1] == w[2][:-1] and (
                    g[1:] == (torch.complex64, w[2]) or g[1:] == (w[1], (*w[2][:-1], 2 * w[2][-1]))
                )
            else:
                assert g == w
        return
    assert describe(got) == describe(expected)
    if host in NATIVE and (_kind(name) == "none" or _kind(name) in TRIVIAL):
        for a, b in zip(pytree.tree_leaves(got), pytree.tree_leaves(expected)):
            if isinstance(a, torch.Tensor):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------- cells
NATIVE_CELLS = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}


@pytest.mark.parametrize("name", mr.CELL_NAMES)
def test_cell_loop_as_torch_nn(name):
    """``h, c = cell(x_t, (h, c))`` / ``h = cell(x_t, h)`` loops, batched and unbatched, from no
    state and from a state: torch.nn's structure; the plain cells torch.nn's numbers."""
    cls = mr.cell_class(name)
    native = NATIVE_CELLS[cls.host]
    torch.manual_seed(0)
    a = native(I, H)
    b = cls(I, H, **TRIVIAL.get(cls.scheme_kind, {}))
    b.load_state_dict(a.state_dict())
    x = inputs()

    def loop(cell, xs, hx=None):
        outs = []
        for x_t in xs:
            hx = cell(x_t, hx)
            outs.append(hx[0] if cls.host == "lstm" else hx)
        return torch.stack(outs), hx

    for xs in (x, x[:, 0]):
        want, got = loop(a, xs), loop(b, xs)
        assert describe(got) == describe(want)
        if cls.scheme_kind == "none" or cls.scheme_kind in TRIVIAL:
            for u, v in zip(pytree.tree_leaves(got), pytree.tree_leaves(want)):
                torch.testing.assert_close(u, v)


# ----------------------------------------------------------------------------------- PyTorch's samples
_DUMP_SAMPLES = """
import sys, torch
from torch import nn
from torch.testing._internal.common_modules import module_db
wanted = (nn.RNN, nn.LSTM, nn.GRU, nn.RNNCell, nn.LSTMCell, nn.GRUCell)
cases = [(info.module_cls.__name__, s.constructor_input.args, dict(s.constructor_input.kwargs), s.forward_input.args,
          dict(s.forward_input.kwargs))
         for info in module_db if info.module_cls in wanted
         for s in info.module_inputs_func(info, device="cpu", dtype=torch.float64, requires_grad=True, training=True)]
torch.save(cases, sys.argv[1])
"""


@pytest.fixture(scope="module")
def module_samples(tmp_path_factory):
    """PyTorch's module test samples, read in a child process: importing torch's internal test
    helpers freezes torch.backends' global flags for the rest of the process (common_utils calls
    ``torch.backends.disable_global_flags()``), which breaks later code that sets them
    (Lightning sets cudnn.benchmark)."""
    path = tmp_path_factory.mktemp("module_db") / "samples.pt"
    run = subprocess.run([sys.executable, "-c", _DUMP_SAMPLES, str(path)], capture_output=True, text=True)
    if run.returncode and "No module named 'expecttest'" in run.stderr:  # torch's helpers need a test extra
        pytest.skip("torch.testing._internal.common_modules needs expecttest (pip install -e '.[test]')")
    assert run.returncode == 0, run.stderr[-2000:]
    return torch.load(path, weights_only=False)


@pytest.mark.parametrize("scheme", ["none", "heavy_ball"])
def test_pytorch_module_samples(scheme, module_samples):
    """PyTorch's own module test samples for nn.RNN / GRU / LSTM and the three cells
    (``module_db``: 87 constructor and input cases), through our plain layer and our heavy-ball
    layer at ``mu=0, epsilon=1`` with torch.nn's weights: torch.nn's outputs, structure and
    gradients."""
    assert len(module_samples) >= 80
    hyper = TRIVIAL.get(scheme, {})
    hosts = {"RNN": "rnn", "LSTM": "lstm", "GRU": "gru"}
    for native_name, args, kwargs, fwd_args, fwd_kwargs in module_samples:
        native_cls = getattr(nn, native_name)
        host = hosts[native_name.removesuffix("Cell")]
        torch.manual_seed(0)
        native = native_cls(*args, **kwargs).double()
        cell = native_cls.__name__.endswith("Cell")
        ours_cls = (
            mr.cell_class(mr.registry.paper_name(host, scheme) + "Cell")
            if cell
            else mr.layer_class(mr.registry.paper_name(host, scheme))
        )
        layer = ours_cls(*args, **kwargs, **hyper).double()
        layer.load_state_dict(native.state_dict())

        def run(module, fwd_args=fwd_args, fwd_kwargs=fwd_kwargs):
            xs = pytree.tree_map(
                lambda t: t.detach().clone().requires_grad_(t.requires_grad) if isinstance(t, torch.Tensor) else t,
                fwd_args,
            )
            out = module(*xs, **fwd_kwargs)
            leaves = [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
            grads = torch.autograd.grad(
                sum(t.sum() for t in leaves),
                [t for t in pytree.tree_leaves(xs) if isinstance(t, torch.Tensor)] + list(module.parameters()),
                allow_unused=True,
            )
            return out, grads

        (want, want_g), (got, got_g) = run(native), run(layer)
        where = f"{native_cls.__name__}{args}{kwargs}"
        assert describe(got) == describe(want), where
        torch.testing.assert_close(got, want, msg=where)
        for g, w in zip(got_g, want_g):
            assert (g is None) == (w is None), where
            if g is not None:
                torch.testing.assert_close(g, w, msg=where)
