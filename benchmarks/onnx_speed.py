"""Inference in onnxruntime: our layers' exports (an ONNX Scan of the literal step) against
torch.nn's (ONNX's own LSTM / GRU operator), and against eager torch, side by side in one run.

    python benchmarks/onnx_speed.py                 # LSTM host, T=100, B=32, I=32, H=128
    python benchmarks/onnx_speed.py --T 784 --B 1 --I 1 --H 128      # one long sequence
    python benchmarks/onnx_speed.py --host dtriv --H 170

Prints a Markdown table: milliseconds per forward call (median of ``--repeat`` rounds of
``--calls`` calls, the models interleaved), one onnxruntime / torch thread each by default.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import tempfile
import time
import warnings

import numpy as np
import torch
from torch import nn

import momentumrnn as mr


class _Output(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return self.layer(x)[0]


def _session(model: nn.Module, x: torch.Tensor, path: str, threads: int):
    import onnxruntime as ort

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), path, verbose=False)
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = threads
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--host",
        choices=tuple(mr.HOSTS),
        default="lstm",
        help="a host of momentumrnn (torch.nn.RNN stands beside the modReLU hosts)",
    )
    p.add_argument("--T", type=int, default=100)
    p.add_argument("--B", type=int, default=32)
    p.add_argument("--I", type=int, default=32)
    p.add_argument("--H", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--calls", type=int, default=10)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--schemes", nargs="+", default=["none", "heavy_ball", "adam", "nesterov"])
    a = p.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    x = torch.randn(a.T, a.B, a.I)
    native = {"lstm": nn.LSTM, "gru": nn.GRU}.get(a.host, nn.RNN)(a.I, a.H).eval()
    models = {f"torch.nn.{type(native).__name__}": native}
    for kind in a.schemes:
        layer = mr.build_layer(a.host, kind, a.I, a.H).eval()
        models[layer._name] = layer
    runs = {}
    with tempfile.TemporaryDirectory() as d:
        for i, (name, layer) in enumerate(models.items()):
            model = _Output(layer).eval()
            runs[name + " (onnxruntime)"] = (_session(model, x, os.path.join(d, f"{i}.onnx"), a.threads), model)
        feed = x.numpy()
        times = {name: [] for name in runs}
        eager = {name: [] for name in models}
        for _ in range(a.repeat):
            for name, (session, _model) in runs.items():
                session.run(None, {"x": feed})
                t0 = time.perf_counter()
                for _ in range(a.calls):
                    session.run(None, {"x": feed})
                times[name].append((time.perf_counter() - t0) / a.calls * 1e3)
            for name, layer in models.items():
                with torch.no_grad():
                    layer(x)
                    t0 = time.perf_counter()
                    for _ in range(a.calls):
                        layer(x)
                eager[name].append((time.perf_counter() - t0) / a.calls * 1e3)
        for name, (session, model) in runs.items():  # the same numbers as eager
            with torch.no_grad():
                want = model(x).numpy()
            got = session.run(None, {"x": feed})[0]
            assert np.abs(got - want).max() <= 1e-4 * max(1.0, float(np.abs(want).max())), name
    print(
        f"{a.host} host, T={a.T}, B={a.B}, I={a.I}, H={a.H}, {a.threads} thread(s), torch {torch.__version__}; "
        "ms per forward (median)\n"
    )
    print("| model | onnxruntime | eager torch |")
    print("| --- | --- | --- |")
    for name in models:
        print(
            f"| {name} | {statistics.median(times[name + ' (onnxruntime)']):.2f} "
            f"| {statistics.median(eager[name]):.2f} |"
        )


if __name__ == "__main__":
    main()
