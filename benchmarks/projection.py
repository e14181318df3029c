"""LSTM with projections (``proj_size``): forward + backward time of every LSTM-host scheme against
``torch.nn.LSTM(proj_size=P)``, as ratios measured side by side in one run.

    python benchmarks/projection.py                      # T=200, N=32, I=32, H=256, P=64, one thread
    python benchmarks/projection.py --shape 100 16 8 64 16 --rounds 3 --markdown
    python benchmarks/projection.py --clock wall         # wall time (an idle machine) instead of CPU time

Each round runs ``torch.nn.LSTM(proj_size=P)``, ``torch.nn.LSTM`` without projection (for scale) and
every scheme once, one after the other (interleaved), after one warm-up; the ratio is the median over
rounds of (ours / ``torch.nn.LSTM(proj_size=P)``) within a round. ``--clock cpu`` (default) times the
CPU time of this process, less sensitive to other processes on a shared machine than wall time.
The backend column is the one the dispatch table picks (``momentumrnn.backends.choose``).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from torch import nn

import momentumrnn as mr
from momentumrnn import backends
from momentumrnn.schemes import MomentumState

SCHEMES = ["none", "heavy_ball", "restart", "adam", "rmsprop", "nesterov"]
HP = {  # the paper's sequential-MNIST settings (docs/equations.md, section 7)
    "none": {},
    "heavy_ball": {"mu": 0.6, "epsilon": 0.6},
    "restart": {"epsilon": 1.0, "restart": 2},
    "adam": {"mu": 0.6, "epsilon": 0.6, "beta": 0.1},
    "rmsprop": {"epsilon": 0.6, "beta": 0.9},
    "nesterov": {"epsilon": 1.0, "restart": 2},
}


def fwd_bwd(model, x):
    def run():
        xx = x.detach().requires_grad_()
        model(xx)[0].sum().backward()

    return run


def measure(T, N, I, H, P, rounds, clock, kinds=SCHEMES):
    torch.manual_seed(0)
    x = torch.randn(T, N, I)
    cases = {
        "nn.LSTM(proj_size)": ("native", fwd_bwd(nn.LSTM(I, H, proj_size=P), x)),
        "nn.LSTM (no projection)": ("native", fwd_bwd(nn.LSTM(I, H), x)),
    }
    for kind in kinds:
        layer = mr.build_layer("lstm", kind, I, H, proj_size=P, **HP[kind])
        name = backends.choose(layer, x, MomentumState(), layer.hyper_parameters())
        cases[mr.registry.paper_name("lstm", kind)] = (name, fwd_bwd(layer, x))
    tick = time.process_time if clock == "cpu" else time.perf_counter
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's "LSTM with projections is not supported with oneDNN"
        for _, run in cases.values():
            run()
        times = {k: [] for k in cases}
        for _ in range(rounds):
            for k, (_, run) in cases.items():
                t = tick()
                run()
                times[k].append(tick() - t)
    base = times["nn.LSTM(proj_size)"]
    return [
        (k, cases[k][0], statistics.median(ts), statistics.median(a / b for a, b in zip(ts, base)))
        for k, ts in times.items()
    ]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=5, default=[200, 32, 32, 256, 64], metavar=("T", "N", "I", "H", "P"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    T, N, I, H, P = args.shape
    rows = measure(T, N, I, H, P, args.rounds, args.clock)
    print(
        f"T={T}, N={N}, I={I}, H={H}, proj_size={P}; {args.threads} thread(s), {args.clock} time, "
        f"median of {args.rounds} rounds"
    )
    if args.markdown:
        print("| layer | backend | ms | / nn.LSTM(proj_size) |\n| --- | --- | --- | --- |")
    for name, backend, t, ratio in rows:
        if args.markdown:
            print(f"| {name} | {backend} | {t * 1e3:.1f} | {ratio:.2f} |")
        else:
            print(f"{name:26s} {backend:18s} {t * 1e3:9.1f} ms  {ratio:5.2f}")


if __name__ == "__main__":
    main()
