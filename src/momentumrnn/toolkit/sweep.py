"""``momentumrnn sweep``: one momentum model over a mu x epsilon grid (the paper's Figure 6
ablation), x seeds; an annotated heatmap (``sweep.png``), ``sweep.md`` and ``sweep.csv``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .compare import compare_runs, plan_runs
from .errors import ToolkitError
from .options import model_label
from .plots import plt_module as _plt
from .plots import save_figure as _save
from .runfiles import atomic_write_text, read_summary
from .runner import is_writer


def check_grid(name: str, values: list) -> list[float]:
    """``--mu`` / ``--epsilon`` values: numbers, no repeats."""
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ToolkitError(f"{name}: expected numbers, got {v!r}")
    if len(set(values)) != len(values):
        raise ToolkitError(f"{name}: repeated values {values}")
    return [float(v) for v in values]


def run_sweep(
    cfg: dict,
    out: Path,
    base: dict,
    mus: list[float],
    eps: list[float],
    *,
    value: str = "final",
    baseline: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    jobs: int = 1,
    job_list: Path | None = None,
) -> str | None:
    """Train (or list the jobs of) the sweep ``cfg`` (its ``models``: :func:`!sweep_models` of ``base``,
    plus a baseline model last when ``baseline``), then draw and tabulate the grid into ``out``.
    Returns the Markdown table (None on a worker process or for a job list)."""
    note = compare_runs(
        cfg, out, resume=resume, overwrite=overwrite, target=cfg["report"]["target"], jobs=jobs, job_list=job_list
    )
    if job_list is not None:
        print(note + " (or re-run this sweep command with --resume for the grid)")
        return None
    if not is_writer():
        return None
    summaries = [s for s in (read_summary(d) for _, d in plan_runs(cfg, Path(out).absolute())) if s]
    if not summaries:
        raise ToolkitError(f"no finished runs in {out}")
    metric, mode = summaries[0]["metric"], summaries[0].get("mode", "max")
    mean, std = sweep_grid(summaries, mus, eps, value=value)
    base_value = None
    if baseline:
        blabel = model_label(cfg["models"][-1])
        vals = [
            (s.get("final") or {}).get(metric) if value == "final" else (s.get("best") or {}).get("value")
            for s in summaries
            if s.get("label") == blabel
        ]
        nums = [v for v in vals if isinstance(v, (int, float))]
        if nums:
            base_value = (blabel, sum(nums) / len(nums))
    what = f"{value} {metric}"
    title = f"{cfg['task']['name']}: {base.get('name') or base['host'] + '/' + base['scheme']} {what}"
    plot_sweep(mean, std, mus, eps, out / "sweep.png", metric=what, mode=mode, title=title, baseline=base_value)
    md = sweep_markdown(mean, std, mus, eps, metric=what, mode=mode, baseline=base_value)
    atomic_write_text(out / "sweep.md", f"# {title}\n\n{md}\n![sweep](sweep.png)\n")
    rows = ["mu,epsilon,mean,std"] + [
        f"{m!r},{e!r},{float(mean[i, j])!r},{float(std[i, j])!r}" for i, m in enumerate(mus) for j, e in enumerate(eps)
    ]
    atomic_write_text(out / "sweep.csv", "\n".join(rows) + "\n")
    return md


def sweep_label(mu: float, eps: float) -> str:
    return f"mu={mu:g},eps={eps:g}"


def sweep_models(model: dict, mus: Sequence[float], epsilons: Sequence[float]) -> list[dict]:
    """The ``models`` list of a sweep: ``model`` with every (mu, epsilon) of the grid."""
    return [
        {**model, "mu": float(mu), "epsilon": float(eps), "label": sweep_label(mu, eps)}
        for mu in mus
        for eps in epsilons
    ]


def sweep_grid(
    summaries: list[dict], mus: Sequence[float], epsilons: Sequence[float], *, value: str = "final"
) -> tuple[np.ndarray, np.ndarray]:
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


def plot_sweep(
    mean: np.ndarray,
    std: np.ndarray,
    mus: Sequence[float],
    epsilons: Sequence[float],
    out: Path,
    *,
    metric: str,
    mode: str,
    title: str = "",
    baseline: tuple[str, float] | None = None,
) -> Path:
    """Annotated heatmap (rows mu, columns epsilon) of the final metric; better cells are lighter."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.1 * len(epsilons) + 2.8, 0.8 * len(mus) + 2.0))
    cmap = "viridis" if mode == "max" else "viridis_r"
    finite = mean[np.isfinite(mean)]
    im = ax.imshow(
        np.ma.masked_invalid(mean),
        cmap=cmap,
        origin="lower",
        aspect="auto",
        vmin=float(finite.min()) if finite.size else None,
        vmax=float(finite.max()) if finite.size else None,
    )
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


def sweep_markdown(
    mean: np.ndarray,
    std: np.ndarray,
    mus: Sequence[float],
    epsilons: Sequence[float],
    *,
    metric: str,
    mode: str,
    baseline: tuple[str, float] | None = None,
) -> str:
    head = "| μ \\ ε | " + " | ".join(f"{e:g}" for e in epsilons) + " |"
    lines = [
        f"{metric} ({'higher' if mode == 'max' else 'lower'} is better), mean ± std over seeds\n",
        head,
        "|---:|" + "---:|" * len(epsilons),
    ]
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
