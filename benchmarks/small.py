"""Whole training steps of small models, every scheme against torch.nn, side by side in one run.

A small classifier as users train it: an LSTM layer (or GRU / RNN, ``--host``) over a sequence,
a linear head on the last hidden state, cross-entropy, backward, and an optimizer step
(RMSprop). At these sizes the fixed cost of a call (argument checks, dispatch, state handling,
building the autograd graph) is a large part of a step, and no other benchmark measures it.

    python benchmarks/small.py                        # T in {64, 256} x hidden in {32, 64} x batch in {16, 32}
    python benchmarks/small.py --markdown --threads 1
    python benchmarks/small.py --shapes 64x32x64 --schemes adam,nesterov --rounds 9

Each round times ``--steps`` training steps of every model, one model after the other (the
order rotates every round), after one warm-up round; a ratio is the median over rounds of
``time(ours) / time(torch.nn)`` within the round, so that the machine's drift cancels. The
second table is the fixed cost of one call: forward + backward at T = 1, batch 1, hidden 8, in
microseconds, against the torch.nn module's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

import momentumrnn as mr

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from speed import HP, NATIVE, SCHEMES

SHAPES = [
    (64, 16, 32),
    (64, 32, 32),
    (64, 16, 64),
    (64, 32, 64),
    (256, 16, 32),
    (256, 32, 32),
    (256, 16, 64),
    (256, 32, 64),
]  # (T, B, H)
CLASSES = 10


class Classifier(nn.Module):
    def __init__(self, rnn: nn.Module, hidden: int):
        super().__init__()
        self.rnn = rnn
        self.head = nn.Linear(hidden, CLASSES)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[-1])


def build(host: str, scheme: str, inputs: int, hidden: int, seed: int = 0) -> Classifier:
    torch.manual_seed(seed)
    rnn = (
        NATIVE[host](inputs, hidden)
        if scheme == "torch.nn"
        else mr.build_layer(host, scheme, inputs, hidden, **HP[scheme])
    )
    return Classifier(rnn, hidden)


def trainer(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def time_steps(steps_fns: dict, steps: int, rounds: int) -> dict:
    """Per model: seconds per training step in each round (models in turn, rotating order)."""
    names = list(steps_fns)
    for fn in steps_fns.values():  # warm-up: lazy initialisation, the C++ loop's build, caches
        for _ in range(max(1, steps // 4)):
            fn()
    times = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            fn = steps_fns[n]
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            times[n].append((time.perf_counter() - t0) / steps)
    return times


def call_cost(host: str, schemes: list, rounds: int, calls: int = 200) -> dict:
    """Microseconds of one forward + backward at T = 1, batch 1, hidden 8 (median over rounds)."""
    x = torch.randn(1, 1, 1)
    fns = {}
    for s in ["torch.nn", *schemes]:
        rnn = build(host, s, 1, 8).rnn

        def fn(rnn=rnn):
            out, _ = rnn(x)
            out.sum().backward()

        fns[s] = fn
    times = time_steps(fns, calls, rounds)
    return {s: 1e6 * statistics.median(t) for s, t in times.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="lstm", choices=list(NATIVE))
    ap.add_argument("--shapes", default=None, help="comma list of TxBxH (default: T {64,256} x B {16,32} x H {32,64})")
    ap.add_argument("--schemes", default=",".join(SCHEMES))
    ap.add_argument("--inputs", type=int, default=1, help="input features per step (1: pixel sequences)")
    ap.add_argument("--steps", type=int, default=10, help="training steps per model and round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--no-call-cost", action="store_true", help="skip the fixed cost per call table")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = SHAPES if not args.shapes else [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    schemes = args.schemes.split(",")
    for s in schemes:
        if s not in HP:
            ap.error(f"unknown scheme {s!r}; choose from {', '.join(HP)}")
    print(
        f"# torch {torch.__version__}, {torch.get_num_threads()} threads, host {args.host}, "
        f"{args.steps} steps x {args.rounds} rounds, RMSprop",
        flush=True,
    )
    rows = []
    for T, B, H in shapes:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(T, B, args.inputs, generator=g)
        y = torch.randint(0, CLASSES, (B,), generator=g)
        fns = {s: trainer(build(args.host, s, args.inputs, H), x, y) for s in ["torch.nn", *schemes]}
        times = time_steps(fns, args.steps, args.rounds)
        native_ms = 1e3 * statistics.median(times["torch.nn"])
        for s in schemes:
            ratio = statistics.median(a / b for a, b in zip(times[s], times["torch.nn"]))
            ours_ms = 1e3 * statistics.median(times[s])
            rows.append((T, B, H, s, ours_ms, native_ms, ratio))
            print(
                f"T={T:<4} B={B:<3} H={H:<3} {s:<11} ours {ours_ms:8.2f} ms/step  torch.nn {native_ms:8.2f} ms/step"
                f"  x{ratio:.2f}",
                flush=True,
            )
    cost = None if args.no_call_cost else call_cost(args.host, schemes, args.rounds)
    if cost:
        print(
            "fixed cost per call (forward + backward, T = 1, B = 1, H = 8): "
            + ", ".join(f"{s} {v:.0f} us" for s, v in cost.items()),
            flush=True,
        )
    if args.markdown:
        print(
            "\n| T | batch | hidden | scheme | ours (ms / step) | torch.nn (ms / step) | ours / torch.nn |\n"
            "| --- | --- | --- | --- | --- | --- | --- |"
        )
        for T, B, H, s, ours, nat, ratio in rows:
            print(f"| {T} | {B} | {H} | {s} | {ours:.2f} | {nat:.2f} | {ratio:.2f} |")
        if cost:
            print("\n| scheme | fixed cost per call (us) | / torch.nn |\n| --- | --- | --- |")
            for s, v in cost.items():
                print(f"| {s} | {v:.0f} | {v / cost['torch.nn']:.2f} |")


if __name__ == "__main__":
    main()
