"""When ``checkpoints/last.ckpt`` and ``best.ckpt`` are written: Lightning's ``ModelCheckpoint``,
configured so that a run loses at most the epoch or interval in progress, and saved only where a
resume is exact.

* ``best.ckpt``: the best evaluation so far (``ModelCheckpoint`` on the task's metric).
* ``last.ckpt`` (:class:`LastCheckpoint`, ``monitor=None``): after every evaluation and at the end
  of every epoch, whatever the metric does; also every ``train.checkpoint_every_minutes`` of
  training (Lightning's ``train_time_interval``) and every ``train.checkpoint_every_steps``
  optimizer steps when set; and at the end of training. (``ModelCheckpoint(save_last=True)`` on
  the monitored callback writes "last" only when the metric improves: a plateau lost every epoch
  since the best one.)

Where a save is exact. Lightning's loops resume from the loop counters saved in the checkpoint.
A save in ``on_train_batch_end`` of a batch that an evaluation follows resumes *after* that
evaluation without running it (Lightning's loop fast-forwards it): its metrics row and its reset of
the epoch's running train sums are lost. Measured on Lightning 2.6.6 by saving at every hook of a
tiny run (5 batches per epoch, evaluations after batches 2 and 4, and after batch 5 with one per
epoch) and resuming from each save: every other save point (``on_train_batch_end`` of any other
batch, an epoch's last included; ``on_validation_end``; ``on_train_epoch_end``) resumes with the
very next batch and gives the uninterrupted run's metrics and weights. So a step- or time-triggered
save on a batch that an evaluation follows is deferred to the end of that evaluation
(tests/toolkit/test_resume.py resumes from every save such a run makes, and fails without the
deferral).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning.pytorch.callbacks import ModelCheckpoint

from . import runfiles

if TYPE_CHECKING:
    import lightning.pytorch as pl
    from lightning.pytorch.utilities.types import STEP_OUTPUT
    from torch import Tensor


def validation_follows(trainer: pl.Trainer) -> bool:
    """Whether the fit loop evaluates right after the batch that just ended (Lightning's own test)."""
    loop = trainer.fit_loop.epoch_loop
    try:
        # (Lightning's private API: it only tests the fetcher's type, which may be None)
        return bool(loop._should_check_val_fx(trainer.fit_loop._data_fetcher))  # type: ignore[arg-type]
    except (AttributeError, TypeError):  # another Lightning: assume it may (the save waits for it)
        return True


def epoch_ends(trainer: pl.Trainer) -> bool:
    """Whether the batch that just ended is the last of its epoch (not a cut by ``max_steps``)."""
    return bool(trainer.fit_loop.epoch_loop.batch_progress.is_last_batch)


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt`` at one of Lightning's triggers, deferred to the next exact save point.

    ``every_n_epochs=1``: after every evaluation, at every epoch end and at the end of training.
    ``every_n_train_steps`` / ``train_time_interval``: in ``on_train_batch_end`` (Lightning's
    triggers, the time decision broadcast from rank 0), moved to the end of the evaluation that
    follows the batch, if one does (see the module's docstring)."""

    def __init__(
        self,
        dirpath: Path,
        *,
        every_n_epochs: int | None = None,
        every_n_train_steps: int | None = None,
        train_time_interval: timedelta | None = None,
    ) -> None:
        super().__init__(
            dirpath=dirpath,
            filename=Path(runfiles.LAST).stem,
            monitor=None,
            save_top_k=1,
            enable_version_counter=False,
            auto_insert_metric_name=False,
            every_n_epochs=every_n_epochs,
            every_n_train_steps=every_n_train_steps,
            train_time_interval=train_time_interval,
            save_on_train_epoch_end=False,
        )
        self._in_batch_end = False
        self._deferred = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        # a resumed run starts from a checkpoint of this step: nothing to write until it trains
        self._last_global_step_saved = trainer.global_step

    # -- deferral ----------------------------------------------------------------------------
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: STEP_OUTPUT, batch: Any, batch_idx: int
    ) -> None:
        self._in_batch_end = True
        try:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        finally:
            self._in_batch_end = False

    def _save_topk_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict[str, Tensor]) -> None:
        if self._in_batch_end and validation_follows(trainer):
            self._deferred = True  # saved in on_validation_end
            return
        super()._save_topk_checkpoint(trainer, monitor_candidates)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if self._deferred and not trainer.sanity_checking:
            self._deferred = False
            self.save_now(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # an epoch without an evaluation at its end (several per epoch) is saved here; a cut by
        # max_steps is saved by on_train_end
        if self._every_n_epochs >= 1 and epoch_ends(trainer):
            self.save_now(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._every_n_epochs >= 1:  # e.g. stopped by max_steps in the middle of an epoch
            self.save_now(trainer)

    def save_now(self, trainer: pl.Trainer) -> bool:
        """Write last.ckpt of the current step (on every rank: the save gathers state) unless this
        callback already did; returns whether it wrote."""
        if self._should_skip_saving_checkpoint(trainer):
            return False
        super()._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))
        return True

    @property
    def saved_step(self) -> int:
        return self._last_global_step_saved


def checkpoint_callbacks(run_dir: Path, train_cfg: dict, monitor: str, mode: str) -> list:
    """``best.ckpt`` and the ``last.ckpt`` writers of a run (the epoch one first)."""
    ckdir = Path(run_dir) / runfiles.CKPT_DIR
    out = [
        # the best evaluation, saved right after it (also at an epoch's last evaluation: a run stopped
        # between the evaluation and the epoch end then keeps it)
        ModelCheckpoint(
            dirpath=ckdir,
            filename=Path(runfiles.BEST).stem,
            monitor=monitor,
            mode=mode,
            save_top_k=1,
            save_last=False,
            enable_version_counter=False,
            auto_insert_metric_name=False,
            save_on_train_epoch_end=False,
        ),
        LastCheckpoint(ckdir, every_n_epochs=1),
    ]
    if train_cfg.get("checkpoint_every_minutes"):
        out.append(LastCheckpoint(ckdir, train_time_interval=timedelta(minutes=train_cfg["checkpoint_every_minutes"])))
    if train_cfg.get("checkpoint_every_steps"):
        out.append(LastCheckpoint(ckdir, every_n_train_steps=train_cfg["checkpoint_every_steps"]))
    return out
