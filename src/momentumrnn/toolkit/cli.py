"""``momentumrnn`` command line: parses the arguments and calls the toolkit (train, compare,
report, grads, sweep, demo, export, list, make-fixture).

The training stack (Lightning, via :mod:`.runner`, :mod:`.compare`, :mod:`.grads`,
:mod:`.sweep`) is imported by the commands that train, so that ``report`` and ``list`` start
without loading it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import cast

from momentumrnn import __version__

from . import tasks
from .config import (
    OPTIM_SCHEMA,
    RECIPE_DIR,
    RESUMABLE_CHANGES,
    load_recipe,
    load_run_config,
    parse_value,
    recipe_names,
    resolve,
)
from .errors import ToolkitError
from .models import known_layer_names
from .options import Opt, coerce, model_spec
from .report import make_report
from .tasks.timit_fixture import add_fixture_arguments, run_make_fixture

# command-line flag -> recipe key
FLAGS = {
    "task": "task.name",
    "model": "model.name",
    "hidden_size": "model.hidden_size",
    "optimizer": "optim.name",
    "lr": "optim.lr",
    "lr_orth": "optim.lr_orth",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "clip": "train.grad_clip",
    "seed": "train.seed",
    "precision": "train.precision",
    "devices": "train.devices",
    "max_steps": "train.max_steps",
    "limit_train_batches": "train.limit_train_batches",
    "limit_eval_batches": "train.limit_eval_batches",
    "evals_per_epoch": "train.evals_per_epoch",
    "checkpoint_every": "train.checkpoint_every_steps",
    "checkpoint_minutes": "train.checkpoint_every_minutes",
    "target": "report.target",
}

EPILOG = """examples:
  momentumrnn demo
  momentumrnn train --model MomentumLSTM --epochs 5 --out runs/mlstm
  momentumrnn train smnist --set model.mu=0.3 --set optim.lr=5e-4 --out runs/mu03
  momentumrnn train --resume --out runs/mlstm           # continue a killed run
  momentumrnn compare smnist --models LSTM MomentumLSTM --seeds 0 1 2 --out runs/cmp
  momentumrnn report runs/cmp
  momentumrnn grads smnist-small --models LSTM MomentumLSTM --out runs/grads
  momentumrnn sweep smnist-small --model MomentumLSTM --mu 0 0.3 0.6 --epsilon 0.3 0.6 1 --out runs/sweep
  momentumrnn export runs/mlstm --onnx mlstm.onnx
  momentumrnn list models
"""


def _add_run_options(p: argparse.ArgumentParser, compare: bool) -> None:
    p.add_argument(
        "recipe", nargs="?", help="a YAML recipe file or a bundled recipe name (see `momentumrnn list recipes`)"
    )
    p.add_argument("-r", "--recipe", dest="recipe_opt", metavar="RECIPE", help="same as the positional RECIPE")
    g = p.add_argument_group("settings (override the recipe)")
    g.add_argument("--task", help="task name (smnist, psmnist, fmnist, adding)")
    if compare:
        g.add_argument(
            "--models",
            nargs="+",
            metavar="MODEL",
            help="models to compare (paper names such as LSTM MomentumLSTM, or HOST/SCHEME such as lstm/adam)",
        )
        g.add_argument("--seeds", nargs="+", metavar="SEED", help="seeds, e.g. 0 1 2")
    else:
        g.add_argument(
            "--model",
            help="model: a paper name (MomentumLSTM, AdamLSTM, SRLSTM, LSTM, ...) or HOST/SCHEME (lstm/heavy_ball)",
        )
    g.add_argument("--hidden-size", metavar="N")
    g.add_argument("--optimizer", metavar="NAME", help="rmsprop, adam, sgd or sgd_asgd")
    g.add_argument("--lr", metavar="X", help="learning rate")
    g.add_argument("--lr-orth", metavar="X", help="learning rate of orthogonal parameters")
    g.add_argument("--epochs", metavar="N")
    g.add_argument("--batch-size", metavar="N", help="global batch size")
    g.add_argument("--clip", metavar="X", help="gradient-norm clipping (0: none)")
    if not compare:
        g.add_argument("--seed", metavar="N")
    g.add_argument("--precision", metavar="P", help="fp32 or bf16")
    g.add_argument("--devices", metavar="N", help="processes / GPUs (DDP when > 1)")
    g.add_argument("--max-steps", metavar="N", help="stop after N optimizer steps")
    g.add_argument("--limit-train-batches", metavar="N", help="batches per epoch (quick runs)")
    g.add_argument("--limit-eval-batches", metavar="N", help="batches per evaluation (quick runs)")
    g.add_argument("--evals-per-epoch", metavar="N")
    g.add_argument("--checkpoint-every", metavar="N", help="also checkpoint every N steps")
    g.add_argument(
        "--checkpoint-minutes", metavar="X", help="also checkpoint every X minutes of training (default 10; null: off)"
    )
    if compare:
        g.add_argument("--target", metavar="X", help="convergence target of the report")
        g.add_argument(
            "--jobs", type=int, default=1, metavar="N", help="train N runs at once, each in its own process (default 1)"
        )
        g.add_argument(
            "--job-list",
            metavar="FILE",
            help="train nothing: write one self-contained "
            "`momentumrnn train` command per run into FILE (for a cluster scheduler) and the "
            "comparison's compare.yaml into --out",
        )
    g.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any recipe key, e.g. --set model.mu=0.3 --set train.evals_per_epoch=4 (repeatable)",
    )
    o = p.add_argument_group("output")
    o.add_argument(
        "-o",
        "--out",
        metavar="DIR",
        help="output directory"
        + (" (default: runs/compare-<task>)" if compare else " (default: runs/<task>-<model>-seed<seed>)"),
    )
    o.add_argument("--resume", action="store_true", help="continue the run(s) in --out from the last checkpoint")
    o.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="momentumrnn",
        description="MomentumRNN experiments: train, compare and report.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"momentumrnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "train", help="train one model on one task", description="Train one model on one task; writes a run directory."
    )
    _add_run_options(p, compare=False)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "compare",
        help="several models on the same task and seeds, then the report",
        description="Train every model with every seed on one task, then write the report.",
    )
    _add_run_options(p, compare=True)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "report",
        help="tables and plots of finished (or running) runs",
        description="Markdown / CSV table (mean ± std over seeds) and curves of run directories.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories or folders holding them")
    p.add_argument(
        "-o",
        "--out",
        metavar="DIR",
        help="where report.md / report.csv / curves.png go (default: "
        "a comparison's own folder; for run directories nothing is written unless --out is given)",
    )
    p.add_argument("--target", metavar="X", help="convergence target (default: the task's)")
    p.add_argument("--x", choices=("epoch", "step"), default="epoch", help="x axis of the curves")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "demo",
        help="LSTM vs MomentumLSTM on sequential MNIST (bundled subset), a few minutes",
        description="Trains LSTM and MomentumLSTM on pixel-by-pixel MNIST from the bundled "
        "subset, then prints the comparison and writes the curves.",
    )
    p.add_argument(
        "-o", "--out", metavar="DIR", help="output directory (default: ./momentumrnn-demo, or -2, -3, ... if it exists)"
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted demo in --out")
    p.add_argument("--overwrite", action="store_true", help="replace --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        metavar="N",
        help="models trained at once (default: 2 if the machine has 2 cores or more)",
    )
    p.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="override a key of the demo recipe"
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "grads",
        help="||dL/dh_t|| over time during training, for several models: heatmaps",
        description="Train every model (as `compare`) while recording the norm of the loss "
        "gradient w.r.t. the hidden state h_t for every time step t at chosen "
        "iterations, on a fixed probe batch; draws the paper's heatmap (time step "
        "vs iteration) and line plots, and writes grads.csv / grads.md.",
    )
    _add_run_options(p, compare=True)
    d = p.add_argument_group("gradient probe")
    d.add_argument(
        "--at",
        nargs="+",
        metavar="STEP",
        help="optimizer steps to probe (default: 12 evenly spaced over the planned training, from step 0)",
    )
    d.add_argument("--probe-size", metavar="N", help="examples in the probe batch (default 32)")
    p.set_defaults(func=cmd_grads)

    p = sub.add_parser(
        "sweep",
        help="grid over mu x epsilon (the paper's ablation): annotated heatmap",
        description="Train one momentum model for every (mu, epsilon) of a grid and every "
        "seed, then draw the final metric as an annotated heatmap "
        "(sweep.png, sweep.md, sweep.csv).",
    )
    _add_run_options(p, compare=True)
    d = p.add_argument_group("grid")
    d.add_argument("--model", help="the momentum model to sweep (default: the recipe's model, else MomentumLSTM)")
    d.add_argument("--mu", nargs="+", metavar="MU", required=True, help="momentum values, e.g. 0 0.3 0.6 0.9")
    d.add_argument("--epsilon", nargs="+", metavar="EPS", required=True, help="step sizes, e.g. 0.1 0.3 0.6 1")
    d.add_argument("--baseline", metavar="MODEL", help="also train this model (e.g. LSTM) and show its value")
    d.add_argument(
        "--value", choices=("final", "best"), default="final", help="which metric value per run (default: final)"
    )
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser(
        "export",
        help="a trained run's model as an ONNX file (dynamic batch and length)",
        description="Rebuild the model of a run directory, load a checkpoint and export it with "
        "torch.onnx.export to FILE (written atomically); checked with onnxruntime "
        "when installed. Needs: pip install 'momentumrnn[onnx]'.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (config.yaml, checkpoints/)")
    p.add_argument("--onnx", required=True, metavar="FILE", help="the ONNX file to write")
    p.add_argument(
        "--checkpoint",
        choices=("best", "last"),
        default=None,
        help="which weights: best (the best evaluation; the default, else last) or last",
    )
    p.add_argument("--overwrite", action="store_true", help="replace FILE if it exists")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "make-fixture",
        help="write a small synthetic TIMIT (LDC layout + the authors' tensors)",
        description="Write a small synthetic TIMIT corpus (speech-like signals, TIMIT's LDC "
        "layout and the authors' preprocessed tensors) to try the timit task.",
    )
    add_fixture_arguments(p)
    p.set_defaults(func=run_make_fixture)

    p = sub.add_parser("list", help="models, tasks, optimizers and bundled recipes")
    p.add_argument("what", nargs="?", choices=("models", "tasks", "optimizers", "recipes"), default=None)
    p.set_defaults(func=cmd_list)
    return parser


# ---------------------------------------------------------------------------------------------


def _overrides(args: argparse.Namespace) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for flag, key in FLAGS.items():
        v = getattr(args, flag, None)
        if v is not None:
            out.append((key, v if flag == "model" else parse_value(v)))
    if getattr(args, "models", None):
        out.append(("models", list(args.models)))
    if getattr(args, "seeds", None):
        out.append(("seeds", [parse_value(s) for s in args.seeds]))
    for item in getattr(args, "sets", []) or []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ToolkitError(f"--set {item!r}: write KEY=VALUE, e.g. --set train.epochs=5")
        out.append((key.strip(), parse_value(value)))
    if getattr(args, "no_progress", False):
        out.append(("train.progress", False))
    return out


def _recipe(args: argparse.Namespace) -> tuple[dict | None, str]:
    ref = args.recipe_opt or args.recipe
    if args.recipe_opt and args.recipe and args.recipe_opt != args.recipe:
        raise ToolkitError("give the recipe once (positional or --recipe)")
    if ref is None:
        return None, "the defaults"
    return load_recipe(ref), f"recipe {ref!r}"


def _check_flags(args: argparse.Namespace) -> None:
    if getattr(args, "resume", False) and getattr(args, "overwrite", False):
        raise ToolkitError("--resume and --overwrite exclude each other; pick one")


def cmd_train(args: argparse.Namespace) -> int:
    from .runner import default_run_dir, train_run

    _check_flags(args)
    recipe, origin = _recipe(args)
    overrides = _overrides(args)
    if (
        recipe is None
        and args.resume
        and args.out
        and (Path(args.out) / "config.yaml").is_file()
        and all(k in RESUMABLE_CHANGES for k, _ in overrides)
    ):
        # `train --resume --out DIR` alone (or with only settings a resume may change, e.g.
        # --epochs to extend the run): the run's own config.yaml is the recipe. A command that
        # gives other settings is a full specification, checked against config.yaml as before.
        recipe, origin = load_run_config(Path(args.out)), f"{Path(args.out) / 'config.yaml'}"
    cfg = resolve(recipe, overrides, command="train", origin=origin)
    out = Path(args.out) if args.out else default_run_dir(cfg)
    summary = train_run(cfg, out, resume=args.resume, overwrite=args.overwrite)
    return 0 if summary.get("status") == "completed" else 1


def _job_list(args: argparse.Namespace) -> Path | None:
    if not getattr(args, "job_list", None):
        return None
    if args.resume:
        raise ToolkitError(
            "--job-list writes the jobs of a new comparison; add --resume to the listed commands instead"
        )
    return Path(args.job_list)


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import compare_runs
    from .runner import is_writer

    _check_flags(args)
    recipe, origin = _recipe(args)
    cfg = resolve(recipe, _overrides(args), command="compare", origin=origin)
    out = Path(args.out) if args.out else Path("runs") / f"compare-{cfg['task']['name']}"
    job_list = _job_list(args)
    md = compare_runs(
        cfg,
        out,
        resume=args.resume,
        overwrite=args.overwrite,
        target=cfg["report"]["target"],
        jobs=args.jobs,
        job_list=job_list,
    )
    if job_list is not None:
        print(md)
    elif is_writer():
        print()
        print(md.split("\nRuns:")[0].rstrip())
        print(f"\nreport: {out / 'report.md'}  table: {out / 'report.csv'}  curves: {out / 'curves.png'}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    target = None
    if args.target is not None:
        target = coerce("--target", Opt("float", None), parse_value(args.target))
    out = Path(args.out) if args.out else None
    md, dest = make_report([Path(r) for r in args.runs], out, target=target, x=args.x, return_dest=True)
    print(md.rstrip())
    if dest is None:
        print(
            "\n(nothing written: give --out DIR to save report.md, report.csv and the curves; a run directory "
            "is never written into)"
        )
    else:
        print(f"\nwrote {dest / 'report.md'}, {dest / 'report.csv'} and the curves PNG")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .compare import compare_runs, fresh_dir

    _check_flags(args)
    recipe = load_recipe("demo")
    cfg = resolve(recipe, _overrides(args), command="compare", origin="the demo recipe")
    if args.out:
        out = Path(args.out)
    elif args.resume:
        raise ToolkitError("demo --resume needs --out DIR (the demo directory to continue)")
    else:
        out = fresh_dir(Path("momentumrnn-demo"))
    t = cfg["train"]
    print(
        f"momentumrnn demo: {' vs '.join(m.get('label') or m.get('name') for m in cfg['models'])} on "
        f"sequential MNIST (784 pixel steps), bundled real subset, hidden {cfg['models'][0]['hidden_size']}, "
        f"{t['epochs']} epochs of batch {t['batch_size']}; output in {out}",
        flush=True,
    )
    start = time.time()
    jobs = args.jobs if args.jobs is not None else min(2, len(cfg["models"]) * len(cfg["seeds"]), os.cpu_count() or 1)
    md = compare_runs(cfg, out, resume=args.resume, overwrite=args.overwrite, target=cfg["report"]["target"], jobs=jobs)
    print()
    print(md.split("\nRuns:")[0].rstrip())
    print(f"\ndemo finished in {time.time() - start:.0f} s; curves: {out / 'curves.png'}, report: {out / 'report.md'}")
    return 0


def cmd_grads(args: argparse.Namespace) -> int:
    from .grads import run_grads

    _check_flags(args)
    recipe, origin = _recipe(args)
    extra = []
    if args.at:
        extra.append(("train.grad_norm_steps", [parse_value(a) for a in args.at]))
    if args.probe_size is not None:
        extra.append(("train.grad_norm_batch", parse_value(args.probe_size)))
    cfg = resolve(recipe, _overrides(args) + extra, command="compare", origin=origin)
    out = Path(args.out) if args.out else Path("runs") / f"grads-{cfg['task']['name']}"
    table = run_grads(cfg, out, resume=args.resume, overwrite=args.overwrite, jobs=args.jobs, job_list=_job_list(args))
    if table is not None:
        print()
        print(table.rstrip())
        print(f"\nheatmap: {out / 'grads_heatmap.png'}  lines: {out / 'grads_lines.png'}  data: {out / 'grads.csv'}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep import check_grid, run_sweep, sweep_models

    _check_flags(args)
    if args.models:
        raise ToolkitError("sweep trains one model over a grid: give --model NAME, not --models")
    recipe, origin = _recipe(args)
    mus = check_grid("--mu", [parse_value(m) for m in args.mu])
    eps = check_grid("--epsilon", [parse_value(e) for e in args.epsilon])
    recipe_model = ((recipe or {}).get("model") or {}).get("name")
    base = model_spec(args.model or recipe_model or "MomentumLSTM")
    args.model = None  # the swept model is in the entries; a --model override would rename the baseline
    entries = sweep_models(base, mus, eps)
    if args.baseline:
        entries.append(model_spec(args.baseline))
    cfg = resolve(recipe, [*_overrides(args), ("models", entries)], command="compare", origin=origin)
    out = Path(args.out) if args.out else Path("runs") / f"sweep-{cfg['task']['name']}"
    md = run_sweep(
        cfg,
        out,
        base,
        mus,
        eps,
        value=args.value,
        baseline=bool(args.baseline),
        resume=args.resume,
        overwrite=args.overwrite,
        jobs=args.jobs,
        job_list=_job_list(args),
    )
    if md is not None:
        print()
        print(md.rstrip())
        print(f"\nheatmap: {out / 'sweep.png'}  table: {out / 'sweep.md'}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import CHECK_TOLERANCE, export_run

    r = export_run(Path(args.run_dir), Path(args.onnx), checkpoint=args.checkpoint, overwrite=args.overwrite)
    at = f", step {r.step}" if r.step is not None else ""
    print(f"wrote {r.path} (weights of {r.checkpoint}{at})")
    for kind, specs in (("input", r.inputs), ("output", r.outputs)):
        for name, dtype, dims in specs:
            print(f"  {kind:6s} {name}: {dtype} [{', '.join(map(str, dims))}]")
    if r.check is None:
        print("  not checked: onnxruntime is not installed")
    else:
        for shape, diff, scale in r.check:
            print(
                f"  onnxruntime vs torch at (batch, time) = {shape}: max |difference| {diff:.1e} "
                f"(max |output| {scale:.3g})"
            )
            if not diff <= CHECK_TOLERANCE * max(1.0, scale):
                print(
                    f"warning: onnxruntime and torch differ by more than float32 rounding at {shape}; "
                    "please report it with the run's config.yaml",
                    file=sys.stderr,
                )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    what = args.what
    if what in (None, "models"):
        print("models (model.name; or model.host + model.scheme):")
        for name, info in known_layer_names().items():
            host, kind = info[0], info[1]
            print(f"  {name:22s} {host}/{kind}")
    if what in (None, "tasks"):
        print("tasks (task.name):")
        for name, cls in sorted(tasks.TASKS.items()):
            opts = ", ".join(cls.options)
            print(f"  {name:10s} {cls.summary}\n             options: {opts}")
    if what in (None, "optimizers"):
        print("optimizers (optim.name): " + ", ".join(cast(tuple, OPTIM_SCHEMA["name"].choices)))
    if what in (None, "recipes"):
        print(f"bundled recipes ({RECIPE_DIR}):")
        for name in recipe_names():
            first = (RECIPE_DIR / f"{name}.yaml").read_text().splitlines()[0].lstrip("# ")
            print(f"  {name:10s} {first}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits with code 2 on a usage error
    try:
        return int(args.func(args) or 0)
    except ToolkitError as e:
        print(f"{getattr(e, 'prefix', 'error')}: {' '.join(str(e).split())}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] in ("lightning", "yaml", "matplotlib", "tqdm", "tensorboard"):
            print(
                f"error: {e.name} is missing; install the toolkit's dependencies: pip install 'momentumrnn[train]'",
                file=sys.stderr,
            )
            return 2
        raise
    except KeyboardInterrupt:
        print("\ninterrupted; continue with the same command and --resume", file=sys.stderr)
        return 130
