"""Before / after: the same layers from two source trees (e.g. a checkout of main and your working
tree), timed in interleaved rounds, one fresh process per tree and round (forward + backward,
median of ``--repeat`` runs after a warm-up). A ratio is the median over rounds of
``time(new) / time(base)``: the drift of a shared machine cancels round by round.

    git worktree add /tmp/base main
    python benchmarks/compare_trees.py --base /tmp/base/src --new src --threads 1

Cases: the LSTM host with every scheme at the sequential-MNIST, PTB and long-sequence shapes of
``speed.py``, and the orthogonal hosts with every scheme at the permuted-MNIST shape of
``orthogonal_speed.py``. ``--cases`` filters them by substring.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

GATED_SHAPES = {
    "smnist128": (784, 128, 1, 128),
    "smnist256": (784, 128, 1, 256),
    "ptb": (70, 20, 400, 1150),
    "long": (20000, 8, 1, 128),
}
GATED_HP = {
    "none": {},
    "heavy_ball": {"mu": 0.6, "epsilon": 0.6},
    "restart": {"epsilon": 1.0, "restart": 2},
    "adam": {"mu": 0.6, "epsilon": 0.6, "beta": 0.1},
    "rmsprop": {"epsilon": 0.6, "beta": 0.9},
    "nesterov": {"epsilon": 1.0, "restart": 2},
}
ORTH_HP = {
    "none": {},
    "heavy_ball": {"mu": 0.6, "epsilon": 0.9},
    "adam": {"mu": 0.6, "epsilon": 0.9, "beta": 0.01},
    "rmsprop": {"epsilon": 0.9, "beta": 0.01},
    "restart": {"epsilon": 0.9, "restart": 40},
}


def cases():
    out = []
    for shape, dims in GATED_SHAPES.items():
        for kind, hp in GATED_HP.items():
            out.append({"name": f"lstm/{kind}/{shape}", "host": "lstm", "kind": kind, "dims": dims, "hp": hp})
    for host in ("exprnn", "dtriv", "scornn", "scurnn"):
        for kind, hp in ORTH_HP.items():
            out.append(
                {"name": f"{host}/{kind}/pmnist170", "host": host, "kind": kind, "dims": (784, 128, 1, 170), "hp": hp}
            )
    return out


WORKER = r"""
import json, statistics, sys, time, torch
torch.set_num_threads(%(threads)d)
import momentumrnn as mr
case = json.loads(%(case)r)
T, B, I, H = case["dims"]
torch.manual_seed(0)
layer = mr.build_layer(case["host"], case["kind"], I, H, **case["hp"])
x = torch.randn(T, B, I)
def run():
    out, _ = layer(x)
    out.sum().backward()
run()
times = []
for _ in range(%(repeat)d):
    t0 = time.perf_counter(); run(); times.append(time.perf_counter() - t0)
print(json.dumps(statistics.median(times)))
"""


def time_in(src, case, threads, repeat):
    code = WORKER % {"threads": threads, "case": json.dumps(case), "repeat": repeat}
    env = dict(os.environ, PYTHONPATH=os.path.abspath(src), OMP_NUM_THREADS=str(threads))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="the 'before' tree's src directory")
    ap.add_argument("--new", default=os.path.join(os.path.dirname(__file__), "..", "src"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cases", default="", help="comma list of substrings selecting cases")
    args = ap.parse_args(argv)
    wanted = [c for c in cases() if not args.cases or any(s in c["name"] for s in args.cases.split(","))]
    print("| case | base (s) | new (s) | new / base |\n| --- | --- | --- | --- |", flush=True)
    for case in wanted:
        ratios, base_t, new_t = [], [], []
        for _ in range(args.rounds):
            b = time_in(args.base, case, args.threads, args.repeat)
            n = time_in(args.new, case, args.threads, args.repeat)
            base_t.append(b)
            new_t.append(n)
            ratios.append(n / b)
        print(
            f"| {case['name']} | {statistics.median(base_t):.3f} | {statistics.median(new_t):.3f} | "
            f"{statistics.median(ratios):.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
