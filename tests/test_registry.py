"""The registry and the naming rule: one explicit class per host x scheme (declared in
momentumrnn/layers.py and momentumrnn/cells.py, kept in sync with the scheme table here), the
papers' names as aliases, and scheme names only in the scheme table."""

import ast
import itertools
import os
import re
from pathlib import Path

import pytest
import torch

import momentumrnn as mr
from momentumrnn import registry

SRC = os.path.join(os.path.dirname(mr.__file__))


def _declared(path):
    tree = ast.parse(Path(path).read_text())
    classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    aliases = {
        n.targets[0].id: n.value.id
        for n in tree.body
        if isinstance(n, ast.Assign) and isinstance(n.value, ast.Name) and isinstance(n.targets[0], ast.Name)
    }
    return classes, aliases


def test_every_host_has_every_scheme_as_an_explicit_class():
    assert set(mr.HOSTS) == {"rnn", "lstm", "gru", "exprnn", "dtriv", "scornn", "scurnn", "enrnn"}
    expected = {registry.paper_name(h, k): (h, k) for h, k in itertools.product(mr.HOSTS, mr.SCHEME_KINDS)}
    assert {n: (h, k) for n, (h, k, _) in mr.LAYER_NAMES.items()} == expected
    classes, aliases = _declared(os.path.join(SRC, "layers.py"))
    assert classes == set(expected)  # the explicit statements IDEs and type checkers see
    assert aliases == mr.LAYER_ALIASES
    for name, (host, kind) in expected.items():
        cls = getattr(mr, name)
        assert cls is mr.layer_class(name) and cls.__name__ == name
        assert cls.host == host and cls.scheme_kind == kind
        assert mr.SCHEMES[kind].summary in cls.__doc__
        layer = mr.build_layer(host, kind, 2, 4)
        assert isinstance(layer, cls) and layer.scheme.kind == kind


def test_the_papers_names_are_aliases():
    assert mr.SRLSTM is mr.NesterovLSTM and mr.layer_class("SRGRU") is mr.NesterovGRU  # the paper's SRLSTM
    assert mr.SRDTRIV is mr.RestartMomentumDTRIV  # the authors' SRDTRIV
    assert mr.layer_class("SRScuRNN") is mr.RestartMomentumScuRNN
    assert mr.SRLSTMCell is mr.NesterovLSTMCell and mr.cell_class("SRLSTMCell") is mr.NesterovLSTMCell
    for alias, name in mr.LAYER_ALIASES.items():
        assert getattr(mr, alias) is getattr(mr, name)
    # scheme aliases
    assert mr.build_layer("lstm", "sr", 2, 3).scheme.kind == "nesterov"
    assert mr.build_layer("dtriv", "momentum", 2, 3).scheme.kind == "heavy_ball"


def test_cells():
    expected = {
        registry.paper_name(h, k) + "Cell": (h, k)
        for h, k in itertools.product(("rnn", "lstm", "gru"), mr.SCHEME_KINDS)
    }
    assert expected == mr.CELL_NAMES
    classes, aliases = _declared(os.path.join(SRC, "cells.py"))
    assert classes - {"MomentumCellBase"} == set(expected)
    assert aliases == mr.CELL_ALIASES
    assert mr.cells.__all__[4:] == [*mr.CELL_NAMES, *mr.CELL_ALIASES]  # listed there for type checkers
    with pytest.raises(ValueError, match="unknown cell 'LSTMCel'"):
        mr.cell_class("LSTMCel")


def test_unknown_names():
    with pytest.raises(ValueError, match="unknown host 'transformer'; expected one of rnn, lstm"):
        mr.build_layer("transformer", "adam", 3, 4)
    with pytest.raises(ValueError, match="unknown momentum scheme 'adagrad'"):
        mr.build_layer("enrnn", "adagrad", 3, 4)
    with pytest.raises(ValueError, match=r"unknown layer 'MomentumTransformer'.*SRLSTM"):
        mr.layer_class("MomentumTransformer")
    with pytest.raises(TypeError, match="use a paper-named class"):
        mr.MomentumRNNBase(3, 4)


def _core_files():
    for root, dirs, files in os.walk(SRC):
        dirs[:] = [d for d in dirs if d not in ("toolkit", "__pycache__")]
        for f in files:
            if f.endswith(".py"):
                yield os.path.join(root, f)


@pytest.mark.parametrize("kind", mr.SCHEME_KINDS)
def test_scheme_names_live_in_the_table(kind):
    # Nothing in the core branches on a scheme's name: its string appears in the table only
    # (and at most one other core file).
    files = [p for p in _core_files() if re.search(rf"[\"']{kind}[\"']", Path(p).read_text())]
    assert len(files) <= 2, files
    assert os.path.join(SRC, "schemes.py") in files


def test_no_core_file_over_600_lines():
    sizes = {p: len(Path(p).read_text().splitlines()) for p in _core_files()}
    assert max(sizes.values()) <= 600, max(sizes.items(), key=lambda kv: kv[1])


def test_generated_docstrings_show_the_loop():
    doc = mr.NesterovGRU.__doc__
    assert "p_new = r - epsilon * u" in doc and "drop-in replacement for ``torch.nn.GRU``" in doc
    assert "mu=0.6" not in mr.AdamDTRIV.__doc__ and "OrthogonalRNN" in mr.AdamDTRIV.__doc__
    assert "short_size" in mr.MomentumENRNN.__doc__
    assert torch.nn.LSTM.__name__ in mr.MomentumLSTM.__doc__
