"""Ours / torch.nn, and before / after: the same shapes and schemes from one or two source trees,
side by side in one sitting.

Each round starts one fresh process per tree (the order alternates); in it the torch.nn module
and our layers of every scheme run forward + backward in turn, ``--repeat`` times each after a
warm-up, and each gets its median (``--stat min``: its fastest run, the least disturbed on a busy
machine). A ratio is the median over rounds of the per-round ratio, so the machine's drift cancels
round by round.

    git worktree add /tmp/base <commit>          # the "before"
    python benchmarks/versus.py --base /tmp/base/src --threads 1 --markdown
    python benchmarks/versus.py --shapes ptb --threads 2 --isa avx2   # as on a CPU without AVX-512

``--isa avx2`` runs the workers as an AVX2-only CPU would (torch's kernels, oneDNN's and MKL's
limited to AVX2: ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2``;
the C++ loop builds its AVX2 variant). Freed memory is kept by default (glibc's ``mallopt``, as
every process of the toolkit does: momentumrnn.toolkit.allocator; Linux / glibc only);
``--system-allocator`` measures glibc's default instead, where every call maps its workspaces afresh.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

WORKER = r"""
import json, statistics, sys, time
cfg = json.loads(sys.argv[1])
if cfg["keep"]:  # what momentumrnn.toolkit.allocator does (inline: the 'before' tree may predate it)
    import ctypes
    libc = ctypes.CDLL("libc.so.6")
    assert libc.mallopt(-3, 2 ** 31 - 1) == 1 and libc.mallopt(-1, 2 ** 31 - 1) == 1
import torch
torch.set_num_threads(cfg["threads"])
import momentumrnn as mr
sys.path.insert(0, cfg["here"])
from speed import HP, NATIVE, SHAPES
T, B, I, H = SHAPES[cfg["shape"]]
torch.manual_seed(0)
x = torch.randn(T, B, I)
models = {"torch.nn": NATIVE[cfg["host"]](I, H)}
for k in cfg["schemes"]:
    torch.manual_seed(0)
    models[k] = mr.build_layer(cfg["host"], k, I, H, **HP[k])
def run(m):
    out, _ = m(x)
    out.sum().backward()
for m in models.values():
    run(m)
times = {k: [] for k in models}
for _ in range(cfg["repeat"]):
    for k, m in models.items():
        t0 = time.perf_counter()
        run(m)
        times[k].append(time.perf_counter() - t0)
pick = min if cfg["stat"] == "min" else statistics.median
print(json.dumps({k: pick(v) for k, v in times.items()}))
"""

AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def run_tree(src: str, cfg: dict, isa: str) -> dict:
    env = dict(os.environ, PYTHONPATH=os.path.abspath(src), OMP_NUM_THREADS=str(cfg["threads"]))
    if isa == "avx2":
        env.update(AVX2)
    res = subprocess.run([sys.executable, "-c", WORKER, json.dumps(cfg)], capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise SystemExit(f"worker failed ({src}):\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None):
    sys.path.insert(0, HERE)
    from speed import HP, NATIVE, SHAPES

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--new", default=os.path.join(HERE, "..", "src"), help="the tree to measure (default: this one)")
    ap.add_argument("--base", default=None, help="a 'before' tree's src directory, measured alongside")
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--schemes", default="adam,rmsprop,nesterov")
    ap.add_argument("--host", default="lstm", choices=list(NATIVE))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--stat", default="median", choices=["median", "min"])
    ap.add_argument(
        "--isa",
        default="native",
        choices=["native", "avx2"],
        help="avx2: run as a CPU without AVX-512 would (see above)",
    )
    ap.add_argument("--system-allocator", action="store_true", help="glibc's default instead of freed memory kept")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    schemes = args.schemes.split(",")
    for s in schemes:
        if s not in HP:
            ap.error(f"unknown scheme {s!r}; choose from {', '.join(HP)}")
    trees = {"new": args.new} if not args.base else {"base": args.base, "new": args.new}
    print(
        f"# {args.host}, {args.threads} thread(s), isa {args.isa}, "
        f"{'glibc default allocator' if args.system_allocator else 'freed memory kept'}, "
        f"{args.rounds} rounds x {args.repeat} ({args.stat})",
        flush=True,
    )
    rows = []
    for shape in args.shapes.split(","):
        if shape not in SHAPES:
            ap.error(f"unknown shape {shape!r}; choose from {', '.join(SHAPES)}")
        cfg = {
            "shape": shape,
            "schemes": schemes,
            "host": args.host,
            "threads": args.threads,
            "repeat": args.repeat,
            "stat": args.stat,
            "keep": not args.system_allocator,
            "here": HERE,
        }
        got = {name: [] for name in trees}
        for r in range(args.rounds):
            order = list(trees) if r % 2 == 0 else list(reversed(trees))
            for name in order:
                got[name].append(run_tree(trees[name], cfg, args.isa))
        for s in schemes:
            row = {"shape": shape, "scheme": s}
            for name in trees:
                row[name] = statistics.median(d[s] / d["torch.nn"] for d in got[name])
                row[name + "_s"] = statistics.median(d[s] for d in got[name])
            row["native_s"] = statistics.median(d["torch.nn"] for d in got["new"])
            if "base" in trees:
                row["new_vs_base"] = statistics.median(n[s] / b[s] for b, n in zip(got["base"], got["new"]))
            rows.append(row)
            base = f"  before x{row['base']:.2f}  after / before {row['new_vs_base']:.2f}" if "base" in trees else ""
            print(
                f"{shape:<10} {s:<11} torch.nn {row['native_s']:.3f} s  ours {row['new_s']:.3f} s  "
                f"x{row['new']:.2f} torch.nn{base}",
                flush=True,
            )
    if args.markdown:
        if "base" in trees:
            print(
                "\n| shape | scheme | before: ours / torch.nn | after: ours / torch.nn | after / before |\n"
                "| --- | --- | --- | --- | --- |"
            )
            for r in rows:
                print(f"| {r['shape']} | {r['scheme']} | {r['base']:.2f} | {r['new']:.2f} | {r['new_vs_base']:.2f} |")
        else:
            print("\n| shape | scheme | torch.nn (s) | ours (s) | ours / torch.nn |\n| --- | --- | --- | --- | --- |")
            for r in rows:
                print(f"| {r['shape']} | {r['scheme']} | {r['native_s']:.3f} | {r['new_s']:.3f} | {r['new']:.2f} |")


if __name__ == "__main__":
    main()
