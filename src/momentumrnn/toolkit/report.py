"""Reports over run directories: a Markdown and a CSV table (mean ± std over seeds of the final
and best metrics, epochs / steps to reach a target) and one PNG of all runs' curves.

Needs no Lightning: it reads ``summary.json``, ``metrics.csv`` and ``config.yaml`` only, so run
directories that ran anywhere (other machines, a cluster's scratch space) can be copied together
and reported as one table. It writes only where it is told (``--out``) or into a comparison's own
folder, never into a run directory.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, overload

import yaml

from . import runfiles, tasks
from .config import load_run_config
from .errors import ToolkitError
from .options import model_label
from .plots import plot_curves

TASK_METRIC = {"adding": ("test_loss", "min")}


def _run_info(d: Path) -> dict | None:
    """What the report needs of one run directory, or None (with a warning) if unusable."""
    summary = runfiles.read_summary(d)
    cfg = None
    if (d / runfiles.CONFIG).exists():
        try:
            cfg = load_run_config(d)
        except ToolkitError:
            cfg = None
    if summary is None and cfg is None:
        print(f"warning: skipping {d}: no readable summary.json or config.yaml", file=sys.stderr)
        return None
    if summary is not None and summary.get("metric"):
        label = summary.get("label") or "?"
        task = summary.get("task") or "?"
        metric, mode = summary["metric"], summary.get("mode", "max")
        seed = summary.get("seed")
        params = summary.get("parameters")
        status = summary.get("status", "?")
        target = summary.get("target")
    elif cfg is None:  # a summary.json without its metric, and no config.yaml
        print(
            f"warning: skipping {d}: summary.json names no metric and there is no readable config.yaml", file=sys.stderr
        )
        return None
    else:
        label = model_label(cfg["model"])
        task = cfg["task"]["name"]
        try:
            tc = tasks.get_task_class(task)
            if not isinstance(tc.metric, str):  # decided by the data (task sequences): not known here
                raise ToolkitError(task)
            metric, mode, target = f"test_{tc.metric}", ("max" if tc.metric == "acc" else "min"), tc.default_target
        except ToolkitError:
            metric, mode, target = (*TASK_METRIC.get(task, ("test_acc", "max")), None)
        seed = cfg["train"].get("seed")
        params = None
        status = "unknown"
    rows = runfiles.read_metrics(d)
    rep = (cfg or {}).get("report") or {}
    published = (rep.get("published") or {}).get(str(label))
    return {
        "dir": d,
        "label": str(label),
        "task": str(task),
        "metric": metric,
        "mode": mode,
        "seed": seed,
        "params": params,
        "status": status,
        "target": target,
        "rows": rows,
        "published": published if isinstance(published, (int, float)) else None,
        "published_source": rep.get("published_source"),
    }


def _stats(values: Sequence[object]) -> tuple[float | None, float | None]:
    vals = [float(v) for v in values if isinstance(v, (int, float)) and not math.isnan(float(v))]
    if not vals:
        return None, None
    mean = statistics.fmean(vals)
    std = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return mean, std


def _fmt(mean: float | None, std: float | None, n: int, digits: int = 4) -> str:
    if mean is None:
        return "–"
    if n > 1:
        return f"{mean:.{digits}f} ± {std:.{digits}f}"
    return f"{mean:.{digits}f}"


def _fmt_stats(stats: tuple[float | None, float | None], n: int, digits: int = 4) -> str:
    """:func:`_fmt` of a ``(mean, std)`` pair of :func:`_stats`."""
    return _fmt(*stats, n, digits)


def _best(rows: list[dict], metric: str, mode: str) -> float | None:
    vals = [r[metric] for r in rows if isinstance(r.get(metric), (int, float)) and not math.isnan(r[metric])]
    if not vals:
        return None
    return max(vals) if mode == "max" else min(vals)


def summarize(runs: list[dict], target: float | None) -> list[dict]:
    """One line per (task, model label): aggregates over its runs (seeds)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["task"], r["label"]), []).append(r)
    out = []
    for (task, label), rs in groups.items():
        metric, mode = rs[0]["metric"], rs[0]["mode"]
        tgt = target if target is not None else rs[0]["target"]
        finals = [r["rows"][-1].get(metric) for r in rs if r["rows"]]
        bests = [_best(r["rows"], metric, mode) for r in rs if r["rows"]]
        hits = []
        for r in rs:
            hit = next((row for row in r["rows"] if runfiles.reached(row.get(metric), tgt, mode)), None)
            if hit is not None:
                hits.append(hit)
        line: dict[str, Any] = {
            "task": task,
            "model": label,
            "runs": len(rs),
            "metric": metric,
            "mode": mode,
            "target": tgt,
            "seeds": [r["seed"] for r in rs],
            "final": _stats(finals),
            "best": _stats(bests),
            "final_test_loss": _stats([r["rows"][-1].get("test_loss") for r in rs if r["rows"]]),
            "final_train_loss": _stats([r["rows"][-1].get("train_loss") for r in rs if r["rows"]]),
            "epochs": _stats([r["rows"][-1].get("epoch") for r in rs if r["rows"]]),
            "time_s": _stats([r["rows"][-1].get("time_s") for r in rs if r["rows"]]),
            "reached": len(hits),
            "epochs_to_target": _stats([h["epoch"] for h in hits]),
            "steps_to_target": _stats([h["step"] for h in hits]),
            "params": rs[0]["params"],
            "incomplete": sum(1 for r in rs if r["status"] != "completed"),
            "n_eval": sum(1 for r in rs if r["rows"]),
            "published": next((r["published"] for r in rs if r.get("published") is not None), None),
            "published_source": next((r["published_source"] for r in rs if r.get("published_source")), None),
        }
        out.append(line)
    return out


def _conv(line: dict, key: str, digits: int) -> str:
    if line["target"] is None:
        return "–"
    if line["reached"] == 0:
        return "not reached"
    mean, std = line[key]
    txt = _fmt(mean, std, line["reached"], digits)
    if line["reached"] < line["runs"]:
        txt += f" ({line['reached']}/{line['runs']} runs)"
    return txt


def markdown(lines: list[dict], runs: list[dict]) -> str:
    parts = []
    for task in dict.fromkeys(l["task"] for l in lines):
        ls = [l for l in lines if l["task"] == task]
        metric, mode, tgt = ls[0]["metric"], ls[0]["mode"], ls[0]["target"]
        short = metric.replace("test_", "test ")
        parts.append(
            f"### {task}: {short} ({'higher' if mode == 'max' else 'lower'} is better), mean ± std over seeds\n"
        )
        tgt_txt = f"{tgt:g}" if tgt is not None else "–"
        loss_col = metric != "test_loss"  # a loss metric is already in the first columns
        paper = any(l.get("published") is not None for l in ls)
        head = (
            ["model", "runs", f"final {short}", f"best {short}"]
            + (["paper"] if paper else [])
            + (["final test loss"] if loss_col else [])
            + ["final train loss", f"epochs to {tgt_txt}", f"steps to {tgt_txt}", "epochs", "train time (s)", "params"]
        )
        parts.append("| " + " | ".join(head) + " |")
        parts.append("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
        for l in ls:
            runs_txt = str(l["runs"]) + (f" ({l['incomplete']} unfinished)" if l["incomplete"] else "")
            cells = [
                l["model"],
                runs_txt,
                _fmt_stats(l["final"], l["n_eval"]),
                _fmt_stats(l["best"], l["n_eval"]),
                *([_fmt(l["published"], None, 1)] if paper else []),
                *([_fmt_stats(l["final_test_loss"], l["n_eval"])] if loss_col else []),
                _fmt_stats(l["final_train_loss"], l["n_eval"]),
                _conv(l, "epochs_to_target", 2),
                _conv(l, "steps_to_target", 0),
                _fmt_stats(l["epochs"], l["n_eval"], 2),
                _fmt_stats(l["time_s"], l["n_eval"], 0),
                f"{l['params']:,}" if isinstance(l["params"], int) else "–",
            ]
            parts.append("| " + " | ".join(cells) + " |")
        sources = list(
            dict.fromkeys(
                l["published_source"] for l in ls if l.get("published") is not None and l.get("published_source")
            )
        )
        if paper:
            parts.append(
                '\n"paper": published values'
                + (f" ({'; '.join(sources)})" if sources else "")
                + "; ours are on the settings of the runs above, which may differ from the paper's."
            )
        parts.append("")
    parts.append("Runs:\n")
    parts.append("| task | model | seed | status | evaluations | final | best | run directory |")
    parts.append("|---|---|---:|---|---:|---:|---:|---|")
    for r in runs:
        fin = r["rows"][-1].get(r["metric"]) if r["rows"] else None
        best = _best(r["rows"], r["metric"], r["mode"])
        parts.append(
            f"| {r['task']} | {r['label']} | {r['seed']} | {r['status']} | {len(r['rows'])} | "
            f"{'–' if fin is None else f'{fin:.4f}'} | {'–' if best is None else f'{best:.4f}'} | "
            f"{r['dir']} |"
        )
    return "\n".join(parts) + "\n"


def csv_text(lines: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cols = [
        "task",
        "model",
        "runs",
        "seeds",
        "metric",
        "mode",
        "final_mean",
        "final_std",
        "best_mean",
        "best_std",
        "final_test_loss_mean",
        "final_test_loss_std",
        "final_train_loss_mean",
        "final_train_loss_std",
        "target",
        "runs_reaching_target",
        "epochs_to_target_mean",
        "epochs_to_target_std",
        "steps_to_target_mean",
        "steps_to_target_std",
        "epochs_mean",
        "train_time_s_mean",
        "params",
        "published",
    ]
    w.writerow(cols)

    def num(x: float | None) -> str:
        return "" if x is None else repr(float(x))

    for l in lines:
        w.writerow(
            [
                l["task"],
                l["model"],
                l["runs"],
                " ".join(str(s) for s in l["seeds"]),
                l["metric"],
                l["mode"],
                num(l["final"][0]),
                num(l["final"][1]),
                num(l["best"][0]),
                num(l["best"][1]),
                num(l["final_test_loss"][0]),
                num(l["final_test_loss"][1]),
                num(l["final_train_loss"][0]),
                num(l["final_train_loss"][1]),
                "" if l["target"] is None else l["target"],
                l["reached"],
                num(l["epochs_to_target"][0]),
                num(l["epochs_to_target"][1]),
                num(l["steps_to_target"][0]),
                num(l["steps_to_target"][1]),
                num(l["epochs"][0]),
                num(l["time_s"][0]),
                "" if l["params"] is None else l["params"],
                num(l.get("published")),
            ]
        )
    return buf.getvalue()


def _compare_order(paths: list[Path]) -> dict[str, int]:
    """Model label -> position in the ``models`` list of a comparison directory (else empty)."""
    if len(paths) != 1 or not (paths[0] / "compare.yaml").is_file():
        return {}
    try:
        models = yaml.safe_load((paths[0] / "compare.yaml").read_text(encoding="utf-8")).get("models") or []
        return {model_label(m): i for i, m in enumerate(models) if isinstance(m, dict)}
    except Exception:  # an unreadable compare.yaml only loses the ordering
        return {}


def is_comparison(path: Path) -> bool:
    """A comparison directory (``compare`` / ``sweep`` / ``grads`` output): it holds compare.yaml."""
    return (Path(path) / "compare.yaml").is_file()


@overload
def make_report(
    paths: list[Path],
    out_dir: Path | None = None,
    *,
    target: float | None = None,
    x: str = "epoch",
    plot: bool = True,
    return_dest: Literal[False] = False,
) -> str: ...
@overload
def make_report(
    paths: list[Path],
    out_dir: Path | None = None,
    *,
    target: float | None = None,
    x: str = "epoch",
    plot: bool = True,
    return_dest: Literal[True],
) -> tuple[str, Path | None]: ...


def make_report(
    paths: list[Path],
    out_dir: Path | None = None,
    *,
    target: float | None = None,
    x: str = "epoch",
    plot: bool = True,
    return_dest: bool = False,
) -> str | tuple[str, Path | None]:
    """The report of the run directories under ``paths``: the Markdown text, also written with
    ``report.csv`` and ``curves.png`` (one per task if several) into ``out_dir``, or, when
    ``out_dir`` is None and ``paths`` is one comparison directory, into that directory; otherwise
    nothing is written (a run directory is only ever read). ``return_dest``: return
    ``(markdown, directory written or None)``."""
    paths = [Path(p) for p in paths]
    for p in paths:
        if not p.exists():
            raise ToolkitError(f"{p} does not exist; give run directories (or folders holding them)")
    dirs = runfiles.find_runs(paths)
    if not dirs:
        raise ToolkitError(
            f"no run directories found in {', '.join(map(str, paths))} "
            "(a run directory holds summary.json or config.yaml)"
        )
    runs = [r for r in (_run_info(d) for d in dirs) if r is not None]
    if not runs:
        raise ToolkitError("none of the run directories is readable; see the warnings above")
    order = _compare_order(paths)
    if order:  # a comparison's models in the order of its recipe
        runs.sort(key=lambda r: (order.get(r["label"], len(order)), r["seed"] if isinstance(r["seed"], int) else 0))
    lines = summarize(runs, target)
    md = markdown(lines, runs)
    if out_dir is None and len(paths) == 1 and is_comparison(paths[0]):
        out_dir = paths[0]
    if out_dir is None:
        return (md, None) if return_dest else md
    out_dir = Path(out_dir)
    if out_dir.resolve() in {d.resolve() for d in dirs}:
        raise ToolkitError(f"--out {out_dir} is a run directory; a report never writes into one: choose another folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    pngs = []
    if plot:
        tasks_ = list(dict.fromkeys(r["task"] for r in runs))
        for task in tasks_:
            name = "curves.png" if len(tasks_) == 1 else f"curves-{task}.png"
            rs = [r for r in runs if r["task"] == task]
            line = next(l for l in lines if l["task"] == task)
            png = plot_curves(
                [{"label": r["label"], "rows": r["rows"], "seed": r["seed"]} for r in rs],
                out_dir / name,
                title=f"{task}: train (dashed) and test (solid)",
                x=x,
                target=line["target"],
                metric=line["metric"],
            )
            if png is not None:
                pngs.append(png)
    if pngs:
        md += "\n" + "\n".join(f"![curves]({p.name})" for p in pngs) + "\n"
    runfiles.atomic_write_text(out_dir / "report.md", "# momentumrnn report\n\n" + md)
    runfiles.atomic_write_text(out_dir / "report.csv", csv_text(lines))
    return (md, out_dir) if return_dest else md
