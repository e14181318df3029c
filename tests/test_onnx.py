"""``torch.onnx.export(model, args, path)`` (torch's default exporter) of every layer inside ordinary
models, run in onnxruntime against eager mode (float32): within 1e-5 at the export's shapes, and
at other sequence lengths (dynamic ``T``) within 1e-5 of the output's scale. The recurrent matrix
of the modReLU hosts is folded into the graph from the current parameter values.

An export takes about a second of CPU per layer here plus a fixed second or two (torch.export traces
every layer, the exporter builds its registry and translates the graph), so the layers of a host
are exported together, as the branches of one model."""

import copy
import itertools

import numpy as np
import pytest
import torch
from torch import nn

import momentumrnn as mr

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
onnx = pytest.importorskip("onnx")

HOSTS = list(mr.HOSTS)
KINDS = list(mr.SCHEME_KINDS)
T0, B0 = 5, 2
TOL = 1e-5


class Branch(nn.Module):
    """A classifier on the last step, and the final state as torch.nn returns it (``h``; ``(h, c)``
    on the LSTM host)."""

    def __init__(self, layer, batch_first=False):
        super().__init__()
        self.layer = layer
        self.head = nn.Linear(layer.output_size, 3)
        self.batch_first = batch_first

    def forward(self, x):
        out, state = self.layer(x)
        last = out[:, -1] if self.batch_first else out[-1]
        return (self.head(last), *(state if isinstance(state, tuple) else (state,)))


class Group(nn.Module):
    def __init__(self, branches):
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x):
        return tuple(itertools.chain.from_iterable(b(x) for b in self.branches))


def flat(outputs):
    """Outputs as onnxruntime returns them (complex tensors as real ``(..., 2)``)."""
    return [(torch.view_as_real(t) if t.is_complex() else t).detach().numpy() for t in outputs]


def export(model, x, path, dynamic_shapes=None):
    torch.onnx.export(model, (x,), path, dynamic_shapes=dynamic_shapes, verbose=False)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def check(session, model, x, names, model64=None):
    """onnxruntime against eager float32 at ``x``: within 1e-5; with ``model64`` (other shapes
    than the export's), both against float64 eager: onnxruntime's error within 1e-5 of the
    output's scale, or no more than twice eager float32's own error (long recurrences of the
    modReLU hosts accumulate float32 rounding, differently ordered in the two)."""
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        want = flat(model(x))
        exact = flat(model64(x.double())) if model64 is not None else want
    assert len(got) == len(want) == len(names)
    for name, a, b, c in zip(names, got, want, exact):
        assert a.shape == b.shape, f"{name}: onnxruntime gives {a.shape}, eager {b.shape}"
        where = f"{name} at input {tuple(x.shape)}"
        if model64 is None:
            diff = float(np.abs(a - b).max())
            assert diff <= TOL, f"{where}: max |onnxruntime - eager| = {diff:.3g} > {TOL}"
            continue
        err, err32 = float(np.abs(a - c).max()), float(np.abs(b - c).max())
        tol = max(TOL * max(1.0, float(np.abs(c).max())), 2 * err32)
        assert err <= tol, f"{where}: onnxruntime's error {err:.3g} > {tol:.3g} (eager float32's: {err32:.3g})"


def output_names(branches):
    names = []
    for b in branches:
        n = b.layer._name
        names += [f"{n} logits", f"{n} h"] + ([f"{n} c"] if b.layer.host == "lstm" else [])
    return names


@pytest.mark.parametrize("host", HOSTS)
def test_every_layer_exports_with_a_dynamic_length(host, tmp_path):
    torch.manual_seed(0)
    branches = [Branch(mr.build_layer(host, kind, 3, 4)) for kind in KINDS]
    model = Group(branches).eval()
    x = torch.randn(T0, B0, 3)
    session = export(model, x, tmp_path / "m.onnx", dynamic_shapes=({0: torch.export.Dim("T", min=1)},))
    time_dim = session.get_inputs()[0].shape[0]
    assert isinstance(time_dim, str), f"the sequence length was fixed to {time_dim}"
    names = output_names(branches)
    check(session, model, x, names)
    model64 = copy.deepcopy(model).double()
    for T in (12, 1):
        check(session, model, torch.randn(T, B0, 3), names, model64)


def test_stacked_bidirectional_batch_first_dynamic_batch(tmp_path):
    torch.manual_seed(1)
    layers = [
        mr.AdamLSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True),
        mr.NesterovGRU(3, 4, bidirectional=True, batch_first=True),
        mr.RMSPropScuRNN(3, 4, num_layers=2, batch_first=True),
        mr.RestartMomentumDTRIV(3, 4, bidirectional=True, batch_first=True),
    ]
    branches = [Branch(layer, batch_first=True) for layer in layers]
    model = Group(branches).eval()
    x = torch.randn(B0, T0, 3)
    dims = {0: torch.export.Dim("batch", min=1), 1: torch.export.Dim("T", min=1)}
    session = export(model, x, tmp_path / "m.onnx", dynamic_shapes=(dims,))
    assert all(isinstance(d, str) for d in session.get_inputs()[0].shape[:2]), session.get_inputs()[0].shape
    names = output_names(branches)
    check(session, model, x, names)
    check(session, model, torch.randn(3, 9, 3), names, copy.deepcopy(model).double())


def _modify_in_place(layer):
    """New parameter values, in place, without a forward call afterwards."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)


@pytest.mark.parametrize("name", ["MomentumDTRIV", "AdamScoRNN", "NesterovScuRNN", "ENRNN"])
def test_recurrent_matrix_folded_from_the_current_parameters(name, tmp_path):
    torch.manual_seed(2)
    layer = mr.layer_class(name)(3, 6)
    x = torch.randn(T0, B0, 3)
    layer(x)  # an eager call, then new values without one: the export must read the new values
    _modify_in_place(layer)
    if name == "MomentumDTRIV":  # a base change (a buffer) since the last call too
        layer.parametrizations.weight_hh_l0[0].change_base_(layer.parametrizations.weight_hh_l0.original)
    if name == "ENRNN":  # the eigenvalue normalization switched on
        layer.parametrizations.weight_hh_l0[0].update_latch(layer.parametrizations.weight_hh_l0.original1 * 10)
        assert layer.parametrizations.weight_hh_l0[0].latched()
    model = Group([Branch(layer)]).eval()
    path = tmp_path / "m.onnx"
    session = export(model, x, path)
    check(session, model, x, output_names(model.branches))
    # B is an initializer of the graph (its value; a complex B as the real matrix acting on
    # [Re h, Im h], which the exporter's optimizer folds), its parameters are not
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    assert not any("original" in n or "theta" in n for n in inits), sorted(inits)
    B = layer.weight_hh_l0.detach()
    if B.is_complex():
        B = torch.cat([torch.cat([B.real, B.imag], 1), torch.cat([-B.imag, B.real], 1)])
    assert any(v.shape == B.shape and np.allclose(v, B.numpy(), rtol=0, atol=1e-6) for v in inits.values())


def test_loaded_tensors_are_folded_and_a_replaced_parameter_is_refused(tmp_path):
    layer = mr.ExpRNN(3, 4)
    state = {k: v.clone() + 0.1 for k, v in layer.state_dict().items()}
    layer.load_state_dict(state, assign=True)  # new tensors (an unpickled layer), no forward call since
    model = Group([Branch(layer)]).eval()
    x = torch.randn(T0, B0, 3)
    check(export(model, x, tmp_path / "loaded.onnx"), model, x, output_names(model.branches))
    plist = layer.parametrizations.weight_hh_l0
    plist.original = torch.nn.Parameter(plist.original.detach() + 0.1)  # replaced by hand, no forward since
    with pytest.raises(
        Exception,
        match=r"cannot fold the recurrent matrix into the exported graph: "
        r"original changed since the layer last ran",
    ):
        torch.onnx.export(Group([Branch(layer)]).eval(), (torch.randn(T0, B0, 3),), tmp_path / "m.onnx", verbose=False)
    layer(torch.randn(T0, B0, 3))  # one forward call: the export reads the new tensors
    model = Group([Branch(layer)]).eval()
    x = torch.randn(T0, B0, 3)
    check(export(model, x, tmp_path / "m.onnx"), model, x, output_names(model.branches))


def test_a_forced_backend_without_onnx_translation_is_refused(tmp_path):
    layer = mr.AdamLSTM(3, 4)
    layer.backend = "compiled_loop"
    with pytest.raises(Exception, match=r"backend 'compiled_loop' cannot run under torch.onnx.export"):
        torch.onnx.export(Group([Branch(layer)]).eval(), (torch.randn(T0, B0, 3),), tmp_path / "m.onnx", verbose=False)


class CellLoop(nn.Module):
    """The cells of torch.nn's idiom: a Python loop over the steps (unrolled by the export)."""

    def __init__(self, cells):
        super().__init__()
        self.cells = nn.ModuleList(cells)

    def forward(self, x):
        outs = []
        for cell in self.cells:
            state = None
            for t in range(x.shape[0]):
                state = cell(x[t], state)
            outs.append(state[0] if isinstance(state, tuple) else state)
        return tuple(outs)


def test_cells(tmp_path):
    torch.manual_seed(3)
    cells = [mr.cell_class(n)(3, 4) for n in ("AdamLSTMCell", "NesterovGRUCell", "RestartMomentumRNNCell")]
    model = CellLoop(cells).eval()
    x = torch.randn(T0, B0, 3)
    check(export(model, x, tmp_path / "m.onnx"), model, x, [f"{type(c).__name__} h" for c in cells])


def test_other_traces_leave_the_recorded_parameters_alone(tmp_path):
    # torch.export / torch.compile trace the layer with fake or symbolic tensors: an ONNX export
    # after them (no eager call in between) still folds B from the real parameters
    layer = mr.AdamDTRIV(3, 4)
    model = Group([Branch(layer)]).eval()
    x = torch.randn(T0, B0, 3)
    torch.compile(model, backend="eager", fullgraph=True)(x)
    torch.export.export(model, (x,))
    _modify_in_place(layer)
    check(export(model, x, tmp_path / "m.onnx"), model, x, output_names(model.branches))


def test_plain_layer_forced_native_exports_the_onnx_operator(tmp_path):
    # torch.nn's way for the plain cells: ONNX's own LSTM operator (the sequence length fixed)
    layer = mr.LSTM(3, 4, num_layers=2)
    layer.backend = "native"
    model = Group([Branch(layer)]).eval()
    x = torch.randn(T0, B0, 3)
    path = tmp_path / "m.onnx"
    check(export(model, x, path), model, x, output_names(model.branches))
    assert "LSTM" in {n.op_type for n in onnx.load(str(path)).graph.node}


def test_strict_torch_export_is_not_refused(tmp_path):
    # only torch.onnx.export's fallback to a strict capture is refused, never torch.export's own
    layer = mr.MomentumDTRIV(3, 4)
    model = Group([Branch(layer)]).eval()
    x = torch.randn(T0, B0, 3)
    export(model, x, tmp_path / "m.onnx")
    program = torch.export.export(model, (x,), strict=True)
    with torch.no_grad():
        for a, b in zip(program.module()(x), model(x)):
            torch.testing.assert_close(a, b)


def test_projections_and_unpickled_layers_export(tmp_path):
    """An LSTM with projections (every scheme's drive) and a layer loaded from a whole-model pickle
    (weights-only, rebuilt from its arguments and state dict) export like the others."""
    import io

    torch.manual_seed(0)
    layers = [mr.build_layer("lstm", kind, 3, 5, proj_size=2) for kind in KINDS]
    buf = io.BytesIO()
    torch.save(mr.AdamDTRIV(3, 4), buf)
    buf.seek(0)
    with torch.serialization.safe_globals([mr.AdamDTRIV]):
        layers.append(torch.load(buf))
    model = Group([Branch(layer) for layer in layers]).eval()
    x = torch.randn(T0, B0, 3)
    session = export(model, x, tmp_path / "m.onnx", dynamic_shapes=({0: torch.export.Dim("T")},))
    check(session, model, x, output_names(model.branches))
    x = torch.randn(3 * T0, B0, 3)
    check(session, model, x, output_names(model.branches))
