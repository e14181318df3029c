"""``momentumrnn demo`` with the toolkit's allocator setting (freed memory kept, the default) and
without it (``MOMENTUMRNN_ALLOCATOR=system``), side by side: the runs alternate, each in a fresh
process; wall, user and system time and minor page faults of each process (its rusage), and a
check that both settings report the same numbers (every metric row of every run).

    python benchmarks/demo_allocator.py                       # demo at 8 epochs, 2 rounds (~5 min on 2 cores)
    python benchmarks/demo_allocator.py --epochs 2 --rounds 1 --markdown

Ratios are medians over the rounds; read them, absolute times move with the machine's load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETTINGS = {"kept (default)": {}, "system (opt-out)": {"MOMENTUMRNN_ALLOCATOR": "system"}}
_CLEAR = (
    "MOMENTUMRNN_ALLOCATOR",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_MMAP_MAX_",
    "GLIBC_TUNABLES",
)


def run_demo(out: Path, epochs: int, extra_env: dict, extra_args: list) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _CLEAR}
    env.update(extra_env)
    cmd = [
        sys.executable,
        "-m",
        "momentumrnn",
        "demo",
        "--set",
        f"train.epochs={epochs}",
        "--out",
        str(out),
        *extra_args,
    ]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    text = proc.stdout.read()
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"demo failed ({' '.join(cmd)}):\n{text}")
    memory = sorted({ln.split("memory: ", 1)[1] for ln in text.splitlines() if "  memory: " in ln})
    return {
        "wall": wall,
        "user": ru.ru_utime,
        "sys": ru.ru_stime,
        "faults": ru.ru_minflt,
        "memory": memory,
        "metrics": metrics_of(out),
    }


def metrics_of(out: Path) -> dict:
    """run directory name -> metric rows without the wall-clock column."""
    from momentumrnn.toolkit.runfiles import read_metrics

    rows = {}
    for m in sorted(out.rglob("metrics.csv")):
        rows[str(m.parent.relative_to(out))] = [
            {k: v for k, v in r.items() if k != "time_s"} for r in read_metrics(m.parent)
        ]
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another override of the demo recipe (e.g. task.train_size=200)",
    )
    args = ap.parse_args(argv)
    extra = [a for kv in args.set for a in ("--set", kv)]
    res = {name: [] for name in SETTINGS}
    with tempfile.TemporaryDirectory(prefix="demo-allocator-") as tmp:
        for r in range(args.rounds):
            order = list(SETTINGS) if r % 2 == 0 else list(reversed(SETTINGS))
            for name in order:
                out = Path(tmp) / f"{r}-{name.split()[0]}"
                res[name].append(run_demo(out, args.epochs, SETTINGS[name], extra))
                x = res[name][-1]
                print(
                    f"round {r + 1} {name:<17} wall {x['wall']:6.1f} s  user {x['user']:6.1f} s  "
                    f"sys {x['sys']:5.1f} s  minor faults {x['faults']:>10,}  "
                    f"| {x['memory'][0] if x['memory'] else ''}",
                    flush=True,
                )
    first = res["kept (default)"][0]["metrics"]
    same = all(x["metrics"] == first for runs in res.values() for x in runs)
    print(f"every metric row identical across settings and rounds: {same}")
    med = {
        name: {k: statistics.median(x[k] for x in runs) for k in ("wall", "user", "sys", "faults")}
        for name, runs in res.items()
    }
    ratio = statistics.median(b["wall"] / a["wall"] for a, b in zip(res["kept (default)"], res["system (opt-out)"]))
    if args.markdown:
        print(
            "\n| allocator | wall (s) | user (s) | sys (s) | sys / user | minor page faults |\n"
            "| --- | --- | --- | --- | --- | --- |"
        )
        for name, m in med.items():
            print(
                f"| {name} | {m['wall']:.1f} | {m['user']:.1f} | {m['sys']:.1f} | {m['sys'] / m['user']:.1%} | "
                f"{m['faults']:,.0f} |"
            )
    print(f"\nwall time, system / kept: {ratio:.2f}x (median of {args.rounds} round(s))")
    if not same:
        raise SystemExit("the two settings reported different numbers")


if __name__ == "__main__":
    main()
