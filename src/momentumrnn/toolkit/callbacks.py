"""Lightning plug-ins of the toolkit: atomic, weights-only checkpoint I/O, the run recorder
(metrics CSV, TensorBoard, summary.json, plots) and the progress bar."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import TQDMProgressBar
from tqdm import tqdm

from . import runfiles
from .errors import ToolkitError
from .plots import plot_curves

if TYPE_CHECKING:
    import lightning.pytorch as pl

    from .tasks.base import Task


def load_checkpoint_file(path: Path, map_location: Any = "cpu") -> dict:
    """``torch.load(weights_only=True)``: tensors and primitive containers only, never arbitrary
    pickled objects. A missing, truncated or foreign file raises ToolkitError."""
    path = Path(path)
    if not path.exists():
        raise ToolkitError(f"checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # zip / unpickling / EOF errors
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise ToolkitError(
            f"checkpoint {path} is corrupt or not a momentumrnn checkpoint ({first}); restore it, "
            "or start the run again with --overwrite"
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "global_step" not in ckpt:
        raise ToolkitError(
            f"checkpoint {path} is not a Lightning checkpoint of momentumrnn; "
            "restore it, or start the run again with --overwrite"
        )
    return ckpt


class AtomicCheckpointIO(TorchCheckpointIO):
    """Saves to a temporary file in the same directory, fsyncs, then ``os.replace``s it over the
    target: a kill during a save leaves the previous checkpoint intact. Loads weights-only."""

    def save_checkpoint(self, checkpoint: dict, path: str | Path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            try:  # make the rename itself durable
                fd = os.open(path.parent, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError:
                pass
        finally:
            if tmp.exists():
                tmp.unlink()

    def load_checkpoint(
        self, path: str | Path, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict:
        ckpt = load_checkpoint_file(Path(path), map_location=map_location or "cpu")
        relocate_callback_states(ckpt, Path(path).parent)
        return ckpt


_CKPT_PATH_KEYS = ("best_model_path", "kth_best_model_path", "last_model_path")


def relocate_callback_states(ckpt: dict, ckpt_dir: Path) -> None:
    """A run directory that was moved or copied: point the checkpoint callbacks' saved paths at the
    directory the checkpoint is loaded from (in place). Lightning otherwise warns that the dirpath
    changed and drops the best score, so the next evaluation would replace best.ckpt even if worse."""
    here = os.path.realpath(ckpt_dir)
    for state in (ckpt.get("callbacks") or {}).values():
        old = state.get("dirpath") if isinstance(state, dict) else None
        if not isinstance(old, str) or old == here:
            continue
        move = lambda p: os.path.join(here, os.path.basename(p)) if isinstance(p, str) and p else p  # noqa: E731
        state["dirpath"] = here
        for k in _CKPT_PATH_KEYS:
            if k in state:
                state[k] = move(state[k])
        if isinstance(state.get("best_k_models"), dict):
            state["best_k_models"] = {move(k): v for k, v in state["best_k_models"].items()}


class Recorder:
    """Rank 0's writer of the run directory: one CSV row per evaluation (also sent to the
    loggers, i.e. TensorBoard), summary.json after every evaluation, curves.png at the end."""

    def __init__(
        self,
        run_dir: Path,
        cfg: dict,
        task: Task,
        label: str,
        *,
        params: int,
        echo: bool = True,
        echo_rows: bool = False,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.cfg = cfg
        self.task = task
        self.label = label
        self.params = params
        self.echo = echo
        self.echo_rows = echo_rows  # one line per evaluation (progress without a terminal)
        self.metric = f"test_{task.metric}"
        self.mode = task.mode
        t = cfg["report"].get("target")
        self.target = task.default_target if t is None else t
        self.columns = self.columns_for(task)
        self.rows = runfiles.read_metrics(self.run_dir)
        self.notes: list[str] = []
        self.started = time.time()

    @staticmethod
    def columns_for(task: Task) -> list[str]:
        names = task.metric_names
        return ["epoch", "step", "time_s"] + [f"train_{k}" for k in names] + [f"test_{k}" for k in names] + ["lr"]

    def note(self, msg: str) -> None:
        self.notes.append(msg)
        if self.echo:
            tqdm.write(f"  {msg}", file=sys.stderr)

    def log_step(self, trainer: pl.Trainer, step: int, loss: float) -> None:
        for lg in trainer.loggers:
            lg.log_metrics({"train/loss_step": loss}, step=step)

    def add_row(self, trainer: pl.Trainer, row: dict, module: pl.LightningModule) -> None:
        self.rows.append(dict(row))
        runfiles.append_metrics(self.run_dir, row, self.columns)
        for lg in trainer.loggers:
            lg.log_metrics({k.replace("_", "/", 1): v for k, v in row.items() if k not in ("step",)}, step=row["step"])
        self.write_summary("running", trainer=trainer)
        if self.echo_rows:
            vals = "  ".join(f"{k} {row[k]:.4f}" for k in self.columns[3:-1] if isinstance(row.get(k), float))
            print(f"  epoch {row['epoch']:.2f}  step {row['step']}  {vals}  [{row['time_s']:.0f} s]", flush=True)

    def summary(self, status: str, trainer: pl.Trainer | None = None) -> dict:
        s = runfiles.summarize_rows(self.rows, self.metric, self.mode, self.target)
        out = {
            "status": status,
            "label": self.label,
            "task": getattr(self.task, "display_name", None) or self.cfg["task"]["name"],
            "model": self.cfg["model"],
            "seed": self.cfg["train"]["seed"],
            "parameters": self.params,
            "optimizer": self.cfg["optim"]["name"],
            **s,
            "epochs_planned": self.cfg["train"]["epochs"],
            "steps": self.rows[-1]["step"] if self.rows else 0,
            "epochs_done": self.rows[-1]["epoch"] if self.rows else 0,
            "train_time_s": self.rows[-1]["time_s"] if self.rows else 0.0,
            "notes": self.notes,
            "files": {
                "config": runfiles.CONFIG,
                "metrics": runfiles.METRICS,
                "curves": runfiles.CURVES,
                "tensorboard": "tb",
                "last_checkpoint": f"{runfiles.CKPT_DIR}/{runfiles.LAST}",
                "best_checkpoint": f"{runfiles.CKPT_DIR}/{runfiles.BEST}",
            },
        }
        return out

    def write_summary(self, status: str, trainer: pl.Trainer | None = None) -> dict:
        s = self.summary(status, trainer)
        runfiles.write_summary(self.run_dir, s)
        return s

    def plot(self) -> None:
        plot_curves(
            [{"label": self.label, "rows": self.rows}],
            self.run_dir / runfiles.CURVES,
            title=f"{self.label} on {self.cfg['task']['name']} (seed {self.cfg['train']['seed']})",
            target=self.target,
            metric=self.metric,
        )


class ProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, showing the running train loss and the last test metric."""

    def get_metrics(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
    ) -> dict[str, int | str | float | dict[str, float]]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items
