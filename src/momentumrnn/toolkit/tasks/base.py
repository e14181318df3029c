"""The base of every task: what a task provides to a run, and what a run tells a task.

A task (a subclass of :class:`Task`, registered with :func:`register`) owns its data, the input
transform, the model's head, the loss and the metrics. Its ``options`` (a dict of
:class:`~momentumrnn.toolkit.options.Opt`) are the keys allowed in a recipe's ``task`` section.

The training loop (:class:`~momentumrnn.toolkit.module.RunModule`) calls a task through a small,
explicit interface and never the other way round:

* :meth:`Task.train_loader` / :meth:`Task.eval_loader` get a :class:`RunContext` (seed, batch
  sizes, this process's rank, the world size, and where the loop is: epoch, step, batches done);
* :meth:`Task.train_step` / :meth:`Task.eval_step` get the model, a batch and the context, and
  return a :class:`StepOutput` (the loss to minimise, the metric sums of the batch, how many
  examples or tokens they cover, and a learning-rate factor for this step only); the run adds the
  sums up, reduces them over processes and logs them;
* :meth:`Task.finish_row`, :meth:`Task.run_state` and :meth:`Task.load_run_state` adjust an
  evaluation's row and carry the task's own state through checkpoints.

The defaults implement the common case: in-memory examples (:class:`~.loaders.Split`) batched by
:class:`~.loaders.BatchLoader`, a recurrent layer and a head (:func:`.models.build_model`),
per-example losses weighted so that N processes compute what one does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ToolkitError
from ..loaders import BatchLoader, Split
from ..models import build_model
from ..options import Opt, suggest

#: task name -> Task subclass (filled by :func:`register`)
TASKS: dict[str, type[Task]] = {}


def register(cls: type[Task]) -> type[Task]:
    TASKS[cls.name] = cls
    return cls


def get_task_class(name: str) -> type[Task]:
    key = str(name).lower()
    if key not in TASKS:
        raise ToolkitError(f"unknown task {name!r}{suggest(key, TASKS)}; choose one of {', '.join(sorted(TASKS))}")
    return TASKS[key]


def build_task(task_cfg: dict, seed: int | None = None) -> Task:
    """The task of a resolved ``task`` section; ``seed``: the run's train.seed (``task.run_seed``)."""
    cls = get_task_class(task_cfg["name"])
    task = cls({k: v for k, v in task_cfg.items() if k != "name"})
    task.run_seed = seed
    return task


def _zero() -> int:
    return 0


class RunContext:
    """What a task may know of the run in progress. The position fields are functions, read when a
    loader starts an epoch (after a checkpoint has been restored), not when it is built."""

    def __init__(
        self,
        *,
        seed: int = 0,
        batch_size: int = 1,
        eval_batch_size: int | None = None,
        rank: int = 0,
        world_size: int = 1,
        epoch: Callable[[], int] = _zero,
        step: Callable[[], int] = _zero,
        batches_done: Callable[[], int] = _zero,
        batches_per_epoch: Callable[[], float] = lambda: math.inf,
        gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.eval_batch_size = eval_batch_size
        self.rank = int(rank)
        self.world_size = int(world_size)
        self._epoch, self._step, self._done, self._per_epoch = epoch, step, batches_done, batches_per_epoch
        # all_gather over processes: a tensor -> (world_size, *shape); one process: a stack of one
        self.gather = gather or (lambda t: t.unsqueeze(0))

    @property
    def epoch(self) -> int:
        return int(self._epoch())

    @property
    def global_step(self) -> int:
        return int(self._step())

    @property
    def batches_done(self) -> int:
        """Training batches of the current epoch already done (a resumed loader skips them)."""
        return int(self._done())

    @property
    def batches_per_epoch(self) -> float:
        return float(self._per_epoch())

    def epoch_fn(self) -> int:
        return self.epoch

    def skip_fn(self) -> int:
        return self.batches_done


@dataclass
class StepOutput:
    """A task's answer for one batch: ``loss`` (what training minimises; None in evaluation),
    ``sums`` (metric name -> sum over the batch's examples or tokens; tensors or floats),
    ``count`` (how many examples / tokens the sums cover), ``lr_scale`` (a factor on the
    learning rates of this optimizer step only, e.g. AWD-LSTM's ``seq_len / bptt``)."""

    loss: torch.Tensor | None
    sums: dict = field(default_factory=dict)
    count: Any = 0.0
    lr_scale: float = 1.0


class Task:
    name = ""
    summary = ""
    options: ClassVar[dict[str, Opt]] = {}
    #: "classification" (cross-entropy on the last step, metric acc) or "regression" (MSE, metric loss)
    kind = "classification"
    input_size = 1
    num_outputs = 10
    #: the metric that picks the best checkpoint and the convergence target: "acc" or "loss"
    metric = "acc"
    default_target: float | None = None
    #: the run's seed (train.seed), set by :func:`build_task` when known
    run_seed: int | None = None
    #: rebuild the loaders every epoch (epochs of different lengths, e.g. random BPTT windows)
    reload_loaders_every_epoch = False

    def __init__(self, opts: dict):
        self.opts = dict(opts)

    def attach(self, run_dir: Path, *, writer: bool) -> None:
        """Called once the run directory exists: save (``writer``) or reload run-specific data."""

    # -- data ------------------------------------------------------------------------------------
    def load(self) -> tuple[Split, Split]:
        raise NotImplementedError

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Raw batch -> float model input ``(B, T, input_size)`` (or what the model reads)."""
        return x.float()

    def example_input(self, batch: int, steps: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """A random model input of ``batch`` sequences of ``steps`` steps, as :meth:`inputs` makes
        them (``momentumrnn export`` traces and checks the model with it)."""
        return torch.randn(batch, steps, self.input_size, generator=generator)

    def targets(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Raw batch -> what :meth:`per_sample_loss` compares the prediction with (e.g. the next
        frames of ``x`` for next-frame prediction); ``y`` by default."""
        return y

    # -- model head and loss -----------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return "max" if self.metric == "acc" else "min"

    @property
    def metric_names(self) -> list[str]:
        return ["loss", "acc"] if self.kind == "classification" else ["loss"]

    @property
    def display_name(self) -> str:
        """The task's name in summaries and reports (may name a non-standard setting)."""
        return self.name

    def make_head(self, features: int) -> nn.Module:
        return nn.Linear(features, self.num_outputs)

    def head_input(self, output: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Recurrent output ``(B, T, F)`` -> what the head reads: the last step (each sequence's
        last valid step when ``lengths`` are given)."""
        if lengths is None:
            return output[:, -1]
        return output[torch.arange(output.shape[0], device=output.device), lengths.to(output.device) - 1]

    def lengths(self, x: torch.Tensor) -> torch.Tensor | None:
        """The valid lengths of a raw batch's sequences (they then run packed), or None."""
        return None

    def forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The model's prediction for a raw batch ``x``."""
        lengths = self.lengths(x)
        inp = self.inputs(x)
        return model(inp) if lengths is None else model(inp, lengths)

    def per_sample_loss(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.kind == "classification":
            return F.cross_entropy(pred.float(), y.long(), reduction="none")
        return (pred.float().squeeze(-1) - y.float()) ** 2

    def per_sample_stats(self, pred: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> dict:
        out = {"loss": loss.detach()}
        if self.kind == "classification":
            out["acc"] = (pred.detach().argmax(-1) == y.long()).float()
        return out

    def describe(self) -> str:
        return self.summary

    def steps_per_epoch(self, n_train: int, batch_size: int) -> int:
        """Optimizer steps in one epoch over ``n_train`` training examples (for progress bars)."""
        return max(1, -(-int(n_train) // int(batch_size)))

    def check_run(self, cfg: dict) -> None:
        """Refuse settings of the resolved run config that this task cannot honour (ToolkitError)."""

    def build_model(self, model_cfg: dict) -> nn.Module:
        """The model of a run (default: the named recurrent layer followed by :meth:`make_head`)."""
        return build_model(model_cfg, self)

    # -- the run's interface -----------------------------------------------------------------------
    def train_loader(self, train: Split, ctx: RunContext) -> Iterable[Any]:
        """Batches ``(x, y, w, n)`` of this process's share of each global batch (see loaders)."""
        return BatchLoader(
            train,
            ctx.batch_size,
            shuffle=True,
            seed=ctx.seed,
            rank=ctx.rank,
            world_size=ctx.world_size,
            epoch_fn=ctx.epoch_fn,
            skip_fn=ctx.skip_fn,
        )

    def eval_loader(self, test: Split, ctx: RunContext) -> Iterable[Any]:
        bs = ctx.eval_batch_size or max(ctx.batch_size, 256)
        return BatchLoader(test, bs, shuffle=False, rank=ctx.rank, world_size=ctx.world_size)

    def _batch(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict, torch.Tensor]:
        x, y, w, _ = batch
        pred = self.forward(model, x)
        y = self.targets(x, y)
        loss_i = self.per_sample_loss(pred, y)
        stats = self.per_sample_stats(pred, y, loss_i)
        wd = w.detach().double()
        sums = {k: (stats[k].double() * wd).sum() for k in self.metric_names}
        return loss_i, sums, wd.sum()

    def train_step(self, model: nn.Module, batch: Any, ctx: RunContext) -> StepOutput:
        """The loss of one training batch: per-example losses (padding weighs 0) normalised by the
        global batch's real examples, times the world size (DDP averages the gradients)."""
        loss_i, sums, count = self._batch(model, batch)
        w, n = batch[2], batch[3]
        loss = (loss_i * w.to(loss_i.dtype)).sum() * (ctx.world_size / n.clamp(min=1).to(loss_i.dtype))
        return StepOutput(loss, sums, count)

    def eval_step(self, model: nn.Module, batch: Any, ctx: RunContext) -> StepOutput:
        _, sums, count = self._batch(model, batch)
        return StepOutput(None, sums, count)

    def finish_row(self, row: dict) -> None:
        """Adjust an evaluation's metrics row in place before it is recorded (derived metrics...)."""

    def run_state(self, ctx: RunContext) -> dict:
        """Task state saved in checkpoints (tensors and primitive containers only)."""
        return {}

    def load_run_state(self, state: dict) -> None:
        """Restore what :meth:`run_state` saved (``{}`` for checkpoints without task state)."""


def check_size(split: Split, n: int | None, what: str, key: str) -> Split:
    """The first ``n`` examples of ``split`` (all with None); ``n`` larger than the split is an error."""
    if n is None:
        return split
    if n > len(split):
        raise ToolkitError(f"task.{key}={n} is larger than the {what} set ({len(split)} examples); lower it")
    return Split(split.x[:n], split.y[:n])
