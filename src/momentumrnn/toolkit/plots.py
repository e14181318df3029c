"""PNG plots of train / test curves (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ToolkitError

if TYPE_CHECKING:
    from types import ModuleType

    from matplotlib.figure import Figure

PRETTY = {"loss": "loss", "acc": "accuracy"}


def _plt() -> ModuleType:
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        raise ToolkitError("plots need matplotlib: pip install 'momentumrnn[train]'") from None
    return plt


def plt_module() -> ModuleType:
    """``matplotlib.pyplot`` on the Agg backend (imported on first use: reports without plots and
    runs without a figure never load matplotlib)."""
    return _plt()


def save_figure(fig: Figure, out: Path) -> Path:
    """Save ``fig`` as a PNG atomically (a temporary file renamed over ``out``)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(out)
    return out


def _xy(rows: list[dict], key: str, x: str) -> tuple[list, list]:
    xs, ys = [], []
    for r in rows:
        v = r.get(key)
        if isinstance(v, (int, float)) and not math.isnan(v) and isinstance(r.get(x), (int, float)):
            xs.append(r[x])
            ys.append(v)
    return xs, ys


def plot_curves(
    series: list[dict],
    out: Path,
    *,
    title: str = "",
    x: str = "epoch",
    target: float | None = None,
    metric: str | None = None,
) -> Path | None:
    """One PNG with a panel per metric (loss, accuracy): train dashed, test solid.

    ``series``: dicts with ``label`` (legend / colour group), ``rows`` (metrics.csv rows) and
    optionally ``seed``. Runs of the same label share a colour; several runs of a label evaluated
    at the same points (the seeds of a comparison) are drawn as their mean with the min-max band
    of the test curve shaded.
    """
    series = [s for s in series if s.get("rows")]
    if not series:
        return None
    plt = _plt()
    names = [n for n in ("loss", "acc") if any(f"test_{n}" in s["rows"][0] for s in series)]
    fig, axes = plt.subplots(1, len(names), figsize=(6.0 * len(names), 4.2), squeeze=False)
    labels = list(dict.fromkeys(s["label"] for s in series))
    colors = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0", "C1", "C2"])
    color = {lab: colors[i % len(colors)] for i, lab in enumerate(labels)}
    for ax, name in zip(axes[0], names):
        for lab in labels:
            group = [s for s in series if s["label"] == lab]
            for split, style in (("train", "--"), ("test", "-")):
                curves = [c for c in (_xy(s["rows"], f"{split}_{name}", x) for s in group) if c[0]]
                if not curves:
                    continue
                n = len(curves)
                legend = f"{lab} ({split}{', mean of ' + str(n) + ' seeds' if n > 1 else ''})"
                if n > 1 and all(c[0] == curves[0][0] for c in curves):
                    # several seeds on the same evaluation points: their mean, and the min-max band
                    xs = curves[0][0]
                    ys = [[c[1][i] for c in curves] for i in range(len(xs))]
                    ax.plot(
                        xs,
                        [sum(v) / n for v in ys],
                        style,
                        color=color[lab],
                        label=legend,
                        marker="o" if len(xs) <= 12 else None,
                        markersize=3,
                    )
                    if split == "test":
                        ax.fill_between(
                            xs, [min(v) for v in ys], [max(v) for v in ys], color=color[lab], alpha=0.15, linewidth=0
                        )
                    continue
                for i, (xs, ys) in enumerate(curves):  # one line per run
                    ax.plot(
                        xs,
                        ys,
                        style,
                        color=color[lab],
                        alpha=0.9 if n == 1 else 0.55,
                        label=legend if i == 0 else None,
                        marker="o" if len(xs) <= 12 else None,
                        markersize=3,
                    )
        if target is not None and metric == f"test_{name}":
            ax.axhline(target, color="grey", linewidth=0.8, linestyle=":", label=f"target {target:g}")
        ax.set_xlabel(x)
        ax.set_ylabel(PRETTY.get(name, name))
        if name == "loss":
            ys_all = [v for s in series for v in _xy(s["rows"], "train_loss", x)[1] + _xy(s["rows"], "test_loss", x)[1]]
            if ys_all and min(ys_all) > 0 and max(ys_all) / min(ys_all) > 30:
                ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out)
    return out
