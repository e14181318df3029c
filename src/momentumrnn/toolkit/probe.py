"""The hidden-state gradient probe of ``momentumrnn grads``: the measurement, its storage in the
run directory and the Lightning callback that takes it during training.

``||dL/dh_t||`` for every time step ``t`` is the *total* derivative of the loss with respect to
the hidden state at ``t``: through the head (direct) and through every later step. The layers
run the whole sequence in one fused kernel, which keeps no ``h_t`` node for autograd, so the
probe replays the sequence one step at a time, passing the state (momentum included) from step to
step -- chunked processing equals one call exactly, a tested property of every layer -- and asks
autograd for the gradient of the loss with respect to each step's state and output. It uses a
fixed probe batch, the model in eval mode (no dropout), and never touches the parameters'
``.grad``: training is unaffected.

During training the probe runs at the chosen optimizer steps (``train.grad_norm_steps``), before
that step's update; the results go to ``grad_norms.npz`` in the run directory (atomically, after
every probe, so a resumed run keeps them).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import lightning.pytorch as pl
import numpy as np
import torch

from .errors import ToolkitError
from .runfiles import atomic_write

if TYPE_CHECKING:
    from .loaders import Split
    from .module import RunModule
    from .tasks.base import Task

GRAD_FILE = "grad_norms.npz"


# ---------------------------------------------------------------------------------------------
# the measurement


def _state_h(state: Any) -> torch.Tensor:
    h = state[0] if isinstance(state, tuple) else state
    if not isinstance(h, torch.Tensor):
        raise ToolkitError("grads: the recurrent layer returned no hidden state tensor")
    return h


def hidden_gradient_norms(
    model: torch.nn.Module, task: Task, x: torch.Tensor, y: torch.Tensor, *, dtype: torch.dtype | None = torch.float64
) -> torch.Tensor:
    """``||dL/dh_t||`` (Frobenius norm over the batch and the hidden units of the top layer), for
    ``t = 1..T``, of the task's mean loss on the batch ``(x, y)`` (raw, as the loader gives it).

    ``model`` is a :class:`!SequenceModel` (a recurrent layer and a
    head); unidirectional layers only (a backward direction's state at ``t`` is not ``h_t``).
    By default the probe runs on a float64 copy of the model: over hundreds of steps a vanishing
    gradient leaves float32's range (an untrained LSTM's ``dL/dh_1`` on 784 pixels is exactly 0
    in float32), and the point is to see how fast it decays. ``dtype=None`` probes the model as is.
    """
    if getattr(model, "recurrent", None) is None or getattr(model, "head", None) is None:
        raise ToolkitError(
            "grads needs a model made of a recurrent layer and a head (the sequence "
            "tasks); this task's model is not one"
        )
    if dtype is not None and next(model.parameters()).dtype != dtype:
        model = copy.deepcopy(model).to(dtype)
    layer: Any  # (any recurrent layer: its options are read with getattr)
    layer, head = model.recurrent, cast(torch.nn.Module, model.head)
    if getattr(layer, "bidirectional", False):
        raise ToolkitError("grads: the probe needs a unidirectional layer (set model.bidirectional=false)")
    was_training = model.training
    carried = getattr(layer, "carry_momentum", None)
    model.eval()
    try:
        if carried is not None:  # the replay passes the momentum on from step to step
            layer.carry_momentum = True
        with torch.enable_grad():
            inp = task.inputs(x)
            target = task.targets(x, y)
            if dtype is not None:
                inp = inp.to(dtype) if inp.is_floating_point() else inp
                target = target.to(dtype) if target.is_floating_point() else target
            T = inp.shape[1]
            state = None
            outs, hs = [], []
            for t in range(T):
                out_t, state = layer(inp[:, t : t + 1], state)
                outs.append(out_t)
                hs.append(_state_h(state))
            out = torch.cat(outs, dim=1)
            lengths = task.lengths(x)
            if lengths is not None:  # padded steps come after each sequence's end: they never reach its loss
                lengths = lengths.to(out.device)
            pred = head(task.head_input(out) if lengths is None else task.head_input(out, lengths))
            loss = task.per_sample_loss(pred, target).mean()
            # gradients w.r.t. each step's state (paths through later steps) and output (the head)
            g = torch.autograd.grad(loss, hs + outs, allow_unused=True)
    finally:
        model.train(was_training)
        if carried is not None:
            layer.carry_momentum = carried
    g_state, g_out = g[:T], g[T:]
    norms = torch.empty(T, dtype=torch.float64)
    for t in range(T):
        total = torch.zeros_like(hs[t][-1])
        if g_state[t] is not None:
            total = total + g_state[t][-1]
        if g_out[t] is not None:
            go = g_out[t][:, 0]
            if total.is_complex() and go.shape[-1] == 2 * total.shape[-1]:  # scuRNN: output [Re h, Im h]
                H = total.shape[-1]
                go = torch.complex(go[..., :H], go[..., H:])
            elif go.shape[-1] != total.shape[-1]:
                raise ToolkitError("grads: the layer's output is not its hidden state; cannot probe it")
            total = total + go.to(total.dtype)
        norms[t] = torch.linalg.vector_norm(total.detach()).double()
    return norms


# ---------------------------------------------------------------------------------------------
# storage (one npz per run: steps (K,), norms (K, T))


def load_grad_norms(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    path = Path(run_dir) / GRAD_FILE
    if not path.exists():
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0))
    try:
        with np.load(path, allow_pickle=False) as d:
            steps, norms = np.asarray(d["steps"], dtype=np.int64), np.asarray(d["norms"], dtype=np.float64)
    except Exception:
        raise ToolkitError(
            f"{path} is corrupt; delete it (the probes will be recomputed only for steps not yet trained) or restore it"
        ) from None
    if norms.ndim != 2 or norms.shape[0] != steps.shape[0]:
        raise ToolkitError(f"{path} has inconsistent arrays; delete or restore it")
    return steps, norms


def save_grad_norms(run_dir: Path, steps: np.ndarray, norms: np.ndarray) -> None:
    atomic_write(
        Path(run_dir) / GRAD_FILE,
        lambda f: np.savez(f, steps=np.asarray(steps, dtype=np.int64), norms=np.asarray(norms, dtype=np.float64)),
    )


def probe_batch(split: Split, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed probe batch: the first ``size`` training examples."""
    n = min(int(size), len(split))
    return split.x[:n], split.y[:n]


def make_probe_callback(run_dir: Path, steps: Sequence[int], size: int) -> pl.Callback:
    """A Lightning callback recording the gradient norms at the given optimizer steps (rank 0)."""
    wanted = sorted({int(s) for s in steps})

    class GradientProbe(pl.Callback):
        def __init__(self) -> None:
            self.steps, self.norms = load_grad_norms(run_dir)

        def on_train_batch_start(
            self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
        ) -> None:
            step = int(trainer.global_step)
            if trainer.global_rank != 0 or step not in wanted or step in set(self.steps.tolist()):
                return
            run = cast("RunModule", pl_module)
            x, y = probe_batch(run.train_split, size)
            norms = hidden_gradient_norms(run.model, run.task, x.to(run.device), y.to(run.device)).numpy()
            if self.norms.size and self.norms.shape[1] != norms.shape[0]:
                raise ToolkitError(f"{Path(run_dir) / GRAD_FILE} holds sequences of another length; delete it")
            self.steps = np.append(self.steps, step)
            self.norms = norms[None] if not self.norms.size else np.vstack([self.norms, norms[None]])
            order = np.argsort(self.steps, kind="stable")
            self.steps, self.norms = self.steps[order], self.norms[order]
            save_grad_norms(run_dir, self.steps, self.norms)

    return GradientProbe()
