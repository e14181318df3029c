"""The LightningModule of a run: training / evaluation steps, exact metrics under DDP,
optimizers (``lr_orth`` groups, SGD -> ASGD), per-step reseeding and the resumable state."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

import lightning.pytorch as pl
import torch

from .loaders import Split, step_seed
from .models import make_optimizer, optimizer_step_hooks
from .tasks import RunContext, StepOutput, Task

if TYPE_CHECKING:
    from lightning.pytorch.core.optimizer import LightningOptimizer
    from lightning.pytorch.utilities.types import STEP_OUTPUT

STATE_KEY = "momentumrnn"
STATE_FORMAT = 1


class RunModule(pl.LightningModule):
    """Trains ``model`` on ``task``; ``recorder`` (rank 0 only) writes the run's files.

    The task is called through its run interface (``train_loader``, ``train_step``, ...: see
    ``tasks/base.py``) with a :class:`RunContext`; it never calls back into this module."""

    def __init__(
        self, cfg: dict, task: Task, model: torch.nn.Module, train: Split, test: Split, recorder: Any | None = None
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.task = task
        self.model = model
        self.train_split = train
        self.test_split = test
        self.recorder = recorder
        self.seed = int(cfg["train"]["seed"])
        self.names = task.metric_names
        self.monitor = f"test_{task.metric}"
        self._hooks = optimizer_step_hooks(model)
        self._acc = self._zeros()
        self._vacc = self._zeros()
        self.asgd = False
        self.history: list[float] = []
        self.train_time = 0.0
        self.evals = 0
        self.last_eval_step = -1
        self._t0: float | None = None
        self._swapped: list = []
        self._lr_restore: list = []

    # -- the task's view of the run -------------------------------------------------------------
    def context(self) -> RunContext:
        trainer = self.trainer
        t = self.cfg["train"]

        def batches_per_epoch() -> float:
            nb = trainer.num_training_batches
            return float(nb) if math.isfinite(nb) else math.inf

        return RunContext(
            seed=self.seed,
            batch_size=t["batch_size"],
            eval_batch_size=t["eval_batch_size"],
            rank=trainer.global_rank,
            world_size=trainer.world_size,
            epoch=lambda: trainer.current_epoch,
            step=lambda: trainer.global_step,
            batches_done=lambda: trainer.fit_loop.epoch_loop.batch_progress.current.completed,
            # (all_gather maps a tensor to a tensor; its stub types every container it takes)
            batches_per_epoch=batches_per_epoch,
            gather=cast(Callable[[torch.Tensor], torch.Tensor], self.all_gather),
        )

    def train_dataloader(self) -> Iterable[Any]:
        return self.task.train_loader(self.train_split, self.context())

    def val_dataloader(self) -> Iterable[Any]:
        return self.task.eval_loader(self.test_split, self.context())

    # -- steps -----------------------------------------------------------------------------------
    def _zeros(self) -> torch.Tensor:
        return torch.zeros(len(self.names) + 1, dtype=torch.float64)  # sums of metrics, then count

    def _add(self, acc: torch.Tensor, out: StepOutput) -> None:
        """Add a step's metric sums (missing ones count 0) and count to the running totals."""
        vals = [torch.as_tensor(out.sums.get(k, 0.0), dtype=torch.float64).detach().cpu() for k in self.names]
        acc += torch.stack([*vals, torch.as_tensor(out.count, dtype=torch.float64).detach().cpu()])

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # every step draws its random numbers (dropout, ...) from (seed, step, rank) only, so a
        # resumed run continues exactly where it stopped
        torch.manual_seed(step_seed(self.seed, self.global_step, self.global_rank))
        self._t0 = time.perf_counter()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        out = self.task.train_step(self.model, batch, self.context())
        self._add(self._acc, out)
        if out.lr_scale != 1.0:  # this step only: optimizer_step restores the learning rates
            for group in self.trainer.optimizers[0].param_groups:
                self._lr_restore.append((group, group["lr"]))
                group["lr"] = group["lr"] * out.lr_scale
        count = float(self._acc[-1])
        self.log(
            "loss",
            float(self._acc[0]) / max(count, 1.0),
            prog_bar=True,
            logger=False,
            on_step=True,
            on_epoch=False,
            batch_size=max(1, int(float(out.count))),
        )
        return out.loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._add(self._vacc, self.task.eval_step(self.model, batch, self.context()))

    def optimizer_step(
        self,
        epoch: int,
        batch_idx: int,
        optimizer: torch.optim.Optimizer | LightningOptimizer,
        optimizer_closure: Callable[[], Any] | None = None,
    ) -> None:
        try:
            optimizer.step(closure=optimizer_closure)
        finally:
            for group, lr in reversed(self._lr_restore):
                group["lr"] = lr
            self._lr_restore = []
        for hook in self._hooks:  # e.g. the DTRIV base change of orthogonal layers
            hook()

    def on_train_batch_end(self, outputs: STEP_OUTPUT, batch: Any, batch_idx: int) -> None:
        if self._t0 is not None:
            self.train_time += time.perf_counter() - self._t0
            self._t0 = None
        step = self.global_step
        if self.recorder is not None and outputs is not None and step % self.cfg["train"]["log_every_steps"] == 0:
            loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs
            self.recorder.log_step(self.trainer, step, float(loss.detach()))

    # -- evaluation ------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._vacc = self._zeros()
        if self.asgd:  # evaluate with the averaged weights, as NT-ASGD does
            opt = self.trainer.optimizers[0]
            self._swapped = []
            for group in opt.param_groups:
                for p in group["params"]:
                    ax = opt.state.get(p, {}).get("ax")
                    if ax is not None:
                        self._swapped.append((p, p.detach().clone()))
                        p.data.copy_(ax)

    def _reduce(self, t: torch.Tensor) -> torch.Tensor:
        if self.trainer.world_size > 1:
            t = self.trainer.strategy.reduce(t.to(self.device), reduce_op="sum").cpu()
        return t

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        for p, saved in self._swapped:
            p.data.copy_(saved)
        self._swapped = []
        both = self._reduce(torch.cat([self._acc, self._vacc]))
        tr, te = both[: len(self._acc)], both[len(self._acc) :]
        self._acc = self._zeros()
        row: dict[str, Any] = {}
        nb = max(1, int(self.trainer.num_training_batches)) if math.isfinite(self.trainer.num_training_batches) else 1
        row["epoch"] = round(self.global_step / nb, 6)
        row["step"] = int(self.global_step)
        row["time_s"] = round(self.train_time, 3)
        for i, k in enumerate(self.names):
            row[f"train_{k}"] = float(tr[i] / tr[-1]) if tr[-1] > 0 else float("nan")
        for i, k in enumerate(self.names):
            row[f"test_{k}"] = float(te[i] / te[-1]) if te[-1] > 0 else float("nan")
        row["lr"] = float(self.trainer.optimizers[0].param_groups[0]["lr"]) if self.trainer.optimizers else float("nan")
        self.task.finish_row(row)
        self.evals += 1
        self.last_eval_step = row["step"]
        self.log(self.monitor, row[self.monitor], prog_bar=True, logger=False)
        self._maybe_switch_to_asgd(row["test_loss"])
        if self.recorder is not None:
            self.recorder.add_row(self.trainer, row, self)

    def _maybe_switch_to_asgd(self, test_loss: float) -> None:
        optim = self.cfg["optim"]
        if optim["name"] != "sgd_asgd" or self.asgd:
            return
        n = optim["asgd_nonmono"]
        if len(self.history) > n and test_loss > min(self.history[:-n]):
            self.asgd = True
            self.trainer.strategy.optimizers = [make_optimizer(optim, self.model, asgd=True)]
            if self.recorder is not None:
                self.recorder.note(f"switched to ASGD at step {self.global_step}")
        self.history.append(float(test_loss))

    # -- optimizers ------------------------------------------------------------------------------
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return make_optimizer(self.cfg["optim"], self.model, asgd=self.asgd)

    # -- resumable state (tensors and primitive containers only: loads with weights_only=True) ---
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # the running train sums of the epoch so far, over all processes (each holds its share): a
        # run resumed mid-epoch reports the same epoch metrics as an uninterrupted one, under DDP too
        train_acc = self._reduce(self._acc.clone())
        checkpoint[STATE_KEY] = {
            "format": STATE_FORMAT,
            "config": self.cfg,
            "train_acc": train_acc,
            "asgd": self.asgd,
            "history": list(self.history),
            "train_time": float(self.train_time),
            "evals": int(self.evals),
            "task": self.task.run_state(self.context()),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        reopen_epoch_cut_by_max_steps(checkpoint)
        state = checkpoint.get(STATE_KEY, {})
        if "train_acc" in state:
            # the saved sums are global: rank 0 carries them, the others start from zero, so the
            # next reduction adds them once
            saved = state["train_acc"].to(torch.float64).cpu().clone()
            self._acc = saved if self.global_rank == 0 else torch.zeros_like(saved)
        self.asgd = bool(state.get("asgd", False))
        self.history = [float(x) for x in state.get("history", [])]
        self.train_time = float(state.get("train_time", 0.0))
        self.evals = int(state.get("evals", 0))
        self.task.load_run_state(state.get("task") or {})
        self.last_eval_step = int(checkpoint.get("global_step", -1))


def reopen_epoch_cut_by_max_steps(checkpoint: dict) -> bool:
    """Lightning marks the epoch in which ``max_steps`` stopped a run as completed, so resuming
    (with a larger ``max_steps`` or none) would skip that epoch's remaining batches. Re-open it in
    the checkpoint's loop state (in place; Lightning restores its loops from this dict after the
    module's ``on_load_checkpoint``), as a checkpoint saved mid-epoch has it: the loaders then skip
    exactly the batches already trained. Returns True if the checkpoint was changed."""
    saved = (checkpoint.get(STATE_KEY) or {}).get("config") or {}
    max_steps = (saved.get("train") or {}).get("max_steps")
    fit = (checkpoint.get("loops") or {}).get("fit_loop") or {}
    epochs, batches = fit.get("epoch_progress"), fit.get("epoch_loop.batch_progress")
    if not max_steps or checkpoint.get("global_step") != max_steps or not epochs or not batches:
        return False
    if batches.get("is_last_batch", True) or batches["current"].get("completed", 0) == 0:
        return False  # the epoch really ended (or nothing of the next one was trained)
    if epochs["current"].get("completed", 0) < 1 or epochs["current"].get("processed", 0) < 1:
        return False
    for part in ("total", "current"):
        for key in ("processed", "completed"):
            epochs[part][key] -= 1
    checkpoint["epoch"] = max(0, int(checkpoint.get("epoch", 1)) - 1)
    return True
