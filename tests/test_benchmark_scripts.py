"""The benchmark scripts run (tiny shapes) and report every layer: a broken import or a renamed
API would otherwise only show when someone next measures. No timings are asserted."""

import os
import subprocess
import sys

import pytest
import torch

import momentumrnn as mr

BENCH = os.path.join(os.path.dirname(__file__), "..", "benchmarks")
sys.path.insert(0, BENCH)


def _run(*args):
    res = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=BENCH, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def test_orthogonal_speed_covers_the_modrelu_row():
    out = _run("orthogonal_speed.py", "--quick", "--hosts", "enrnn", "scornn", "--flush-denormal")
    for name in (
        "ENRNN",
        "MomentumENRNN",
        "AdamENRNN",
        "RMSPropENRNN",
        "RestartMomentumENRNN",
        "NesterovENRNN",
        "NesterovScoRNN",
        "authors momentum",
        "nn.RNN",
    ):
        assert f"| {name} |" in out, name


@pytest.mark.parametrize("scheme", ["heavy_ball", "adam", "nesterov"])
def test_opcount_per_step(scheme):
    import opcount

    hp = {
        "heavy_ball": {"mu": 0.6, "epsilon": 0.6},
        "adam": {"mu": 0.6, "epsilon": 0.6, "beta": 0.1},
        "nesterov": {"epsilon": 1.0, "restart": 2},
    }[scheme]
    fwd, bwd = opcount.per_step(lambda: mr.build_layer("lstm", scheme, 2, 8, **hp), B=3, I=2, T1=8, T2=24)
    # every backend the CPU picks runs the time loop inside one operator: O(1) calls per step
    assert 0 <= fwd < 2 and 0 <= bwd < 2


def test_opcount_sees_a_python_loop():
    import opcount

    def make():
        layer = mr.build_layer("lstm", "adam", 2, 8)
        layer.backend = "stepwise"  # the literal loop: several operator calls per step
        return layer

    fwd, bwd = opcount.per_step(make, B=3, I=2, T1=8, T2=24)
    assert fwd >= 5 and bwd >= 5


def test_compare_trees_lists_the_cases():
    import compare_trees

    names = [c["name"] for c in compare_trees.cases()]
    assert "lstm/adam/smnist128" in names and "scurnn/restart/pmnist170" in names


def test_speed_builds_every_scheme():
    import speed

    torch.manual_seed(0)
    for kind in speed.SCHEMES:
        layer = mr.build_layer("lstm", kind, 1, 4, **speed.HP[kind])
        assert speed.backend_of(layer) in mr.backends.BACKENDS


def test_projection_reports_every_scheme():
    out = _run("projection.py", "--shape", "4", "2", "2", "4", "2", "--rounds", "1", "--markdown")
    for name in (
        "nn.LSTM(proj_size)",
        "LSTM",
        "MomentumLSTM",
        "AdamLSTM",
        "RMSPropLSTM",
        "RestartMomentumLSTM",
        "NesterovLSTM",
    ):
        assert f"| {name} |" in out, name
    assert "| AdamLSTM | fused |" in out  # the table's capability fallback (no projection in compiled_loop)


def test_onnx_speed_runs_every_model():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    out = _run(
        "onnx_speed.py",
        "--host",
        "gru",
        "--T",
        "3",
        "--B",
        "2",
        "--I",
        "2",
        "--H",
        "4",
        "--calls",
        "1",
        "--repeat",
        "1",
        "--schemes",
        "none",
        "adam",
    )
    for name in ("torch.nn.GRU", "GRU", "AdamGRU"):
        assert f"| {name} |" in out, name


def test_small_times_whole_training_steps_of_every_scheme():
    out = _run("small.py", "--shapes", "6x3x4,5x2x3", "--steps", "1", "--rounds", "1", "--threads", "1", "--markdown")
    import small
    import speed

    for scheme in speed.SCHEMES:
        for shape in ("| 6 | 3 | 4 |", "| 5 | 2 | 3 |"):
            assert f"{shape} {scheme} |" in out, (shape, scheme)
        assert f"| {scheme} |" in out  # the fixed cost per call
    assert "| torch.nn |" in out
    # one step updates the weights (the optimizer ran) for every scheme
    x, y = torch.randn(4, 2, 1), torch.tensor([1, 7])
    for scheme in ["torch.nn", *speed.SCHEMES]:
        model = small.build("lstm", scheme, 1, 3)
        before = [p.detach().clone() for p in model.parameters()]
        small.trainer(model, x, y)()
        assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters())), scheme


def test_versus_reports_both_trees():
    src = os.path.join(BENCH, "..", "src")
    out = _run(
        "versus.py",
        "--base",
        src,
        "--shapes",
        "ptb",
        "--schemes",
        "nesterov",
        "--rounds",
        "1",
        "--repeat",
        "1",
        "--markdown",
        "--system-allocator",
    )
    assert "| ptb | nesterov |" in out and "after / before" in out
