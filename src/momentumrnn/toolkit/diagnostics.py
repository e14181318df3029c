"""Diagnostics of the paper's claims: hidden-state gradient norms over time (``momentumrnn grads``)
and the mu x epsilon ablation grid (``momentumrnn sweep``).

Gradient norms
--------------
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
import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from .errors import ToolkitError

GRAD_FILE = "grad_norms.npz"


# ---------------------------------------------------------------------------------------------
# the measurement

def _state_h(state) -> torch.Tensor:
    h = getattr(state, "h", None)
    if h is None and isinstance(state, tuple):
        h = state[0]
    if not isinstance(h, torch.Tensor):
        raise ToolkitError("grads: the recurrent layer returned no hidden state tensor")
    return h


def hidden_gradient_norms(model: torch.nn.Module, task, x: torch.Tensor, y: torch.Tensor, *,
                          dtype: Optional[torch.dtype] = torch.float64) -> torch.Tensor:
    """``||dL/dh_t||`` (Frobenius norm over the batch and the hidden units of the top layer), for
    ``t = 1..T``, of the task's mean loss on the batch ``(x, y)`` (raw, as the loader gives it).

    ``model`` is a :class:`~momentumrnn.toolkit.models.SequenceModel` (a recurrent layer and a
    head); unidirectional layers only (a backward direction's state at ``t`` is not ``h_t``).
    By default the probe runs on a float64 copy of the model: over hundreds of steps a vanishing
    gradient leaves float32's range (an untrained LSTM's ``dL/dh_1`` on 784 pixels is exactly 0
    in float32), and the point is to see how fast it decays. ``dtype=None`` probes the model as is.
    """
    if getattr(model, "recurrent", None) is None or getattr(model, "head", None) is None:
        raise ToolkitError("grads needs a model made of a recurrent layer and a head (the sequence "
                           "tasks); this task's model is not one")
    if dtype is not None and next(model.parameters()).dtype != dtype:
        model = copy.deepcopy(model).to(dtype)
    layer, head = model.recurrent, model.head
    if getattr(layer, "bidirectional", False):
        raise ToolkitError("grads: the probe needs a unidirectional layer (set model.bidirectional=false)")
    was_training = model.training
    model.eval()
    try:
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
                out_t, state = layer(inp[:, t:t + 1], state)
                outs.append(out_t)
                hs.append(_state_h(state))
            out = torch.cat(outs, dim=1)
            pred = head(task.head_input(out))
            loss = task.per_sample_loss(pred, target).mean()
            # gradients w.r.t. each step's state (paths through later steps) and output (the head)
            g = torch.autograd.grad(loss, hs + outs, allow_unused=True)
    finally:
        model.train(was_training)
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
        raise ToolkitError(f"{path} is corrupt; delete it (the probes will be recomputed only for steps "
                           "not yet trained) or restore it") from None
    if norms.ndim != 2 or norms.shape[0] != steps.shape[0]:
        raise ToolkitError(f"{path} has inconsistent arrays; delete or restore it")
    return steps, norms


def save_grad_norms(run_dir: Path, steps: np.ndarray, norms: np.ndarray) -> None:
    from .runfiles import atomic_write

    atomic_write(Path(run_dir) / GRAD_FILE, lambda f: np.savez(f, steps=np.asarray(steps, dtype=np.int64),
                                                              norms=np.asarray(norms, dtype=np.float64)))


def probe_batch(split, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed probe batch: the first ``size`` training examples."""
    n = min(int(size), len(split))
    return split.x[:n], split.y[:n]


def make_probe_callback(run_dir: Path, steps: Sequence[int], size: int):
    """A Lightning callback recording the gradient norms at the given optimizer steps (rank 0)."""
    import lightning.pytorch as pl

    wanted = sorted(set(int(s) for s in steps))

    class GradientProbe(pl.Callback):
        def __init__(self):
            self.steps, self.norms = load_grad_norms(run_dir)

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            step = int(trainer.global_step)
            if trainer.global_rank != 0 or step not in wanted or step in set(self.steps.tolist()):
                return
            x, y = probe_batch(pl_module.train_split, size)
            norms = hidden_gradient_norms(pl_module.model, pl_module.task, x.to(pl_module.device),
                                          y.to(pl_module.device)).numpy()
            if self.norms.size and self.norms.shape[1] != norms.shape[0]:
                raise ToolkitError(f"{Path(run_dir) / GRAD_FILE} holds sequences of another length; delete it")
            self.steps = np.append(self.steps, step)
            self.norms = norms[None] if not self.norms.size else np.vstack([self.norms, norms[None]])
            order = np.argsort(self.steps, kind="stable")
            self.steps, self.norms = self.steps[order], self.norms[order]
            save_grad_norms(run_dir, self.steps, self.norms)

    return GradientProbe()


# ---------------------------------------------------------------------------------------------
# figures and tables of `momentumrnn grads`

def _plt():
    from .plots import _plt as plt

    return plt()


def _save(fig, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(out)
    return out


def collect_grad_norms(runs: list[tuple[str, Path]]) -> list[dict]:
    """``[(label, run_dir)]`` -> per label: steps and norms averaged (geometric mean) over its runs."""
    by_label: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for label, d in runs:
        steps, norms = load_grad_norms(d)
        if steps.size:
            by_label.setdefault(label, []).append((steps, norms))
    out = []
    for label, items in by_label.items():
        common = sorted(set.intersection(*(set(s.tolist()) for s, _ in items)))
        if not common:
            continue
        stack = []
        for s, n in items:
            idx = [int(np.nonzero(s == c)[0][0]) for c in common]
            stack.append(n[idx])
        arr = np.stack(stack)  # (runs, K, T)
        with np.errstate(divide="ignore"):  # a zero in any run makes the geometric mean zero
            geo = arr[0] if len(arr) == 1 else np.exp(np.mean(np.log(arr), axis=0))
        out.append({"label": label, "steps": np.asarray(common), "norms": geo, "runs": len(items)})
    return out


def plot_grad_heatmaps(series: list[dict], out: Path, *, title: str = "") -> Optional[Path]:
    """The paper's figure: one panel per model, time step (x) vs training iteration (y), colour =
    log10 ||dL/dh_t|| on one shared scale."""
    series = [s for s in series if s["norms"].size]
    if not series:
        return None
    plt = _plt()
    with np.errstate(divide="ignore"):
        logs = [np.ma.masked_invalid(np.log10(s["norms"])) for s in series]  # 0 (underflow) -> masked
    finite = np.concatenate([l.compressed() for l in logs])
    if not finite.size:
        return None
    vmin, vmax = float(finite.min()), float(finite.max())
    cmap = plt.get_cmap("viridis").with_extremes(bad="lightgrey")
    fig, axes = plt.subplots(1, len(series), figsize=(3.9 * len(series) + 1.2, 3.9), squeeze=False,
                             sharey=True, layout="constrained")
    im = None
    for ax, s, lg in zip(axes[0], series, logs):
        T = lg.shape[1]
        K = lg.shape[0]
        im = ax.imshow(lg, aspect="auto", origin="lower", cmap=cmap, vmin=vmin, vmax=vmax,
                       extent=(0.5, T + 0.5, -0.5, K - 0.5), interpolation="nearest")
        ticks = list(range(K)) if K <= 10 else list(np.linspace(0, K - 1, 8).round().astype(int))
        ax.set_yticks(ticks)
        ax.set_yticklabels([str(int(s["steps"][i])) for i in ticks])
        ax.set_xlabel("time step t")
        ax.set_title(s["label"] + (f" ({s['runs']} runs)" if s.get("runs", 1) > 1 else ""))
    axes[0][0].set_ylabel("training iteration")
    fig.colorbar(im, ax=axes[0].tolist(), label="log10 ||dL/dh_t||  (grey: 0)", shrink=0.95)
    fig.suptitle(title or "gradient of the loss w.r.t. the hidden state h_t")
    out = _save(fig, out)
    plt.close(fig)
    return out


def plot_grad_lines(series: list[dict], out: Path, *, title: str = "") -> Optional[Path]:
    """||dL/dh_t|| against t (log scale): one panel per probed iteration, one line per model."""
    series = [s for s in series if s["norms"].size]
    if not series:
        return None
    plt = _plt()
    steps = sorted(set.intersection(*(set(s["steps"].tolist()) for s in series)))
    if not steps:
        steps = sorted(set(series[0]["steps"].tolist()))
    show = steps if len(steps) <= 4 else [steps[i] for i in np.linspace(0, len(steps) - 1, 4).round().astype(int)]
    fig, axes = plt.subplots(1, len(show), figsize=(4.6 * len(show), 3.8), squeeze=False, sharey=True)
    for ax, step in zip(axes[0], show):
        for s in series:
            hit = np.nonzero(s["steps"] == step)[0]
            if not hit.size:
                continue
            n = s["norms"][hit[0]]
            t = np.arange(1, n.size + 1)
            ax.semilogy(t[n > 0], n[n > 0], label=s["label"], linewidth=1.2)  # zeros cannot be drawn
        ax.set_title(f"iteration {step}")
        ax.set_xlabel("time step t")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("||dL/dh_t||")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title or "gradient norm over time (vanishing gradients decay towards t = 1)")
    fig.tight_layout()
    out = _save(fig, out)
    plt.close(fig)
    return out


def grads_table(series: list[dict]) -> str:
    """Markdown: per model and probed iteration, ||dL/dh_1||, ||dL/dh_T|| and their ratio (how much
    of the gradient survives the whole sequence)."""
    lines = ["| model | iteration | ‖dL/dh_1‖ | ‖dL/dh_T/2‖ | ‖dL/dh_T‖ | ‖dL/dh_1‖ / ‖dL/dh_T‖ |",
             "|---|---:|---:|---:|---:|---:|"]
    for s in series:
        for i, step in enumerate(s["steps"]):
            n = s["norms"][i]
            first, mid, last = n[0], n[n.size // 2], n[-1]
            ratio = first / last if last > 0 else math.inf
            lines.append(f"| {s['label']} | {int(step)} | {first:.3e} | {mid:.3e} | {last:.3e} | {ratio:.3e} |")
    return "\n".join(lines) + "\n"


def grads_csv(series: list[dict]) -> str:
    rows = ["model,iteration,t,grad_norm"]
    for s in series:
        for i, step in enumerate(s["steps"]):
            for t, v in enumerate(s["norms"][i], start=1):
                rows.append(f"{s['label']},{int(step)},{t},{float(v)!r}")
    return "\n".join(rows) + "\n"


# ---------------------------------------------------------------------------------------------
# the mu x epsilon sweep

def sweep_label(mu: float, eps: float) -> str:
    return f"mu={mu:g},eps={eps:g}"


def sweep_models(model: dict, mus: Sequence[float], epsilons: Sequence[float]) -> list[dict]:
    """The ``models`` list of a sweep: ``model`` with every (mu, epsilon) of the grid."""
    out = []
    for mu in mus:
        for eps in epsilons:
            out.append({**model, "mu": float(mu), "epsilon": float(eps), "label": sweep_label(mu, eps)})
    return out


def sweep_grid(summaries: list[dict], mus: Sequence[float], epsilons: Sequence[float], *,
               value: str = "final") -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over seeds of each cell's final (or best) metric: arrays (len(mus), len(eps)),
    NaN where no run finished an evaluation."""
    mean = np.full((len(mus), len(epsilons)), np.nan)
    std = np.full_like(mean, np.nan)
    for i, mu in enumerate(mus):
        for j, eps in enumerate(epsilons):
            lab = sweep_label(mu, eps)
            vals = []
            for s in summaries:
                if s.get("label") != lab:
                    continue
                m = s.get("metric")
                v = (s.get("final") or {}).get(m) if value == "final" else (s.get("best") or {}).get("value")
                if isinstance(v, (int, float)) and math.isfinite(v):
                    vals.append(float(v))
            if vals:
                mean[i, j] = float(np.mean(vals))
                std[i, j] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
    return mean, std


def plot_sweep(mean: np.ndarray, std: np.ndarray, mus: Sequence[float], epsilons: Sequence[float],
               out: Path, *, metric: str, mode: str, title: str = "",
               baseline: Optional[tuple[str, float]] = None) -> Path:
    """Annotated heatmap (rows mu, columns epsilon) of the final metric; better cells are lighter."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.1 * len(epsilons) + 2.8, 0.8 * len(mus) + 2.0))
    cmap = "viridis" if mode == "max" else "viridis_r"
    finite = mean[np.isfinite(mean)]
    im = ax.imshow(np.ma.masked_invalid(mean), cmap=cmap, origin="lower", aspect="auto",
                   vmin=float(finite.min()) if finite.size else None, vmax=float(finite.max()) if finite.size else None)
    ax.set_xticks(range(len(epsilons)))
    ax.set_xticklabels([f"{e:g}" for e in epsilons])
    ax.set_yticks(range(len(mus)))
    ax.set_yticklabels([f"{m:g}" for m in mus])
    ax.set_xlabel("step size ε (epsilon)")
    ax.set_ylabel("momentum μ (mu)")
    mid = float(np.nanmean(finite)) if finite.size else 0.0
    for i in range(len(mus)):
        for j in range(len(epsilons)):
            v = mean[i, j]
            txt = "–" if not math.isfinite(v) else (f"{v:.3f}" + (f"\n±{std[i, j]:.3f}" if std[i, j] > 0 else ""))
            light = math.isfinite(v) and ((v > mid) == (mode == "max"))
            ax.text(j, i, txt, ha="center", va="center", fontsize=8, color="black" if light else "white")
    fig.colorbar(im, ax=ax, label=metric)
    t = title or f"{metric} over μ x ε"
    if baseline is not None:
        t += f"\n(baseline {baseline[0]}: {baseline[1]:.4f})"
    ax.set_title(t, fontsize=10)
    fig.tight_layout()
    out = _save(fig, out)
    plt.close(fig)
    return out


def sweep_markdown(mean: np.ndarray, std: np.ndarray, mus: Sequence[float], epsilons: Sequence[float], *,
                   metric: str, mode: str, baseline: Optional[tuple[str, float]] = None) -> str:
    head = "| μ \\ ε | " + " | ".join(f"{e:g}" for e in epsilons) + " |"
    lines = [f"{metric} ({'higher' if mode == 'max' else 'lower'} is better), mean ± std over seeds\n",
             head, "|---:|" + "---:|" * len(epsilons)]
    finite = mean[np.isfinite(mean)]
    best = (finite.max() if mode == "max" else finite.min()) if finite.size else None
    for i, mu in enumerate(mus):
        cells = []
        for j in range(len(epsilons)):
            v = mean[i, j]
            if not math.isfinite(v):
                cells.append("–")
                continue
            c = f"{v:.4f}" + (f" ± {std[i, j]:.4f}" if std[i, j] > 0 else "")
            cells.append(f"**{c}**" if best is not None and v == best else c)
        lines.append(f"| {mu:g} | " + " | ".join(cells) + " |")
    if baseline is not None:
        lines.append(f"\nbaseline {baseline[0]}: {baseline[1]:.4f}")
    return "\n".join(lines) + "\n"
