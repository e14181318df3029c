"""Speed of the orthogonal hosts at the permuted-MNIST shape (forward + backward), as ratios
measured side by side in one run (never absolute timings across runs).

For each hidden size, every layer is timed in interleaved rounds together with

* ``torch.nn.RNN`` (tanh, the native kernel) of the same hidden size: the practical limit for
  this shape of work (scuRNN's complex state of H units is also compared with ``nn.RNN`` of
  ``2H`` units, the same real state width);
* a faithful per-step loop of the authors' ``OrthogonalRNN`` / ``OrthogonalMomentumRNN`` cell
  (autograd through every step; ``B`` computed once per forward by their retraction
  ``base @ expm(A)``, here with a float32 Pade exponential):
  ``v = mu * v + eps * W_ih x_t; h = modrelu(h @ B + v)``; for scuRNN, scuRNN's own cell (real
  ``[Re, Im]`` state, expanded matrix, smoothed modulus) with the same momentum drive.
  ENRNN and the Nesterov rows, which the authors' orthogonal code does not have, are set against
  the same loop (plain / heavy-ball momentum): the per-step autograd cost of a modReLU recurrence.

Each round times every configuration once (fresh forward + backward of ``out[-1]`` through a
fixed random read-out, like a classifier on the last step); a ratio is the median over rounds
of the per-round ratio, which cancels most of the drift of a shared machine.

    python benchmarks/orthogonal_speed.py              # T=784, B=128, I=1, H=170 and 512
    python benchmarks/orthogonal_speed.py --quick      # a short smoke run
    python benchmarks/orthogonal_speed.py --hidden 170 --hosts dtriv --rounds 7
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import momentumrnn as mr
import momentumrnn.orthogonal as orth
from momentumrnn.orthogonal.parametrizations import pade_expm, skew
from momentumrnn.registry import HOSTS as HOST_INFO
from momentumrnn.registry import LAYER_NAMES

HOSTS = [h for h in mr.HOSTS if HOST_INFO[h].family == "modrelu"]  # expRNN, DTRIV, scoRNN, scuRNN, ENRNN
SCHEMES = ["none", "heavy_ball", "adam", "rmsprop", "restart", "nesterov"]
HP = {
    "heavy_ball": {"mu": 0.6, "epsilon": 0.9},
    "adam": {"mu": 0.6, "epsilon": 0.9, "beta": 0.01},
    "rmsprop": {"epsilon": 0.9, "beta": 0.01},
    "restart": {"epsilon": 0.9, "restart": 40},
    "nesterov": {"epsilon": 0.9, "restart": 40},
    "none": {},
}


def class_name(host: str, kind: str) -> str:
    return next(n for n, (h, k, _) in LAYER_NAMES.items() if h == host and k == kind)


class AuthorsOrthogonalLoop(nn.Module):
    """The authors' ``OrthogonalRNN`` / ``OrthogonalMomentumRNN`` cell run step by step."""

    def __init__(self, input_size, hidden_size, momentum: bool, mu=0.6, epsilon=0.9):
        super().__init__()
        self.hidden_size = hidden_size
        self.A = nn.Parameter(torch.zeros(hidden_size, hidden_size))
        orth.cayley_init_(self.A.data)
        self.register_buffer("base", torch.eye(hidden_size))
        self.input_kernel = nn.Linear(input_size, hidden_size, bias=False)
        nn.init.kaiming_normal_(self.input_kernel.weight, nonlinearity="relu")
        self.b = nn.Parameter(torch.empty(hidden_size).uniform_(-0.01, 0.01))
        self.momentum, self.mu, self.epsilon = momentum, mu, epsilon

    def modrelu(self, z):
        return torch.sign(z) * nn.functional.relu(torch.abs(z) + self.b)

    def forward(self, x):  # x: (T, B, I)
        B = self.base.mm(pade_expm(skew(self.A)))  # the retraction, once per forward (cached _B)
        h = x.new_zeros(x.shape[1], self.hidden_size, requires_grad=True)
        v = x.new_zeros(x.shape[1], self.hidden_size)
        outs = []
        for x_t in torch.unbind(x, 0):
            if self.momentum:
                v = self.mu * v + self.epsilon * self.input_kernel(x_t)
                h = self.modrelu(v + h.matmul(B))
            else:
                h = self.modrelu(self.input_kernel(x_t) + h.matmul(B))
            outs.append(h)
        return torch.stack(outs), h


class AuthorsUnitaryLoop(nn.Module):
    """scuRNN's cell (Maduranga et al.'s code: real ``[Re, Im]`` state of ``2H``, expanded
    ``2H x 2H`` matrix, modReLU on ``sqrt(re^2 + im^2 + 1e-5)``) run step by step, with the
    heavy-ball drive of ``OrthogonalMomentumRNN`` when ``momentum``."""

    def __init__(self, input_size, hidden_size, momentum: bool, mu=0.6, epsilon=0.9):
        super().__init__()
        self.hidden_size = hidden_size
        self.cayley = orth.UnitaryScaledCayley(hidden_size)
        self.A = nn.Parameter(torch.zeros(hidden_size, hidden_size))
        orth.cayley_init_(self.A.data)
        self.A.data.triu_(1)
        self.U = nn.Parameter(torch.empty(input_size, 2 * hidden_size))
        nn.init.xavier_uniform_(self.U)
        self.b = nn.Parameter(torch.empty(hidden_size).uniform_(-0.01, 0.01))
        self.momentum, self.mu, self.epsilon = momentum, mu, epsilon

    def forward(self, x):
        B = self.cayley(self.A)  # once per forward
        W = torch.cat([torch.cat([B.real, B.imag], 1), torch.cat([-B.imag, B.real], 1)], 0)
        H = self.hidden_size
        h = x.new_zeros(x.shape[1], 2 * H, requires_grad=True)
        v = x.new_zeros(x.shape[1], 2 * H)
        outs = []
        for x_t in torch.unbind(x, 0):
            u = x_t.matmul(self.U)
            if self.momentum:
                v = self.mu * v + self.epsilon * u
                u = v
            lin = u + h.matmul(W)
            re, im = lin[:, :H], lin[:, H:]
            modulus = torch.sqrt(re * re + im * im + 1e-5)
            scale = nn.functional.relu(modulus + self.b) / (modulus + 1e-5)
            h = lin * torch.cat([scale, scale], 1)
            outs.append(h)
        return torch.stack(outs), h


def make_step(module, x, read_out):
    def step():
        out = module(x)[0]
        (out[-1] @ read_out).sum().backward()

    return step


def run(hidden, T, batch, rounds, hosts, schemes, threads):
    torch.manual_seed(0)
    x = torch.rand(T, batch, 1)
    configs = {}  # name -> step callable
    read = {H: torch.randn(H, 10) for H in {hidden, 2 * hidden}}
    configs["nn.RNN"] = make_step(nn.RNN(1, hidden), x, read[hidden])
    if "scurnn" in hosts:
        configs["nn.RNN(2H)"] = make_step(nn.RNN(1, 2 * hidden), x, read[2 * hidden])
        configs["authors scuRNN plain"] = make_step(AuthorsUnitaryLoop(1, hidden, False), x, read[2 * hidden])
        configs["authors scuRNN momentum"] = make_step(AuthorsUnitaryLoop(1, hidden, True), x, read[2 * hidden])
    configs["authors plain"] = make_step(AuthorsOrthogonalLoop(1, hidden, False), x, read[hidden])
    configs["authors momentum"] = make_step(AuthorsOrthogonalLoop(1, hidden, True), x, read[hidden])
    for host in hosts:
        for kind in schemes:
            layer = mr.build_layer(host, kind, 1, hidden, **HP[kind])
            name = class_name(host, kind)
            configs[name] = make_step(layer, x, read[layer.output_size])
    times = {name: [] for name in configs}
    for step in configs.values():  # warm-up
        step()
    for r in range(rounds):
        names = list(configs)
        names = names[r % len(names) :] + names[: r % len(names)]  # rotate the order every round
        for name in names:
            t0 = time.perf_counter()
            configs[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def ratio(times, a, b):
    return statistics.median(x / y for x, y in zip(times[a], times[b]))


def report(hidden, times, hosts, schemes):
    plain_name = {h: class_name(h, "none") for h in hosts}
    lines = [
        f"\n### hidden {hidden}\n",
        "| layer | time (s, median) | / nn.RNN | / plain orthogonal (same host) | / authors' loop |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in (
        "nn.RNN",
        "nn.RNN(2H)",
        "authors plain",
        "authors momentum",
        "authors scuRNN plain",
        "authors scuRNN momentum",
    ):
        if name in times:
            median = statistics.median(times[name])
            lines.append(f"| {name} | {median:.3f} | {ratio(times, name, 'nn.RNN'):.2f} | | |")
    for host in hosts:
        native = "nn.RNN(2H)" if host == "scurnn" else "nn.RNN"
        for kind in schemes:
            name = class_name(host, kind)
            vs_plain = "" if kind == "none" else f"{ratio(times, name, plain_name[host]):.3f}"
            authors = ("authors scuRNN " if host == "scurnn" else "authors ") + (
                "plain" if kind == "none" else "momentum"
            )
            vs_native = f"{ratio(times, name, native):.2f}"
            if host == "scurnn":
                vs_native += f" (vs H: {ratio(times, name, 'nn.RNN'):.2f})"
            lines.append(
                f"| {name} | {statistics.median(times[name]):.3f} | {vs_native} | {vs_plain} | "
                f"{ratio(times, name, authors):.2f} |"
            )
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short run: T=100, B=32, H=64, 3 rounds")
    ap.add_argument("--hidden", type=int, nargs="+", default=[170, 512])
    ap.add_argument("--T", type=int, default=784)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--hosts", nargs="+", default=HOSTS, choices=HOSTS)
    ap.add_argument("--schemes", nargs="+", default=SCHEMES, choices=SCHEMES)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument(
        "--flush-denormal",
        action="store_true",
        help="torch.set_flush_denormal(True) for every configuration: nn.RNN's backward at this "
        "shape falls into subnormal floats (measured: 1.16 s, 0.38 s flushed); our layers "
        "flush them anyway",
    )
    args = ap.parse_args()
    if args.quick:
        args.T, args.batch, args.hidden, args.rounds = 100, 32, [64], 3
    if "none" not in args.schemes:
        args.schemes = ["none", *args.schemes]
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.flush_denormal and not torch.set_flush_denormal(True):
        ap.error("this CPU cannot flush subnormal floats (torch.set_flush_denormal returned False)")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; T={args.T}, B={args.batch}, input 1; "
        f"{args.rounds} rounds; forward + backward" + ("; subnormals flushed" if args.flush_denormal else "")
    )
    for hidden in args.hidden:
        times = run(hidden, args.T, args.batch, args.rounds, args.hosts, args.schemes, args.threads)
        print(report(hidden, times, args.hosts, args.schemes), flush=True)


if __name__ == "__main__":
    main()
