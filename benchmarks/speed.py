"""Speed and memory of the momentum layers, as ratios measured side by side in one run.

For each shape and scheme: forward + backward time of our layer, of the matching ``torch.nn``
module (native kernel) and of a faithful per-step loop of the authors' cell (Python loop, autograd
per op), the peak memory of one forward + backward (resident set growth, each case in its own
process), and the operator calls per time step of our layer, forward and backward (ATen calls
dispatched from Python, marginal per step: a proxy for kernel launches on a GPU; see opcount.py).

    python benchmarks/speed.py                 # all shapes (about 10 minutes on 2 cores)
    python benchmarks/speed.py --quick         # smaller repeats, no long-sequence case
    python benchmarks/speed.py --shapes smnist128 --host gru --markdown
    python benchmarks/speed.py --backend fused # force a backend (default: the dispatch table's)

Times are medians over ``--repeat`` rounds after one warm-up; in each round native, ours and the
authors' loop run one after the other (interleaved), so that a change of the machine's load moves
all of them. Ratios are what to read.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

import momentumrnn as mr
from momentumrnn import backends
from momentumrnn.schemes import MomentumState

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import opcount

SHAPES = {
    # name: (T, B, input, hidden)
    "smnist128": (784, 128, 1, 128),
    "smnist256": (784, 128, 1, 256),
    "ptb": (70, 20, 400, 1150),
    "long": (20000, 8, 1, 128),
}
SCHEMES = ["none", "heavy_ball", "restart", "adam", "rmsprop", "nesterov"]
HP = {  # the paper's sequential-MNIST settings (docs/equations.md, section 7)
    "none": {},
    "heavy_ball": {"mu": 0.6, "epsilon": 0.6},
    "restart": {"epsilon": 1.0, "restart": 2},
    "adam": {"mu": 0.6, "epsilon": 0.6, "beta": 0.1},
    "rmsprop": {"epsilon": 0.6, "beta": 0.9},
    "nesterov": {"epsilon": 1.0, "restart": 2},
}
NATIVE = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class AuthorsLoop(nn.Module):
    """The authors' way: a Python loop over time steps, calling the momentum cell (one layer)."""

    def __init__(self, host, kind, input_size, hidden_size):
        super().__init__()
        self.ref = mr.build_layer(host, "none", input_size, hidden_size)  # just the parameters
        self.host, self.kind, self.hp = host, kind, HP[kind]

    def forward(self, x):
        L, H = self.ref, self.ref.hidden_size
        w_ih, w_hh, b_ih, b_hh = L.weight_ih_l0, L.weight_hh_l0, L.bias_ih_l0, L.bias_hh_l0
        B = x.shape[1]
        h = x.new_zeros(B, H)
        c = x.new_zeros(B, H)
        v = m = p = x.new_zeros(B, w_ih.shape[0])
        hp, k, outs = self.hp, 0, []
        for x_t in x.unbind(0):  # unbind, not x[t]: indexing's backward allocates a full gradient
            u = F.linear(x_t, w_ih, b_ih)
            r = F.linear(h, w_hh, b_hh)
            total = None
            if self.kind == "none":
                d = u
            elif self.kind == "heavy_ball":
                v = hp["mu"] * v + hp["epsilon"] * u
                d = v
            elif self.kind in ("adam", "rmsprop"):
                m = hp["beta"] * m + (1 - hp["beta"]) * u * u
                v = (hp["mu"] * v if self.kind == "adam" else 0) + hp["epsilon"] * u
                d = v / torch.sqrt(m + 1e-16)
            else:
                k = k % hp["restart"] + 1 if hp["restart"] else k + 1
                mu_k = (k - 1) / (k + 2)
                if self.kind == "restart":
                    v = mu_k * v + hp["epsilon"] * u
                    d = v
                else:
                    p_new = r - hp["epsilon"] * u
                    total = p_new + mu_k * (p_new - p)
                    p = p_new
            pre = total if total is not None else d + r
            if self.host == "lstm":
                i, f, g, o = pre.chunk(4, 1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
            elif self.host == "rnn":
                h = torch.tanh(pre)
            else:
                raise NotImplementedError("the authors' loop exists for LSTM and RNN only")
            outs.append(h)
        return torch.stack(outs), None


def build(which, host, kind, shape, backend=None):
    _T, _B, I, H = SHAPES[shape]
    torch.manual_seed(0)
    if which == "native":
        return NATIVE[host](I, H)
    if which == "authors":
        return AuthorsLoop(host, kind, I, H)
    layer = mr.build_layer(host, kind, I, H, **HP[kind])
    layer.backend = backend
    return layer


def backend_of(layer, device="cpu"):
    """The backend a layer runs on (forced, or the dispatch table's choice)."""
    drive = backends.drive_of(layer, MomentumState(), layer.hyper_parameters())
    return layer.backend or backends.select(layer.family, drive, device)


def fwd_bwd(model, x):
    out, _ = model(x)
    out.sum().backward()


def time_case(model, x, repeat):
    return time_interleaved([model], x, repeat)[0]


def time_interleaved(models, x, repeat, repeats=None):
    """Median forward + backward time of each model, the models run in turn in each round."""
    for m in models:
        fwd_bwd(m, x)  # warm-up
    times = [[] for _ in models]
    for r in range(repeat):
        for i, m in enumerate(models):
            if repeats is not None and r >= repeats[i]:
                continue
            t0 = time.perf_counter()
            fwd_bwd(m, x)
            times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes():
    # VmHWM belongs to this address space; ru_maxrss can carry the parent's peak over the fork.
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_memory_child(which, host, kind, shape):
    """Runs in a fresh process: resident-set growth of one forward + backward, in bytes."""
    T, B, I, _H = SHAPES[shape]
    model = build(which, host, kind, shape)
    x = torch.randn(T, B, I)
    base = _rss_bytes()
    try:  # reset the high-water mark to the current resident set (Linux)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    fwd_bwd(model, x)
    return max(_peak_rss_bytes() - base, 0)


def peak_memory(which, host, kind, shape):
    code = (
        f"import json,sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); import speed; "
        f"print(json.dumps(speed.peak_memory_child({which!r}, {host!r}, {kind!r}, {shape!r})))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default=None, help=f"comma list from {','.join(SHAPES)} (default: all)")
    ap.add_argument("--schemes", default=",".join(SCHEMES))
    ap.add_argument("--host", default="lstm", choices=list(NATIVE))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="repeat 1, no long-sequence case, no memory")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--no-authors", action="store_true", help="skip the authors' per-step loop")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--backend", default=None, help="force our layers' backend (default: the dispatch table's)")
    ap.add_argument("--no-ops", action="store_true", help="skip the operator counts")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # for the memory subprocesses
    shapes = args.shapes.split(",") if args.shapes else (["smnist128", "ptb"] if args.quick else list(SHAPES))
    for s in shapes:
        if s not in SHAPES:
            ap.error(f"unknown shape {s!r}; choose from {', '.join(SHAPES)}")
    schemes = args.schemes.split(",")
    repeat = 1 if args.quick else args.repeat
    memory = not (args.quick or args.no_memory)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, host {args.host}", flush=True)
    rows = []
    for shape in shapes:
        T, B, I, H = SHAPES[shape]
        x = torch.randn(T, B, I)
        native = build("native", args.host, "none", shape)
        native_m = peak_memory("native", args.host, "none", shape) if memory else None
        for kind in schemes:
            ours = build("ours", args.host, kind, shape, args.backend)
            models, reps = [native, ours], [repeat, repeat]
            if not args.no_authors and args.host != "gru":
                models.append(build("authors", args.host, kind, shape))
                # the authors' loop at T = 20,000 (5-6 s per forward + backward here) is timed once
                reps.append(1 if shape == "long" else max(1, repeat // 2))
            times = time_interleaved(models, x, repeat, reps)
            native_t, ours_t = times[:2]
            authors_t = times[2] if len(times) > 2 else None
            ours_m = peak_memory("ours", args.host, kind, shape) if memory else None
            ops = (None, None)
            if not args.no_ops:

                def make(kind=kind, shape=shape):
                    return build("ours", args.host, kind, shape, args.backend)

                ops = opcount.per_step(make, B, I)
            row = {
                "shape": f"{shape} (T={T}, B={B}, I={I}, H={H})",
                "scheme": kind,
                "backend": backend_of(ours),
                "ours_s": ours_t,
                "native_s": native_t,
                "authors_s": authors_t,
                "vs_native": ours_t / native_t,
                "speedup_vs_authors": authors_t / ours_t if authors_t else None,
                "mem_vs_native": ours_m / native_m if memory and native_m else None,
                "ours_mb": ours_m / 2**20 if memory else None,
                "ops_fwd": ops[0],
                "ops_bwd": ops[1],
            }
            rows.append(row)
            fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
            print(
                f"{row['shape']:<40} {kind:<11} {row['backend']:<17} ours {ours_t:7.3f}s  native {native_t:7.3f}s  "
                f"x{row['vs_native']:.2f} native  authors' loop {fmt(authors_t, '.3f')}s "
                f"(ours {fmt(row['speedup_vs_authors'], '.2f')}x faster)  "
                f"peak mem x{fmt(row['mem_vs_native'], '.2f')} native ({fmt(row['ours_mb'], '.0f')} MB)  "
                f"ops/step {fmt(ops[0], '.1f')} fwd {fmt(ops[1], '.1f')} bwd",
                flush=True,
            )
    if args.markdown:
        print(
            "\n| shape | scheme | backend | ours / native | authors' loop / ours | peak memory ours / native "
            "| operator calls / step (fwd, bwd) |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for r in rows:
            f = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
            o = "-" if r["ops_fwd"] is None else f"{r['ops_fwd']:.1f}, {r['ops_bwd']:.1f}"
            print(
                f"| {r['shape']} | {r['scheme']} | {r['backend']} | {f(r['vs_native'])} | "
                f"{f(r['speedup_vs_authors'])} | {f(r['mem_vs_native'])} | {o} |"
            )


if __name__ == "__main__":
    main()
