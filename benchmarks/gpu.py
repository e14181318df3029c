"""The speed benchmark on a CUDA GPU: the same shapes, schemes and ratios as ``speed.py``
(forward + backward of our layer over the matching ``torch.nn`` module on cuDNN, the authors' per-step
loop over ours, peak GPU memory ours / native, operator calls per step), plus the other backends that
could run each scheme on a GPU, so that the dispatch table's CUDA choices can be checked.

    python benchmarks/gpu.py --markdown               # every shape (budgeted: 150 s in scripts/device-check.sh)
    python benchmarks/gpu.py --shapes smnist128 --alternatives

Times: CUDA events around forward + backward, median of ``--repeat`` interleaved rounds after two
warm-ups (the first call of the CUDA-graph loop captures its graphs). Exits with a message (code 2)
where no CUDA device exists.

Not yet run on a GPU: none was available to the project when this was written (the CUDA paths are
tested on the CPU in float64 by tests/test_gpu_paths.py; tests/test_gpu.py needs a device).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import opcount
import speed

ALTERNATIVES = {  # other backends that can run the scheme on a GPU
    "none": [],
    "heavy_ball": ["precomputed_native", "fused"],
    "restart": ["precomputed_native", "fused"],
    "adam": ["fused"],
    "rmsprop": ["fused"],
    "nesterov": ["fused"],
}


def fwd_bwd(model, x):
    out, _ = model(x)
    out.float().sum().backward()


def time_interleaved(models, x, repeat):
    for m in models:
        for _ in range(2):
            fwd_bwd(m, x)
    torch.cuda.synchronize()
    times = [[] for _ in models]
    for _ in range(repeat):
        for i, m in enumerate(models):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fwd_bwd(m, x)
            end.record()
            torch.cuda.synchronize()
            times[i].append(start.elapsed_time(end) / 1e3)
    return [statistics.median(t) for t in times]


def peak_memory(model, x):
    fwd_bwd(model, x)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fwd_bwd(model, x)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default=",".join(speed.SHAPES))
    ap.add_argument("--schemes", default=",".join(speed.SCHEMES))
    ap.add_argument("--host", default="lstm", choices=list(speed.NATIVE))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--alternatives", action="store_true", help="also time the other capable backends")
    ap.add_argument("--no-authors", action="store_true")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print(
            "benchmarks/gpu.py: no CUDA device (torch.cuda.is_available() is False); nothing to measure. "
            "Run it on a machine with an NVIDIA GPU and a CUDA build of torch.",
            file=sys.stderr,
        )
        return 2
    dtype = getattr(torch, args.dtype)
    dev = torch.device("cuda")
    print(f"# torch {torch.__version__}, {torch.cuda.get_device_name(dev)}, {args.dtype}, host {args.host}", flush=True)
    rows = []
    for shape in args.shapes.split(","):
        T, B, I, H = speed.SHAPES[shape]
        x = torch.randn(T, B, I, device=dev, dtype=dtype)
        native = speed.build("native", args.host, "none", shape).to(dev, dtype)
        native_m = peak_memory(native, x)
        for kind in args.schemes.split(","):
            ours = speed.build("ours", args.host, kind, shape).to(dev, dtype)
            names, models = ["native", "ours"], [native, ours]
            if args.alternatives:
                for name in ALTERNATIVES[kind]:
                    names.append(name)
                    models.append(speed.build("ours", args.host, kind, shape, name).to(dev, dtype))
            if not args.no_authors and args.host != "gru" and shape != "long":
                names.append("authors")
                models.append(speed.build("authors", args.host, kind, shape).to(dev, dtype))
            times = dict(zip(names, time_interleaved(models, x, args.repeat)))
            ours_m = peak_memory(ours, x)
            ops = opcount.per_step(
                lambda kind=kind, shape=shape: speed.build("ours", args.host, kind, shape).to(dev), B, I, device=dev
            )
            row = {
                "shape": f"{shape} (T={T}, B={B}, I={I}, H={H})",
                "scheme": kind,
                "backend": speed.backend_of(ours, "cuda"),
                "vs_native": times["ours"] / times["native"],
                "authors": times["authors"] / times["ours"] if "authors" in times else None,
                "mem": ours_m / native_m if native_m else None,
                "ops": ops,
                "alternatives": {n: times[n] / times["native"] for n in names[2:] if n != "authors"},
            }
            rows.append(row)
            alt = "  ".join(f"{n} x{v:.2f}" for n, v in row["alternatives"].items())
            print(
                f"{row['shape']:<40} {kind:<11} {row['backend']:<18} ours {times['ours'] * 1e3:8.1f} ms  "
                f"native {times['native'] * 1e3:8.1f} ms  x{row['vs_native']:.2f} native  "
                f"authors/ours {row['authors'] or 0:.2f}  mem x{row['mem'] or 0:.2f}  "
                f"ops/step {ops[0]:.1f} fwd {ops[1]:.1f} bwd  {alt}",
                flush=True,
            )
    if args.markdown:
        print(
            "\n| shape | scheme | backend | ours / native | authors' loop / ours | peak GPU memory ours / native "
            "| operator calls / step (fwd, bwd) | other backends / native |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        f = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        for r in rows:
            alt = ", ".join(f"{n} {v:.2f}" for n, v in r["alternatives"].items()) or "-"
            print(
                f"| {r['shape']} | {r['scheme']} | {r['backend']} | {f(r['vs_native'])} | {f(r['authors'])} | "
                f"{f(r['mem'])} | {r['ops'][0]:.1f}, {r['ops'][1]:.1f} | {alt} |"
            )
    inner = {h: opcount.inner_counts(h, 8, 1, 16) for h in ("lstm", "gru", "rnn")}
    print(
        "\nInside the CUDA-graph loop (kernels a replay runs per step, forward / backward): "
        + ", ".join(f"{h} {f:.1f} / {b:.1f}" for h, (f, b) in inner.items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
