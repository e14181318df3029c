"""``momentumrnn grads``: train models as ``compare`` does while probing ``||dL/dh_t||`` (see
:mod:`.probe`), then the paper's heatmap (time step vs training iteration), line plots and tables.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .compare import compare_runs, plan_runs
from .errors import ToolkitError
from .options import Opt, coerce, model_label
from .plots import plt_module as _plt
from .plots import save_figure as _save
from .probe import load_grad_norms
from .runfiles import atomic_write_text
from .runner import is_writer
from .tasks import build_task


def default_probe_steps(cfg: dict) -> list[int]:
    """12 optimizer steps evenly spaced over the planned training, from step 0."""
    t = cfg["train"]
    task = build_task(cfg["task"])
    per_epoch = task.steps_per_epoch(len(task.load()[0]), t["batch_size"])
    if t["limit_train_batches"]:
        per_epoch = min(per_epoch, t["limit_train_batches"])
    total = per_epoch * t["epochs"]
    if t["max_steps"]:
        total = min(total, t["max_steps"])
    k = min(12, total)
    return sorted({round(i * (total - 1) / max(k - 1, 1)) for i in range(k)})


def run_grads(
    cfg: dict, out: Path, *, resume: bool = False, overwrite: bool = False, jobs: int = 1, job_list: Path | None = None
) -> str | None:
    """Train (or list the jobs of) every run of ``cfg`` with the probe on, then write
    ``grads_heatmap.png``, ``grads_lines.png``, ``grads.csv`` and ``grads.md`` into ``out``.
    Returns the Markdown table (None on a worker process or for a job list)."""
    if cfg["train"]["devices"] * cfg["train"]["num_nodes"] > 1:
        raise ToolkitError("grads probes in one process; use --devices 1")
    if not cfg["train"]["grad_norm_steps"]:
        cfg["train"]["grad_norm_steps"] = default_probe_steps(cfg)
    coerce("--at", Opt("int_list", None, lo=0), cfg["train"]["grad_norm_steps"])
    if is_writer():
        print(
            f"probing ||dL/dh_t|| at steps {cfg['train']['grad_norm_steps']} on the first "
            f"{cfg['train']['grad_norm_batch']} training examples",
            flush=True,
        )
    note = compare_runs(
        cfg, out, resume=resume, overwrite=overwrite, target=cfg["report"]["target"], jobs=jobs, job_list=job_list
    )
    if job_list is not None:
        print(note + " (or re-run this grads command with --resume for the heatmaps)")
        return None
    if not is_writer():
        return None
    series = collect_grad_norms([(model_label(rc["model"]), d) for rc, d in plan_runs(cfg, Path(out).absolute())])
    if not series:
        raise ToolkitError(
            f"no gradient norms were recorded in {out}: did training reach the probed steps "
            f"{cfg['train']['grad_norm_steps']}?"
        )
    title = f"{cfg['task']['name']}: ||dL/dh_t|| during training"
    plot_grad_heatmaps(series, out / "grads_heatmap.png", title=title)
    plot_grad_lines(series, out / "grads_lines.png", title=f"{cfg['task']['name']}: ||dL/dh_t|| against t")
    atomic_write_text(out / "grads.csv", grads_csv(series))
    table = grads_table(series)
    atomic_write_text(
        out / "grads.md",
        "# ||dL/dh_t|| during training\n\n" + table + "\n![heatmap](grads_heatmap.png)\n\n![lines](grads_lines.png)\n",
    )
    return table


# ---------------------------------------------------------------------------------------------
# figures and tables of `momentumrnn grads`


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


def plot_grad_heatmaps(series: list[dict], out: Path, *, title: str = "") -> Path | None:
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
    fig, axes = plt.subplots(
        1, len(series), figsize=(3.9 * len(series) + 1.2, 3.9), squeeze=False, sharey=True, layout="constrained"
    )
    im = None
    for ax, s, lg in zip(axes[0], series, logs):
        T = lg.shape[1]
        K = lg.shape[0]
        im = ax.imshow(
            lg,
            aspect="auto",
            origin="lower",
            cmap=cmap,
            vmin=vmin,
            vmax=vmax,
            extent=(0.5, T + 0.5, -0.5, K - 0.5),
            interpolation="nearest",
        )
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


def plot_grad_lines(series: list[dict], out: Path, *, title: str = "") -> Path | None:
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
    lines = [
        "| model | iteration | ‖dL/dh_1‖ | ‖dL/dh_T/2‖ | ‖dL/dh_T‖ | ‖dL/dh_1‖ / ‖dL/dh_T‖ |",
        "|---|---:|---:|---:|---:|---:|",
    ]
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
