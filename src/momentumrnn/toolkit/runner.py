"""One run (:func:`train_run`): checks, the run directory, the Lightning trainer.

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
import shlex
import shutil
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities.exceptions import SIGTERMException

from . import allocator, capability, runfiles
from .callbacks import AtomicCheckpointIO, ProgressBar, Recorder, load_checkpoint_file
from .checkpointing import LastCheckpoint, checkpoint_callbacks
from .config import config_changes, dump_yaml, flatten, load_run_config
from .errors import ToolkitError
from .interrupts import (
    RunInterrupted,
    StopOnSignal,
    StopRequested,
    describe_exit,
    on_slurm,
    requeue_slurm_job,
    signal_name,
    slurm_environment,
    slurm_restarted,
)
from .models import check_optim, count_parameters, split_parameters
from .module import RunModule
from .options import ORTH_OPTIM_KEYS, model_label
from .probe import make_probe_callback
from .tasks import build_task

if TYPE_CHECKING:
    from lightning.pytorch.plugins import _PLUGIN_INPUT  # the element type of Trainer(plugins=[...])

PRECISION: dict[str, Literal["32-true", "bf16-mixed"]] = {"fp32": "32-true", "bf16": "bf16-mixed"}
COMPARE_FILE = "compare.yaml"
# temporary files of atomic writes (``.NAME.tmp-PID``) that a killed writer can leave behind
_STALE_TMP = re.compile(r"^\..+\.tmp-(\d+)$")


class RunFailed(ToolkitError):
    """Training failed after it started (a dead worker, a failed job): exit code 1, resumable."""

    exit_code = 1


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
        ".*does not have many workers.*",
        ".*exists and is not empty.*",
        ".*is not a `DataLoader`.*",
        ".*The number of training batches.*",
        ".*Checkpoint directory.*",
        ".*LeafSpec.*",
        ".*is_sharded.*",
        ".*Precision bf16-mixed is not supported.*",
        ".*on_validation_epoch_end.*",
        ".*`isinstance\\(treespec, LeafSpec\\)`.*",
        ".*You're resuming from a checkpoint.*",
        ".*that ended before the epoch ended.*",
        ".*`training_step` returned `None`.*",
        ".*Trying to infer the `batch_size`.*",
        ".*dropout option adds dropout.*",
        ".*sync_dist=True.*",
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
        raise ToolkitError(
            f"{what} {d} already exists; pass --resume to continue it, --overwrite to "
            "replace it, or choose another --out"
        )
    if not _looks_like_run(d):
        raise ToolkitError(
            f"--overwrite: {d} is not a momentumrnn run directory (no config.yaml); "
            "refusing to delete it, choose another --out"
        )
    return True


# ---------------------------------------------------------------------------------------------
# one run


class PreparedRun:
    """Everything a run needs, validated, before anything is written."""

    def __init__(self, cfg: dict, run_dir: Path, *, resume: bool, overwrite: bool, label: str | None = None):
        self.writer = is_writer()
        self.run_dir = Path(run_dir).absolute()
        self.resume = resume
        self.replace = False
        self.ckpt_path: Path | None = None
        self.ckpt_step = 0
        orth_only: list[str] = []
        if self.writer:
            self.replace = check_new_dir(self.run_dir, resume=resume, overwrite=overwrite)
        if resume:
            saved = load_run_config(self.run_dir)
            changes = config_changes(saved, cfg)
            # a comparison now gives lr_orth / orth_name only to models with orthogonal parameters:
            # runs it started before may hold them; that is checked once the model is built
            orth_only = [k for k in changes if k.partition(".")[2] in ORTH_OPTIM_KEYS and k.startswith("optim.")]
            if len(changes) > len(orth_only):
                raise _changed(self.run_dir, saved, cfg, changes)
            last = self.run_dir / runfiles.CKPT_DIR / runfiles.LAST
            if last.exists():
                ckpt = load_checkpoint_file(last)
                self.ckpt_path = last
                self.ckpt_step = int(ckpt.get("global_step", 0))
                ckpt_shapes = {k: tuple(v.shape) for k, v in ckpt["state_dict"].items() if hasattr(v, "shape")}
                del ckpt
        self.cfg = cfg
        capability.check_devices(cfg["train"])
        if cfg["train"]["precision"] == "bf16":
            capability.check_bf16(cfg["train"], cfg["model"])
        if cfg["train"].get("threads"):
            torch.set_num_threads(cfg["train"]["threads"])
        self.label = label or model_label(cfg["model"])
        self.task = build_task(cfg["task"], seed=cfg["train"]["seed"])
        self.task.check_run(cfg)
        self.train_split, self.test_split = self.task.load()
        _quiet_lightning()
        pl.seed_everything(cfg["train"]["seed"], workers=False, verbose=False)
        self.model = self.task.build_model(cfg["model"])
        self.params = count_parameters(self.model)
        if self.ckpt_path is not None:
            want = {f"model.{k}": tuple(v.shape) for k, v in self.model.state_dict().items()}
            if want != ckpt_shapes:
                diff = sorted(set(want) ^ set(ckpt_shapes)) or sorted(k for k in want if want[k] != ckpt_shapes[k])
                raise ToolkitError(
                    f"checkpoint {self.ckpt_path} does not fit the model ({diff[0]} differs); it "
                    "was made by another model or library version: start again with --overwrite"
                )
        if orth_only and split_parameters(self.model)[0]:
            raise _changed(self.run_dir, saved, cfg, orth_only)
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
            remove_stale_temporaries(self.run_dir)
            cols = Recorder.columns_for(self.task)
            runfiles.truncate_metrics(self.run_dir, self.ckpt_step, cols)


def _changed(run_dir: Path, saved: dict, cfg: dict, changes: list[str]) -> ToolkitError:
    a, b = flatten(saved), flatten(cfg)
    k = changes[0]
    more = f" (and {len(changes) - 1} more)" if len(changes) > 1 else ""
    return ToolkitError(
        f"--resume: {run_dir} ran with {k}={a.get(k)!r} but this command asks for {b.get(k)!r}{more}; "
        "repeat the original settings or start a new run with another --out"
    )


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete the temporary files (``.last.ckpt.tmp-PID``, ``.summary.json.tmp-PID``, ...) that a
    writer killed during an atomic write left in ``run_dir`` and its ``checkpoints/``; a file of a
    process still alive (another writer) is left alone. Returns the removed paths."""
    removed = []
    for d in (run_dir, run_dir / runfiles.CKPT_DIR):
        if not d.is_dir():
            continue
        for p in d.iterdir():
            m = _STALE_TMP.match(p.name)
            if not m or not p.is_file():
                continue
            pid = int(m.group(1))
            if pid != os.getpid() and _alive(pid):
                continue
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def make_trainer(
    prep: PreparedRun, module: RunModule, *, progress: bool, stop: StopOnSignal | None = None
) -> pl.Trainer:
    t = prep.cfg["train"]
    callbacks = checkpoint_callbacks(prep.run_dir, t, module.monitor, prep.task.mode)
    if stop is not None:
        stop.bind(callbacks[1], [cb for cb in callbacks if isinstance(cb, LastCheckpoint)])
    if t.get("grad_norm_steps") and prep.writer:
        callbacks.append(make_probe_callback(prep.run_dir, t["grad_norm_steps"], t["grad_norm_batch"]))
    show = progress and prep.writer and sys.stderr.isatty()
    if show:
        callbacks.append(ProgressBar(refresh_rate=1 if sys.stderr.isatty() else 10, leave=False))
    if stop is not None:
        callbacks.append(stop)  # a Checkpoint: Lightning calls it after the ModelCheckpoints
    logger_kwargs: dict[str, Any] = {"purge_step": prep.ckpt_step} if prep.resume and prep.ckpt_step else {}
    logger = TensorBoardLogger(
        save_dir=str(prep.run_dir), name="tb", version="", default_hp_metric=False, **logger_kwargs
    )
    world = t["devices"] * t["num_nodes"]
    strategy: str | DDPStrategy = "auto"
    if world > 1:
        strategy = DDPStrategy(find_unused_parameters=False)
    accelerator = {"cuda": "gpu"}.get(t["accelerator"], t["accelerator"])
    plugins: list[_PLUGIN_INPUT] = [AtomicCheckpointIO()]
    plugins += [env for env in (slurm_environment(),) if env is not None]
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
        plugins=plugins,
        default_root_dir=str(prep.run_dir),
        log_every_n_steps=1,
    )


def train_run(
    cfg: dict,
    run_dir: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    label: str | None = None,
    progress: bool | None = None,
    prefix: str = "",
) -> dict:
    """Train one model on one task; returns the run's summary (also in ``run_dir/summary.json``).

    A signal (SIGTERM, SIGINT, SIGUSR1) stops it after saving the current step: RunInterrupted
    (exit code 128 + signal) on rank 0, SystemExit with that code on the other ranks."""
    if not resume and not overwrite and slurm_restarted() and _looks_like_run(Path(run_dir)):
        resume = True  # SLURM requeued the job: the same command continues its run
    prep = PreparedRun(cfg, run_dir, resume=resume, overwrite=overwrite, label=label)
    prep.write_start()
    recorder = None
    if prep.writer:
        progress_on = cfg["train"]["progress"] if progress is None else progress
        recorder = Recorder(
            prep.run_dir,
            cfg,
            prep.task,
            prep.label,
            params=prep.params,
            echo_rows=bool(progress_on) and not sys.stderr.isatty(),
        )
        if prep.optim_note:
            recorder.note(prep.optim_note)
    module = RunModule(cfg, prep.task, prep.model, prep.train_split, prep.test_split, recorder=recorder)
    progress = cfg["train"]["progress"] if progress is None else progress
    stop = StopOnSignal(
        requeue=requeue_slurm_job if cfg["train"]["requeue"] and on_slurm() else None,
        dead_line=lambda rank, code: _dead_line(prep, trainer, stop, rank, code),
    )
    trainer = make_trainer(prep, module, progress=progress, stop=stop)
    what = (
        f"{prefix}{prep.label} on {cfg['task']['name']} (seed {cfg['train']['seed']}): "
        f"{len(prep.train_split)} train / {len(prep.test_split)} test examples "
        f"({prep.task.steps_per_epoch(len(prep.train_split), cfg['train']['batch_size'])} steps per epoch), "
        f"{prep.params:,} parameters, {cfg['train']['devices'] * cfg['train']['num_nodes']} process(es)"
    )
    if prep.ckpt_path is not None:
        say(f"{what}\n  resuming from step {prep.ckpt_step} ({prep.ckpt_path})")
    elif resume:
        say(f"{what}\n  no checkpoint yet in {prep.run_dir}; starting it from the beginning")
    else:
        say(what)
    say(f"  memory: {allocator.describe()}")
    started = time.time()
    try:
        with warnings.catch_warnings():
            _quiet_lightning()
            trainer.fit(module, ckpt_path=str(prep.ckpt_path) if prep.ckpt_path else None, weights_only=True)
            if not trainer.interrupted and module.last_eval_step < trainer.global_step:
                # stopped by max_steps between two evaluations: evaluate the final weights too
                trainer.validate(module, verbose=False)
    except SystemExit as e:  # a signal (StopRequested), or Lightning's answer to one before training began
        raise _interrupted(prep, recorder, trainer, stop, e) from None
    except Exception as e:
        world = cfg["train"]["devices"] * cfg["train"]["num_nodes"]
        if world > 1 and _peer_died(e):
            raise _dead_peer(prep, recorder, trainer, stop) from None
        raise
    finally:
        stop.finish()
    status = "interrupted" if trainer.interrupted else "completed"
    if recorder is None:
        return {"status": status}
    summary = recorder.write_summary(status)
    with contextlib.suppress(Exception):
        recorder.plot()
    say(f"  {describe(summary)}  [{time.time() - started:.0f} s] -> {prep.run_dir}")
    return summary


def _interrupted(
    prep: PreparedRun, recorder: Recorder | None, trainer: pl.Trainer, stop: StopOnSignal, e: SystemExit
) -> BaseException:
    """The exception that ends a run stopped by a signal: the resume line on rank 0."""
    if isinstance(e, StopRequested):
        signum = e.signum
        what = f"{signal_name(signum)} at step {e.step}: saved {prep.run_dir / runfiles.CKPT_DIR / runfiles.LAST}"
    else:  # Lightning's own answer to a signal outside the training loop: nothing new saved
        signum = signal.SIGTERM if isinstance(e, SIGTERMException) else signal.SIGINT
        step = _last_step(prep, stop)
        what = (
            f"{signal_name(signum)} at step {trainer.global_step}, before a checkpoint of it: the last "
            f"checkpoint is {f'at step {step}' if step is not None else 'not written yet'}"
        )
    if recorder is None:
        return SystemExit(128 + signum)
    recorder.write_summary("interrupted")
    how = f"continue with: {resume_command(prep.run_dir)}"
    if isinstance(e, StopRequested) and e.requeued:
        how = f"{e.requeued} (or {how})"
    return RunInterrupted(what, how, signum)


def _last_step(prep: PreparedRun, stop: StopOnSignal) -> int | None:
    steps = [w.saved_step for w in stop.writers if w.saved_step] + ([prep.ckpt_step] if prep.ckpt_path else [])
    return max(steps) if steps else None


def _dead_line(prep: PreparedRun, trainer: pl.Trainer, stop: StopOnSignal, rank: int | None, code: int | None) -> str:
    who = (
        f"DDP rank {rank} died ({describe_exit(code)})"
        if rank is not None and code is not None
        else "DDP rank 0 died"
        if not prep.writer
        else "another DDP process died (its launcher, e.g. torchrun or srun, names it)"
    )
    step = _last_step(prep, stop)
    since = f"the last checkpoint (step {step})" if step is not None else "the beginning (no checkpoint yet)"
    return (
        f"{who} at step {trainer.global_step}; training stopped. Continue from {since} with: "
        f"{resume_command(prep.run_dir)}"
    )


def _dead_peer(prep: PreparedRun, recorder: Recorder | None, trainer: pl.Trainer, stop: StopOnSignal) -> BaseException:
    """A collective failed because another process died: one line, by one process."""
    if recorder is None:  # a worker: it speaks only when rank 0 (its launcher) is gone
        if stop.orphaned():
            print(f"error: {_dead_line(prep, trainer, stop, None, None)}", file=sys.stderr, flush=True)
        return SystemExit(1)
    recorder.write_summary("interrupted")
    dead = stop.watch.death() if stop.watch is not None else None
    if stop.watch is not None and not stop.watch.claim_report():
        return SystemExit(1)  # the watch has printed it already
    return RunFailed(_dead_line(prep, trainer, stop, *(dead or (None, None))))


_PEER_LOST = (
    "connection closed by peer",
    "connection reset by peer",
    "broken pipe",
    "gloo",
    "nccl",
    "socket",
    "timed out",
    "connection refused",
)


def _peer_died(e: BaseException) -> bool:
    """A collective failed because another process vanished (gloo / NCCL / the store)."""
    dist_errors = tuple(c for c in (getattr(torch.distributed, "DistError", None),) if c is not None)
    text = str(e).lower()
    return (dist_errors and isinstance(e, dist_errors)) or (
        isinstance(e, RuntimeError) and any(w in text for w in _PEER_LOST)
    )


def resume_command(run_dir: Path) -> str:
    """The command that continues a run: its own config.yaml holds every setting."""
    return f"momentumrnn train --resume --out {shlex.quote(str(run_dir))}"


def describe(summary: dict) -> str:
    m = summary.get("metric", "")
    fin = (summary.get("final") or {}).get(m)
    best = summary.get("best") or {}
    if fin is None:
        return "no evaluation yet"
    txt = f"{m} {fin:.4f} (best {best.get('value', float('nan')):.4f} at epoch {best.get('epoch', 0):g})"
    hit = summary.get("reached_target")
    if summary.get("target") is not None:
        txt += (
            f", target {summary['target']:g} reached at epoch {hit['epoch']:g}"
            if hit
            else f", target {summary['target']:g} not reached"
        )
    return txt
