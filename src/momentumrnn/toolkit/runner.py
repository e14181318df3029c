"""Running experiments: one run (:func:`train_run`) and a comparison (:func:`compare_runs`).

Every check (config, data, model, run directory, checkpoint) happens before anything is
written, so a bad input leaves existing files as they were.

Multi-process training uses Lightning's DDP: the processes it starts re-run the same command;
they are recognised by their rank (``LOCAL_RANK`` / ``NODE_RANK`` / ``RANK`` in the environment)
and then read the run directory but never write it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Optional

from . import runfiles
from .config import config_changes, dump_yaml, load_run_config, model_label, run_config
from .errors import ToolkitError

PRECISION = {"fp32": "32-true", "bf16": "bf16-mixed"}
COMPARE_FILE = "compare.yaml"
_HEADER = re.compile(r"\((\d+) steps per epoch\)")
_ROW = re.compile(r"epoch ([\d.]+)\s+step (\d+)\s+(.*?)\s*\[")


def env_rank() -> int:
    """0 for the main process; > 0 for a DDP worker started by a launcher (Lightning's, torchrun,
    SLURM, MPI), recognised from the environment before any process group exists."""
    for var in ("RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK"):
        if os.environ.get(var, "").isdigit() and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
            return int(os.environ[var])
    local = os.environ.get("LOCAL_RANK", "0")
    node = os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", "0"))
    return int(local) + int(node) if local.isdigit() and node.isdigit() else 0


def is_writer() -> bool:
    return env_rank() == 0


def say(msg: str = "") -> None:
    if is_writer():
        print(msg, flush=True)


def slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_.+=-]+", "-", text).strip("-")
    return s or "model"


def default_run_dir(cfg: dict) -> Path:
    return Path("runs") / f"{cfg['task']['name']}-{slug(model_label(cfg['model']))}-seed{cfg['train']['seed']}"


def _quiet_lightning() -> None:
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in (
        ".*does not have many workers.*", ".*exists and is not empty.*", ".*is not a `DataLoader`.*",
        ".*The number of training batches.*", ".*Checkpoint directory.*", ".*LeafSpec.*",
        ".*is_sharded.*", ".*Precision bf16-mixed is not supported.*", ".*on_validation_epoch_end.*",
        ".*`isinstance\\(treespec, LeafSpec\\)`.*", ".*You're resuming from a checkpoint.*",
        ".*that ended before the epoch ended.*", ".*`training_step` returned `None`.*",
        ".*Trying to infer the `batch_size`.*", ".*dropout option adds dropout.*", ".*sync_dist=True.*",
        ".*could not find the monitored key.*",
    ):
        warnings.filterwarnings("ignore", message=pattern)


def _looks_like_run(d: Path) -> bool:
    return (d / runfiles.CONFIG).exists() or (d / runfiles.SUMMARY).exists() or (d / COMPARE_FILE).exists()


def _nonempty(d: Path) -> bool:
    return d.exists() and (not d.is_dir() or any(d.iterdir()))


def check_new_dir(d: Path, *, resume: bool, overwrite: bool, what: str = "run directory") -> bool:
    """Validate the target directory; returns True if it exists and will be replaced."""
    if d.exists() and not d.is_dir():
        raise ToolkitError(f"{d} exists and is not a directory; choose another --out")
    if not _nonempty(d):
        if resume:
            raise ToolkitError(f"--resume: {d} does not exist or is empty; drop --resume to start a new run")
        return False
    if resume:
        return False
    if not overwrite:
        raise ToolkitError(f"{what} {d} already exists; pass --resume to continue it, --overwrite to "
                           "replace it, or choose another --out")
    if not _looks_like_run(d):
        raise ToolkitError(f"--overwrite: {d} is not a momentumrnn run directory (no config.yaml); "
                           "refusing to delete it, choose another --out")
    return True


# ---------------------------------------------------------------------------------------------
# one run

class PreparedRun:
    """Everything a run needs, validated, before anything is written."""

    def __init__(self, cfg: dict, run_dir: Path, *, resume: bool, overwrite: bool, label: Optional[str] = None):
        from .models import build_model, check_optim, count_parameters
        from .tasks import build_task

        self.writer = is_writer()
        self.run_dir = Path(run_dir).absolute()
        self.resume = resume
        self.replace = False
        self.ckpt_path: Optional[Path] = None
        self.ckpt_step = 0
        if self.writer:
            self.replace = check_new_dir(self.run_dir, resume=resume, overwrite=overwrite)
        if resume:
            saved = load_run_config(self.run_dir)
            changes = config_changes(saved, cfg)
            if changes:
                from .config import flatten

                a, b = flatten(saved), flatten(cfg)
                k = changes[0]
                more = f" (and {len(changes) - 1} more)" if len(changes) > 1 else ""
                raise ToolkitError(
                    f"--resume: {self.run_dir} ran with {k}={a.get(k)!r} but this command asks for "
                    f"{b.get(k)!r}{more}; repeat the original settings or start a new run with another --out"
                )
            last = self.run_dir / runfiles.CKPT_DIR / runfiles.LAST
            if last.exists():
                from .callbacks import load_checkpoint_file

                ckpt = load_checkpoint_file(last)
                self.ckpt_path = last
                self.ckpt_step = int(ckpt.get("global_step", 0))
                ckpt_shapes = {k: tuple(v.shape) for k, v in ckpt["state_dict"].items() if hasattr(v, "shape")}
                del ckpt
        self.cfg = cfg
        if cfg["train"].get("threads"):
            import torch

            torch.set_num_threads(cfg["train"]["threads"])
        self.label = label or model_label(cfg["model"])
        self.task = build_task(cfg["task"], seed=cfg["train"]["seed"])
        self.task.check_run(cfg)
        self.train_split, self.test_split = self.task.load()
        import lightning.pytorch as pl

        _quiet_lightning()
        pl.seed_everything(cfg["train"]["seed"], workers=False, verbose=False)
        self.model = build_model(cfg["model"], self.task)
        self.params = count_parameters(self.model)
        if self.ckpt_path is not None:
            want = {f"model.{k}": tuple(v.shape) for k, v in self.model.state_dict().items()}
            if want != ckpt_shapes:
                diff = sorted(set(want) ^ set(ckpt_shapes)) or sorted(k for k in want if want[k] != ckpt_shapes[k])
                raise ToolkitError(f"checkpoint {self.ckpt_path} does not fit the model ({diff[0]} differs); it "
                                   "was made by another model or library version: start again with --overwrite")
        self.optim_note = check_optim(cfg["optim"], self.model)

    def write_start(self) -> None:
        if not self.writer:
            self.task.attach(self.run_dir, writer=False)
            return
        if self.replace:
            shutil.rmtree(self.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        header = "# momentumrnn run config (resolved). Re-run: momentumrnn train --recipe config.yaml\n"
        runfiles.atomic_write_text(self.run_dir / runfiles.CONFIG, header + dump_yaml(self.cfg))
        self.task.attach(self.run_dir, writer=True)
        if self.resume:
            from .callbacks import Recorder

            cols = Recorder.columns_for(self.task)
            runfiles.truncate_metrics(self.run_dir, self.ckpt_step, cols)


def make_trainer(prep: PreparedRun, module, *, progress: bool):
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    from .callbacks import AtomicCheckpointIO, ProgressBar

    t = prep.cfg["train"]
    ckdir = prep.run_dir / runfiles.CKPT_DIR
    callbacks = [
        ModelCheckpoint(dirpath=ckdir, filename="best", monitor=module.monitor, mode=prep.task.mode,
                        save_top_k=1, save_last=True, enable_version_counter=False,
                        auto_insert_metric_name=False),
    ]
    if t["checkpoint_every_steps"]:
        callbacks.append(ModelCheckpoint(dirpath=ckdir, filename="last", monitor=None, save_top_k=1,
                                         every_n_train_steps=t["checkpoint_every_steps"],
                                         enable_version_counter=False, auto_insert_metric_name=False))
    if t.get("grad_norm_steps") and prep.writer:
        from .diagnostics import make_probe_callback

        callbacks.append(make_probe_callback(prep.run_dir, t["grad_norm_steps"], t["grad_norm_batch"]))
    show = progress and prep.writer and sys.stderr.isatty()
    if show:
        callbacks.append(ProgressBar(refresh_rate=1 if sys.stderr.isatty() else 10, leave=False))
    logger_kwargs = {"purge_step": prep.ckpt_step} if prep.resume and prep.ckpt_step else {}
    logger = TensorBoardLogger(save_dir=str(prep.run_dir), name="tb", version="", default_hp_metric=False,
                               **logger_kwargs)
    world = t["devices"] * t["num_nodes"]
    strategy = "auto"
    if world > 1:
        from lightning.pytorch.strategies import DDPStrategy

        strategy = DDPStrategy(find_unused_parameters=False)
    accelerator = {"cuda": "gpu"}.get(t["accelerator"], t["accelerator"])
    return pl.Trainer(
        accelerator=accelerator,
        devices=t["devices"],
        num_nodes=t["num_nodes"],
        strategy=strategy,
        precision=PRECISION[t["precision"]],
        max_epochs=t["epochs"],
        max_steps=t["max_steps"] or -1,
        limit_train_batches=t["limit_train_batches"] or 1.0,
        limit_val_batches=t["limit_eval_batches"] or 1.0,
        val_check_interval=1.0 / t["evals_per_epoch"],
        reload_dataloaders_every_n_epochs=1 if prep.task.reload_loaders_every_epoch else 0,
        gradient_clip_val=t["grad_clip"] or None,
        gradient_clip_algorithm="norm",
        # deterministic kernels where they exist; an op without one warns instead of failing (GPUs)
        deterministic="warn" if t["deterministic"] else False,
        callbacks=callbacks,
        logger=logger,
        enable_progress_bar=show,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        plugins=[AtomicCheckpointIO()],
        default_root_dir=str(prep.run_dir),
        log_every_n_steps=1,
    )


def train_run(cfg: dict, run_dir: Path, *, resume: bool = False, overwrite: bool = False,
              label: Optional[str] = None, progress: Optional[bool] = None, prefix: str = "") -> dict:
    """Train one model on one task; returns the run's summary (also in ``run_dir/summary.json``)."""
    prep = PreparedRun(cfg, run_dir, resume=resume, overwrite=overwrite, label=label)
    from .callbacks import Recorder
    from .module import RunModule

    prep.write_start()
    recorder = None
    if prep.writer:
        progress_on = cfg["train"]["progress"] if progress is None else progress
        recorder = Recorder(prep.run_dir, cfg, prep.task, prep.label, params=prep.params,
                            echo_rows=bool(progress_on) and not sys.stderr.isatty())
        if prep.optim_note:
            recorder.note(prep.optim_note)
    module = RunModule(cfg, prep.task, prep.model, prep.train_split, prep.test_split, recorder=recorder)
    progress = cfg["train"]["progress"] if progress is None else progress
    trainer = make_trainer(prep, module, progress=progress)
    what = (f"{prefix}{prep.label} on {cfg['task']['name']} (seed {cfg['train']['seed']}): "
            f"{len(prep.train_split)} train / {len(prep.test_split)} test examples "
            f"({prep.task.steps_per_epoch(len(prep.train_split), cfg['train']['batch_size'])} steps per epoch), "
            f"{prep.params:,} parameters, {cfg['train']['devices'] * cfg['train']['num_nodes']} process(es)")
    if prep.ckpt_path is not None:
        say(f"{what}\n  resuming from step {prep.ckpt_step} ({prep.ckpt_path})")
    elif resume:
        say(f"{what}\n  no checkpoint yet in {prep.run_dir}; starting it from the beginning")
    else:
        say(what)
    started = time.time()
    try:
        with warnings.catch_warnings():
            _quiet_lightning()
            trainer.fit(module, ckpt_path=str(prep.ckpt_path) if prep.ckpt_path else None, weights_only=True)
            if not trainer.interrupted and module.last_eval_step < trainer.global_step:
                # stopped by max_steps between two evaluations: evaluate the final weights too
                trainer.validate(module, verbose=False)
    except SystemExit:  # Lightning's answer to Ctrl-C
        if recorder is not None:
            recorder.write_summary("interrupted")
            print(f"interrupted: continue with the same command and --resume (--out {prep.run_dir})",
                  file=sys.stderr, flush=True)
        raise
    status = "interrupted" if trainer.interrupted else "completed"
    if recorder is None:
        return {"status": status}
    summary = recorder.write_summary(status)
    with contextlib.suppress(Exception):
        recorder.plot()
    say(f"  {describe(summary)}  [{time.time() - started:.0f} s] -> {prep.run_dir}")
    return summary


def describe(summary: dict) -> str:
    m = summary.get("metric", "")
    fin = (summary.get("final") or {}).get(m)
    best = summary.get("best") or {}
    if fin is None:
        return "no evaluation yet"
    txt = f"{m} {fin:.4f} (best {best.get('value', float('nan')):.4f} at epoch {best.get('epoch', 0):g})"
    hit = summary.get("reached_target")
    if summary.get("target") is not None:
        txt += (f", target {summary['target']:g} reached at epoch {hit['epoch']:g}" if hit
                else f", target {summary['target']:g} not reached")
    return txt


# ---------------------------------------------------------------------------------------------
# comparisons

class RunFailed(ToolkitError):
    """A training process of a parallel comparison failed (exit code 1)."""

    exit_code = 1


def compare_runs(cfg: dict, out_dir: Path, *, resume: bool = False, overwrite: bool = False,
                 progress: Optional[bool] = None, target: Optional[float] = None, jobs: int = 1) -> str:
    """Train every model of ``cfg['models']`` with every seed of ``cfg['seeds']``, then report.

    ``jobs > 1`` trains that many runs at once, each in its own process (``momentumrnn train``
    on the run's resolved config) with ``cpu_count // jobs`` threads unless ``train.threads`` is set.
    """
    out_dir = Path(out_dir).absolute()
    writer = is_writer()
    if jobs < 1:
        raise ToolkitError(f"--jobs must be >= 1, got {jobs}")
    if jobs > 1 and cfg["train"]["devices"] * cfg["train"]["num_nodes"] > 1:
        raise ToolkitError("--jobs > 1 trains runs side by side in single processes; use it with --devices 1")
    replace = check_new_dir(out_dir, resume=resume, overwrite=overwrite, what="output directory") if writer else False
    saved_path = out_dir / COMPARE_FILE
    if resume and writer:
        if not saved_path.exists():
            raise ToolkitError(f"--resume: {out_dir} holds no {COMPARE_FILE}; it is not a comparison directory")
        import yaml

        try:
            saved = yaml.safe_load(saved_path.read_text(encoding="utf-8"))
        except Exception:
            raise ToolkitError(f"{saved_path} is corrupt; restore it or start again with --overwrite") from None
        changes = config_changes({k: v for k, v in saved.items() if k not in ("models", "seeds")},
                                 {k: v for k, v in cfg.items() if k not in ("models", "seeds")})
        if changes or saved.get("models") != cfg["models"] or saved.get("seeds") != cfg["seeds"]:
            which = changes[0] if changes else ("models" if saved.get("models") != cfg["models"] else "seeds")
            raise ToolkitError(f"--resume: {out_dir} was started with a different {which}; repeat the "
                               "original settings or choose another --out")
    plan = []
    for model in cfg["models"]:
        for seed in cfg["seeds"]:
            rc = run_config(cfg, model, seed)
            d = out_dir / slug(model_label(model)) / f"seed{seed}"
            plan.append((rc, d))
    # validate every model before training any
    from .models import build_model
    from .tasks import build_task

    task = build_task(cfg["task"])
    for rc, _ in plan:
        build_model(rc["model"], task)
    if writer:
        if replace:
            shutil.rmtree(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        runfiles.atomic_write_text(saved_path, "# momentumrnn comparison (resolved)\n" + dump_yaml(cfg))
    n = len(plan)
    todo = []
    for i, (rc, d) in enumerate(plan):
        run_resume = resume and _nonempty(d)
        summary = runfiles.read_summary(d) if run_resume else None
        if summary and summary.get("status") == "completed" and writer and rc["train"]["epochs"] <= (summary.get("epochs_planned") or 0) \
                and (rc["train"]["devices"] * rc["train"]["num_nodes"]) == 1 and not rc["train"]["max_steps"]:
            say(f"[{i + 1}/{n}] {model_label(rc['model'])} seed {rc['train']['seed']}: already complete")
            continue
        todo.append((i, rc, d, run_resume))
    if jobs > 1 and len(todo) > 1:
        _run_parallel(todo, n, jobs, out_dir)
    else:
        for i, rc, d, run_resume in todo:
            train_run(rc, d, resume=run_resume, overwrite=False, label=model_label(rc["model"]),
                      progress=progress, prefix=f"[{i + 1}/{n}] ")
    if not writer:
        return ""
    from .report import make_report

    return make_report([out_dir], out_dir=out_dir, target=target)


def _run_parallel(todo: list, n: int, jobs: int, out_dir: Path) -> None:
    """Run ``todo`` (index, config, run dir, resume) ``jobs`` at a time as ``momentumrnn train``
    processes; their output is printed line by line with a ``[model seed]`` prefix."""
    import subprocess
    import threading

    recipes = out_dir / ".recipes"
    recipes.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    lock = threading.Lock()
    queue = list(todo)
    running: dict = {}
    failed: list[str] = []

    bars = sys.stdout.isatty()  # a progress bar per running job, else the jobs' lines

    def pump(proc, prefix: str, rc: dict) -> None:
        from tqdm import tqdm

        bar = None
        for line in proc.stdout:
            line = line.rstrip("\n")
            with lock:
                m = _HEADER.search(line)
                if bars and m and bar is None:
                    t = rc["train"]
                    per_epoch = int(m.group(1))
                    if t["limit_train_batches"]:
                        per_epoch = min(per_epoch, t["limit_train_batches"])
                    total = per_epoch * t["epochs"]
                    if t["max_steps"]:
                        total = min(total, t["max_steps"])
                    bar = tqdm(total=total, desc=prefix.strip(" []"), unit="step", leave=True, dynamic_ncols=True)
                row = _ROW.search(line)
                if bar is not None and row:
                    bar.update(int(row.group(2)) - bar.n)
                    bar.set_postfix_str(" ".join(row.group(3).split())[:80], refresh=True)
                elif bar is not None:
                    tqdm.write(prefix + line)
                else:
                    print(prefix + line, flush=True)
        if bar is not None:
            bar.close()

    def start(i: int, rc: dict, d: Path, run_resume: bool) -> None:
        rc = dict(rc, train=dict(rc["train"]))
        if rc["train"].get("threads") is None:
            rc["train"]["threads"] = threads
        recipe = recipes / f"run{i}.yaml"
        runfiles.atomic_write_text(recipe, dump_yaml(rc))
        cmd = [sys.executable, "-m", "momentumrnn", "train", str(recipe), "--out", str(d)]
        if run_resume:
            cmd.append("--resume")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=env)
        label = f"{model_label(rc['model'])} seed {rc['train']['seed']}"
        t = threading.Thread(target=pump, args=(proc, f"[{i + 1}/{n} {label}] ", rc), daemon=True)
        t.start()
        running[proc] = (label, t)

    try:
        while queue or running:
            while queue and len(running) < jobs:
                start(*queue.pop(0))
            time.sleep(0.1)
            for proc in [p for p in running if p.poll() is not None]:
                label, t = running.pop(proc)
                t.join()
                if proc.returncode != 0:
                    failed.append(f"{label} (exit {proc.returncode})")
    except BaseException:
        for proc in running:
            proc.terminate()
        for proc in running:
            with contextlib.suppress(Exception):
                proc.wait(timeout=30)
        raise
    finally:
        shutil.rmtree(recipes, ignore_errors=True)
    if failed:
        raise RunFailed(f"{len(failed)} run(s) failed: {', '.join(failed)}; see their output above, fix the "
                        f"cause and continue with --resume")


def fresh_dir(base: Path) -> Path:
    """``base`` if free, else ``base-2``, ``base-3``, ..."""
    if not _nonempty(base):
        return base
    k = 2
    while _nonempty(base.with_name(f"{base.name}-{k}")):
        k += 1
    return base.with_name(f"{base.name}-{k}")
