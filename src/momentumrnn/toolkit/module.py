"""The LightningModule of a run: training / evaluation steps, exact metrics under DDP,
optimizers (``lr_orth`` groups, SGD -> ASGD), per-step reseeding and the resumable state."""

from __future__ import annotations

import math
import time
from typing import Any, Optional

import lightning.pytorch as pl
import torch

from .loaders import BatchLoader
from .models import SequenceModel, make_optimizer, optimizer_step_hooks
from .tasks import Split, Task

STATE_KEY = "momentumrnn"
STATE_FORMAT = 1


def step_seed(seed: int, step: int, rank: int) -> int:
    return (int(seed) * 6_364_136_223 + int(step) * 1_442_695 + int(rank) * 104_729 + 1) % (2**63 - 1)


class RunModule(pl.LightningModule):
    """Trains ``model`` on ``task``; ``recorder`` (rank 0 only) writes the run's files."""

    def __init__(self, cfg: dict, task: Task, model: SequenceModel, train: Split, test: Split,
                 recorder: Optional[Any] = None):
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
        self._t0: Optional[float] = None
        self._swapped: list = []
        self._lr_restore: list = []

    # -- data ------------------------------------------------------------------------------------
    def _world(self) -> tuple[int, int]:
        return self.trainer.global_rank, self.trainer.world_size

    def train_dataloader(self):
        return self.task.train_loader(self)

    def val_dataloader(self):
        return self.task.eval_loader(self)

    def standard_train_loader(self):
        rank, world = self._world()
        trainer = self.trainer
        return BatchLoader(
            self.train_split, self.cfg["train"]["batch_size"], shuffle=True, seed=self.seed,
            rank=rank, world_size=world, epoch_fn=lambda: trainer.current_epoch,
            skip_fn=lambda: trainer.fit_loop.epoch_loop.batch_progress.current.completed,
        )

    def standard_eval_loader(self):
        rank, world = self._world()
        bs = self.cfg["train"]["eval_batch_size"] or max(self.cfg["train"]["batch_size"], 256)
        return BatchLoader(self.test_split, bs, shuffle=False, rank=rank, world_size=world)

    # -- steps -----------------------------------------------------------------------------------
    def _zeros(self) -> torch.Tensor:
        return torch.zeros(len(self.names) + 1, dtype=torch.float64)  # sums of metrics, then count

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.task.inputs(x))

    def _step(self, batch, acc: torch.Tensor):
        x, y, w, n = batch
        pred = self(x)
        y = self.task.targets(x, y)
        loss_i = self.task.per_sample_loss(pred, y)
        stats = self.task.per_sample_stats(pred, y, loss_i)
        wd = w.detach().double()
        upd = torch.stack([(stats[k].double() * wd).sum() for k in self.names] + [wd.sum()])
        acc += upd.cpu()
        return loss_i, w, n

    def on_train_batch_start(self, batch, batch_idx):
        # every step draws its random numbers (dropout, ...) from (seed, step, rank) only, so a
        # resumed run continues exactly where it stopped
        torch.manual_seed(step_seed(self.seed, self.global_step, self.global_rank))
        self._t0 = time.perf_counter()

    def add_stats(self, sums: dict, count: float, *, train: bool) -> None:
        """Add metric sums (keys of ``self.names``; missing ones count 0) over ``count`` examples
        (or tokens) to the running training or evaluation totals."""
        acc = self._acc if train else self._vacc
        acc += torch.tensor([float(sums.get(k, 0.0)) for k in self.names] + [float(count)], dtype=torch.float64)

    def scale_lr(self, factor: float) -> None:
        """Scale the learning rates of the coming optimizer step only (called from a training step,
        e.g. AWD-LSTM's ``lr * seq_len / bptt``); :meth:`optimizer_step` restores them."""
        for group in self.trainer.optimizers[0].param_groups:
            self._lr_restore.append((group, group["lr"]))
            group["lr"] = group["lr"] * factor

    def training_step(self, batch, batch_idx):
        return self.task.training_step(self, batch, batch_idx)

    def validation_step(self, batch, batch_idx):
        self.task.validation_step(self, batch, batch_idx)

    def standard_training_step(self, batch, batch_idx):
        loss_i, w, n = self._step(batch, self._acc)
        world = self.trainer.world_size
        loss = (loss_i * w.to(loss_i.dtype)).sum() * (world / n.clamp(min=1).to(loss_i.dtype))
        count = float(self._acc[-1])
        self.log("loss", float(self._acc[0]) / max(count, 1.0), prog_bar=True, logger=False,
                 on_step=True, on_epoch=False, batch_size=int(w.numel()))
        return loss

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
        try:
            optimizer.step(closure=optimizer_closure)
        finally:
            for group, lr in reversed(self._lr_restore):
                group["lr"] = lr
            self._lr_restore = []
        for hook in self._hooks:  # e.g. the DTRIV base change of orthogonal layers
            hook()

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self._t0 is not None:
            self.train_time += time.perf_counter() - self._t0
            self._t0 = None
        step = self.global_step
        if self.recorder is not None and outputs is not None and step % self.cfg["train"]["log_every_steps"] == 0:
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            self.recorder.log_step(self.trainer, step, float(loss.detach()))

    # -- evaluation ------------------------------------------------------------------------------
    def on_validation_epoch_start(self):
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

    def standard_validation_step(self, batch, batch_idx):
        self._step(batch, self._vacc)

    def _reduce(self, t: torch.Tensor) -> torch.Tensor:
        if self.trainer.world_size > 1:
            t = self.trainer.strategy.reduce(t.to(self.device), reduce_op="sum").cpu()
        return t

    def on_validation_epoch_end(self):
        if self.trainer.sanity_checking:
            return
        for p, saved in self._swapped:
            p.data.copy_(saved)
        self._swapped = []
        both = self._reduce(torch.cat([self._acc, self._vacc]))
        tr, te = both[: len(self._acc)], both[len(self._acc):]
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
        self.task.finish_row(self, row)
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
    def configure_optimizers(self):
        return make_optimizer(self.cfg["optim"], self.model, asgd=self.asgd)

    # -- resumable state (tensors and primitive containers only: loads with weights_only=True) ---
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[STATE_KEY] = {
            "format": STATE_FORMAT,
            "config": self.cfg,
            "train_acc": self._acc.clone(),
            "asgd": self.asgd,
            "history": list(self.history),
            "train_time": float(self.train_time),
            "evals": int(self.evals),
            "task": self.task.run_state(self),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        reopen_epoch_cut_by_max_steps(checkpoint)
        state = checkpoint.get(STATE_KEY, {})
        if "train_acc" in state:
            self._acc = state["train_acc"].to(torch.float64).cpu().clone()
        self.asgd = bool(state.get("asgd", False))
        self.history = [float(x) for x in state.get("history", [])]
        self.train_time = float(state.get("train_time", 0.0))
        self.evals = int(state.get("evals", 0))
        self.task.load_run_state(self, state.get("task") or {})
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
