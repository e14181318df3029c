"""Forward and backward apart, native LSTM against our Adam and Nesterov LSTMs at one shape, each
model alone in turn (no other benchmark case around it): the view to read next to ``speed.py`` when
the allocator matters. Run it twice, with glibc's default and with freed memory kept:

    python benchmarks/allocator.py --threads 1
    MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=17179869184 python benchmarks/allocator.py --threads 1

A forward + backward at sMNIST allocates 0.5-1.5 GB of workspace in blocks above glibc's mmap
threshold, so by default every call maps fresh pages; with memory kept (as under jemalloc or
tcmalloc) that cost is gone, and the ratios change (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

import momentumrnn as mr

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from speed import HP, SHAPES


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="smnist128", choices=list(SHAPES))
    ap.add_argument("--schemes", default="adam,rmsprop,nesterov")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    T, B, I, H = SHAPES[args.shape]
    torch.manual_seed(0)
    x = torch.randn(T, B, I)
    models = {"native": torch.nn.LSTM(I, H)}
    for kind in args.schemes.split(","):
        models[kind] = mr.build_layer("lstm", kind, I, H, **HP[kind])
    times = {k: ([], []) for k in models}
    for r in range(args.rounds + 1):  # round 0: warm-up
        for name, m in models.items():
            t0 = time.perf_counter()
            out, _ = m(x)
            t1 = time.perf_counter()
            out.sum().backward()
            t2 = time.perf_counter()
            if r:
                times[name][0].append(t1 - t0)
                times[name][1].append(t2 - t1)
    keep = "kept" if os.environ.get("MALLOC_MMAP_THRESHOLD_") else "glibc default"
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {args.shape}, freed memory: {keep}")
    print("| model | forward (s) | backward (s) | total / native |\n| --- | --- | --- | --- |")
    med = {k: (statistics.median(f), statistics.median(b)) for k, (f, b) in times.items()}
    base = sum(med["native"])
    for name, (f, b) in med.items():
        print(f"| {name} | {f:.3f} | {b:.3f} | {(f + b) / base:.2f} |")


if __name__ == "__main__":
    main()
