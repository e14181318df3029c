"""The candidates for the adaptive schemes on CPU, side by side (issue 11, part 2): forward + backward
time over ``nn.LSTM`` of

* ``precomputed_native``: the drive for the whole sequence by the filters, then the native kernel with
  an identity input map (Adam, RMSProp);
* ``fused``: the Python loop with in-place ops and a hand-written backward (the previous default);
* ``compiled_step``: the per-step body (drive + LSTM cell) compiled by ``torch.compile``, autograd
  through it (a prototype that lives here only);
* ``compiled_loop``: the C++ loop (one GEMM + one fused pass per step; the chosen one);
* ``graph_loop``: the few-operation loop meant for CUDA graphs, run eagerly (Nesterov; for reference).

    python benchmarks/candidates.py --threads 1 --shapes smnist128,ptb
    python benchmarks/candidates.py --threads 2 --candidates compiled_loop,fused --repeat 5

In each round every model runs once in turn (interleaved); the ratio is median(candidate) / median(native).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import speed

import momentumrnn as mr

torch._dynamo.config.recompile_limit = 64  # one compiled step per scheme, grad / no-grad first step

CANDIDATES = ["precomputed_native", "fused", "compiled_step", "compiled_loop", "graph_loop"]
SCHEMES = ["adam", "rmsprop", "nesterov"]


class CompiledStep(nn.Module):
    """An LSTM whose per-step body (drive + cell) is one ``torch.compile``d function."""

    def __init__(self, kind, input_size, hidden_size):
        super().__init__()
        self.ref = mr.build_layer("lstm", kind, input_size, hidden_size, **speed.HP[kind])
        hp = speed.HP[kind]

        def step(r, u, c, m, v, p, a, b, bias):
            if kind == "nesterov":
                p_new = r + bias - hp["epsilon"] * u
                pre = a * p_new - b * p
                p = p_new
            else:
                m = hp["beta"] * m + (1 - hp["beta"]) * u * u
                if kind == "adam":
                    v = hp["mu"] * v + hp["epsilon"] * u
                    d = v
                else:
                    d = hp["epsilon"] * u
                pre = r + d / torch.sqrt(m + 1e-16) + bias
            i, f, g, o = pre.chunk(4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            return torch.sigmoid(o) * torch.tanh(c), c, m, v, p

        self.step = torch.compile(step, dynamic=False, fullgraph=True)
        self.kind = kind

    def forward(self, x):
        L = self.ref
        T, B, _ = x.shape
        H = L.hidden_size
        u = F.linear(x, L.weight_ih_l0, L.bias_ih_l0)
        h = c = x.new_zeros(B, H)
        m = v = p = x.new_zeros(B, 4 * H)
        beta_k, _ = (
            L.scheme.schedule(T, None, x.dtype, x.device) if self.kind == "nesterov" else (torch.zeros(T, 1, 1), None)
        )
        outs = []
        for t in range(T):
            r = h @ L.weight_hh_l0.t()
            h, c, m, v, p = self.step(r, u[t], c, m, v, p, 1 + beta_k[t], beta_k[t], L.bias_hh_l0)
            outs.append(h)
        return torch.stack(outs), None


def build(candidate, kind, shape):
    _T, _B, I, H = speed.SHAPES[shape]
    torch.manual_seed(0)
    if candidate == "compiled_step":
        return CompiledStep(kind, I, H)
    return speed.build("ours", "lstm", kind, shape, candidate)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="smnist128,smnist256,ptb,long")
    ap.add_argument("--schemes", default=",".join(SCHEMES))
    ap.add_argument("--candidates", default=",".join(CANDIDATES))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, LSTM host; time / nn.LSTM", flush=True)
    print("| shape | scheme | " + " | ".join(args.candidates.split(",")) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in args.candidates.split(",")) + " |")
    for shape in args.shapes.split(","):
        T, B, I, H = speed.SHAPES[shape]
        x = torch.randn(T, B, I)
        for kind in args.schemes.split(","):
            names, models = [], [nn.LSTM(I, H)]
            for cand in args.candidates.split(","):
                if (cand == "precomputed_native" and kind == "nesterov") or (
                    cand == "graph_loop" and kind != "nesterov"
                ):
                    continue
                if (cand == "compiled_step" and shape in ("smnist256", "long")) or (
                    cand == "fused" and shape == "long"
                ):
                    continue  # minutes per case and nothing to learn (about 10x native at smnist128)
                names.append(cand)
                models.append(build(cand, kind, shape))
            times = speed.time_interleaved(models, x, args.repeat)
            ratio = dict(zip(names, (t / times[0] for t in times[1:])))
            cells = [f"{ratio[c]:.2f}" if c in ratio else "-" for c in args.candidates.split(",")]
            print(f"| {shape} | {kind} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
