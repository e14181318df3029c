"""Word-level language modelling on the Penn Treebank (task ``ptb``), as the MomentumRNN authors
ran it: an AWD-LSTM (Merity et al., 2017, "Regularizing and Optimizing LSTM Language Models")
whose recurrent layers are any host x scheme of the core library.

Data
    Mikolov's preprocessed PTB: ``train.txt``, ``valid.txt``, ``test.txt`` (also accepted:
    ``ptb.train.txt``, ...) in ``task.data_dir``. Words are split on whitespace and ``<eos>`` is
    appended at each line end; the vocabulary is built from the training text (``task.vocab:
    train``; evaluation words unseen in training become ``<unk>``) or from every file of the
    setting (``task.vocab: all``, as AWD-LSTM's and pytorch/examples' ``Corpus`` do; the same
    vocabulary for the standard split). ``task.split`` chooses what is trained and evaluated:
    ``train-valid`` (standard: train on train.txt, evaluate on valid.txt), ``train-test``, or
    ``valid-test`` ("PTB-small": train on valid.txt, evaluate on test.txt, for machines without
    train.txt; results must say so, and reports name the task ``ptb-small``).
    ``task.download: true`` fetches missing files (md5-checked) from a standard mirror.

Model (:class:`WordLM`)
    embedding (embedding dropout ``dropoute``) -> locked dropout ``dropouti`` -> ``num_layers``
    recurrent layers, each built separately by the core (``build_layer`` / ``layer_class``), with
    locked dropout ``dropouth`` between them and DropConnect ``wdrop`` on each ``weight_hh_l0``
    (:func:`weight_drop_`) -> locked dropout ``dropout`` -> decoder, tied to the embedding
    (``tie_weights``: the last layer then has ``emb_size`` units).

Training (AWD-LSTM's)
    The training text is cut into ``batch_size`` contiguous columns; each step takes the next
    window of ``seq_len ~ N(bptt, 5)`` tokens (``bptt / 2`` with probability 0.05, at least 5,
    drawn from ``(seed, epoch)``; ``task.variable_bptt: false`` for fixed windows) with the
    learning rate scaled by ``seq_len / bptt``, carries the hidden state -- momentum state
    included -- across windows (detached), and resets it at each epoch start. Loss: cross-entropy
    per token plus AR (``task.ar_alpha``: L2 of the last layer's dropped output) and TAR
    (``task.tar_beta``: slowness of its raw output). Evaluation reads the evaluation text in
    order, ``bptt`` tokens at a time, ``train.eval_batch_size`` columns (default 10), state
    carried; metrics: loss (nats / token) and perplexity ``exp(loss)``.

Resume and DDP
    Checkpoints hold the carried state of all columns and the stream position, so a resumed run
    is exact. With ``--devices N`` every process takes ``batch_size / N`` columns (the batch sizes
    must be divisible by N) and every random mask is drawn for the whole batch from ``(seed,
    step)`` then sliced, so N processes compute what one does, up to floating-point rounding.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ToolkitError
from ..loaders import Split, step_seed
from ..options import Opt
from ..wordlm import AWD_DEFAULTS, build_word_lm, map_state, state_to_plain  # noqa: F401
from .base import RunContext, StepOutput, Task, register
from .ptb_data import SPLITS, StreamLoader, batchify, load_corpus


@register
class PennTreebank(Task):
    name = "ptb"
    summary = (
        "Penn Treebank word-level language modelling (AWD-LSTM: embedding, weight drop, locked "
        "dropout, tied decoder, AR/TAR, random BPTT windows, carried state); metric perplexity"
    )
    kind = "language"
    metric = "ppl"
    default_target = None
    reload_loaders_every_epoch = True  # random windows: each epoch has its own number of batches
    options: ClassVar[dict[str, Opt]] = {
        "data_dir": Opt(
            "str",
            None,
            "folder of train.txt, valid.txt, test.txt (Mikolov's PTB; ptb.*.txt also "
            "accepted); null: the download cache (with task.download)",
            nullable=True,
        ),
        "split": Opt(
            "choice",
            "train-valid",
            "train-valid (standard), train-test, or valid-test (PTB-small: train on valid.txt, evaluate on test.txt)",
            choices=tuple(SPLITS),
        ),
        "vocab": Opt(
            "choice",
            "train",
            "vocabulary from the training text (unseen evaluation words -> <unk>) or from all files of the setting",
            choices=("train", "all"),
        ),
        "download": Opt("bool", False, "fetch missing files (md5-checked) from a standard mirror"),
        "bptt": Opt("int", 70, "mean training window (tokens); evaluation windows", lo=1),
        "variable_bptt": Opt("bool", True, "AWD-LSTM's random window lengths (else fixed bptt)"),
        "ar_alpha": Opt("float", 2.0, "activation regularisation (L2 of the last layer's dropped output)", lo=0),
        "tar_beta": Opt("float", 1.0, "temporal activation regularisation (slowness of its raw output)", lo=0),
    }

    def __init__(self, opts: dict):
        super().__init__(opts)
        self.opts.setdefault("split", "train-valid")
        self.corpus: dict | None = None
        self.columns = (0, 1)  # this rank's training columns: (offset, total)
        self.eval_columns = (0, 1)
        self._state: Any = None  # carried training state (tuples, this rank's columns)
        # (plain global state, position) restored from a checkpoint
        self._pending: tuple[Any, tuple[int, ...]] | None = None
        self._position: tuple[int, ...] = (-1, 0)  # (epoch, next window) of the carried state
        self._progress: float | None = None
        self._eval_state: Any = None

    # -- data --------------------------------------------------------------------------------
    @property
    def display_name(self) -> str:
        return {"train-valid": "ptb", "train-test": "ptb-test", "valid-test": "ptb-small"}[self.opts["split"]]

    def describe(self) -> str:
        return self.summary

    @property
    def metric_names(self) -> list[str]:
        return ["loss", "ppl"]

    def _corpus(self) -> dict:
        if self.corpus is None:
            o = self.opts
            self.corpus = load_corpus(
                o.get("data_dir"), o["split"], o.get("vocab", "train"), download=bool(o.get("download"))
            )
        return self.corpus

    def load(self) -> tuple[Split, Split]:
        c = self._corpus()
        return Split(c["train"], c["train"]), Split(c["test"], c["test"])

    def check_run(self, cfg: dict) -> None:
        t = cfg["train"]
        world = t["devices"] * t["num_nodes"]
        ebs = t["eval_batch_size"] or 10
        for key, bs in (("train.batch_size", t["batch_size"]), ("train.eval_batch_size", ebs)):
            if bs % world:
                raise ToolkitError(
                    f"task ptb splits the {bs} columns of {key} over {world} processes: make it "
                    f"a multiple of {world} (or change --devices)"
                )

    def build_model(self, model_cfg: dict) -> nn.Module:
        return build_word_lm(model_cfg, len(self._corpus()["vocab"]))

    def example_input(self, batch: int, steps: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Token ids ``(batch, steps)`` of the vocabulary."""
        return torch.randint(0, len(self._corpus()["vocab"]), (batch, steps), generator=generator)

    # -- loaders -----------------------------------------------------------------------------
    def _stream(self, split: Split, columns: int, what: str) -> torch.Tensor:
        tokens = cast(torch.Tensor, split.x)  # (the token stream: a tensor)
        stream = batchify(tokens, columns)
        if stream.shape[0] < 2:
            raise ToolkitError(
                f"the {what} text ({tokens.numel()} tokens) is too short for {columns} columns; lower the batch size"
            )
        return stream

    def steps_per_epoch(self, n_train: int, batch_size: int) -> int:
        """Windows of ``bptt`` tokens over columns of ``n_train // batch_size`` tokens (exact for a
        fixed ``bptt``; about right for the variable windows, whose mean is near ``bptt``)."""
        column = int(n_train) // int(batch_size)
        return max(1, -(-(column - 1) // int(self.opts["bptt"])))

    def train_loader(self, train: Split, ctx: RunContext) -> Iterable[Any]:
        total = ctx.batch_size
        per = total // ctx.world_size
        self.columns = (ctx.rank * per, total)
        return StreamLoader(
            self._stream(train, total, "training"),
            self.opts["bptt"],
            variable=self.opts["variable_bptt"],
            seed=ctx.seed,
            columns=(ctx.rank * per, (ctx.rank + 1) * per),
            epoch_fn=ctx.epoch_fn,
            skip_fn=ctx.skip_fn,
        )

    def eval_loader(self, test: Split, ctx: RunContext) -> Iterable[Any]:
        total = ctx.eval_batch_size or 10
        per = total // ctx.world_size
        self.eval_columns = (ctx.rank * per, total)
        return StreamLoader(
            self._stream(test, total, "evaluation"),
            self.opts["bptt"],
            variable=False,
            columns=(ctx.rank * per, (ctx.rank + 1) * per),
        )

    # -- steps -------------------------------------------------------------------------------
    def _carried(self, epoch: int, index: int) -> Any:
        if index == 0:
            self._pending = None
            return None
        if self._pending is not None:
            plain, pos = self._pending
            self._pending = None
            lo = self.columns[0]
            self._state = map_state(plain, lambda t: t[:, lo : lo + self._local_columns].contiguous())
            self._position = pos
        if self._position[0] < 0:
            raise ToolkitError(
                f"training resumes at window {index} of epoch {epoch} but the checkpoint holds no carried hidden "
                "state for it (was it written by another version?); start the run again with --overwrite"
            )
        if self._position != (epoch, index):
            raise ToolkitError(
                f"the carried hidden state belongs to window {self._position[1]} of epoch {self._position[0]}, "
                f"but training continues with window {index} of epoch {epoch}; the checkpoint does not match "
                "this run (start it again with --overwrite)"
            )
        return self._state

    def train_step(self, model: nn.Module, batch: Any, ctx: RunContext) -> StepOutput:
        x, y, meta = batch
        epoch, index, n, _ = (int(v) for v in meta.tolist())
        self._local_columns = x.shape[0]
        state = self._carried(epoch, index)
        # every mask is drawn for the whole batch from (seed, step), the same in every process
        torch.manual_seed(step_seed(ctx.seed, ctx.global_step, 0))
        logits, state, out = model(x, state, columns=self.columns)
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1), reduction="sum")
        loss = ce * (ctx.world_size / (n * self.columns[1]))
        alpha, beta = self.opts["ar_alpha"], self.opts["tar_beta"]
        if alpha:
            loss = loss + alpha * out["dropped"].float().pow(2).mean()
        if beta and out["raw"].shape[1] > 1:
            raw = out["raw"].float()
            loss = loss + beta * (raw[:, 1:] - raw[:, :-1]).pow(2).mean()
        self._state = map_state(state, lambda t: t.detach())
        self._position = (epoch, index + 1)
        nb = ctx.batches_per_epoch
        self._progress = epoch + (index + 1) / nb if math.isfinite(nb) and nb > 0 else None
        # AWD-LSTM scales the learning rate of each step by its window length
        return StepOutput(loss, {"loss": float(ce.detach())}, y.numel(), lr_scale=n / self.opts["bptt"])

    def eval_step(self, model: nn.Module, batch: Any, ctx: RunContext) -> StepOutput:
        x, y, meta = batch
        if int(meta[1]) == 0:
            self._eval_state = None
        logits, state, _ = model(x, self._eval_state, columns=self.eval_columns)
        self._eval_state = map_state(state, lambda t: t.detach())
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1), reduction="sum")
        return StepOutput(None, {"loss": float(ce)}, y.numel())

    def finish_row(self, row: dict) -> None:
        for side in ("train", "test"):
            loss = row.get(f"{side}_loss")
            row[f"{side}_ppl"] = (
                math.exp(min(loss, 700.0)) if isinstance(loss, float) and loss == loss else float("nan")
            )
        if self._progress is not None:
            row["epoch"] = round(self._progress, 6)

    # -- resumable state -----------------------------------------------------------------------
    def run_state(self, ctx: RunContext) -> dict:
        state = self._state
        if self._pending is not None:  # restored but not used yet: keep it as it was
            plain, pos = self._pending
            return {"state": plain, "position": list(pos), "progress": self._progress}
        if state is not None and ctx.world_size > 1:  # every process holds its columns: gather them all
            state = map_state(state, lambda t: torch.cat(list(ctx.gather(t).unbind(0)), dim=1))
        return {"state": state_to_plain(state), "position": list(self._position), "progress": self._progress}

    def load_run_state(self, state: dict) -> None:
        if not state:
            return
        pos = tuple(int(v) for v in state.get("position", (-1, 0)))
        self._progress = state.get("progress")
        self._state = None
        self._position = pos
        self._pending = (state["state"], pos) if state.get("state") is not None else None
