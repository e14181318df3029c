"""Files of a run directory (no Lightning needed: the report reads runs with this alone).

::

    RUN_DIR/
      config.yaml          resolved config (what ran; the saved recipe of the run)
      metrics.csv          one row per evaluation: epoch, step, time_s, train_*, test_*, lr
      summary.json         status, model, task, parameters, final / best metrics, convergence
      curves.png           train / test curves of this run
      tb/                  TensorBoard events
      checkpoints/last.ckpt, checkpoints/best.ckpt
      permutation.npy      (psmnist) the pixel permutation
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

CONFIG = "config.yaml"
METRICS = "metrics.csv"
SUMMARY = "summary.json"
CURVES = "curves.png"
CKPT_DIR = "checkpoints"
LAST = "last.ckpt"
BEST = "best.ckpt"


def atomic_write(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """``write(f)`` into a temporary file beside ``path``, fsync, rename over ``path``: a kill at
    any moment leaves the old file or the new one, never a torn one (nor a stray temporary)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _num(text: str) -> Any:
    try:
        v = float(text)
    except (TypeError, ValueError):
        return text
    return int(v) if v.is_integer() and "." not in text and "e" not in text.lower() and "n" not in text.lower() else v


def read_metrics(run_dir: Path) -> list[dict]:
    """Rows of metrics.csv (numbers parsed); a torn last line (killed mid-write) is dropped."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines = lines[:-1]
    reader = csv.DictReader(io.StringIO("".join(lines)))
    rows = []
    for raw in reader:
        if None in raw or any(v is None for v in raw.values()):
            continue
        rows.append({k: _num(v) for k, v in raw.items()})
    return rows


def format_value(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else repr(v)
    return str(v)


def metrics_text(rows: Iterable[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([format_value(r.get(c, "")) for c in columns])
    return buf.getvalue()


def write_metrics(run_dir: Path, rows: list[dict], columns: list[str]) -> None:
    atomic_write_text(Path(run_dir) / METRICS, metrics_text(rows, columns))


def append_metrics(run_dir: Path, row: dict, columns: list[str]) -> None:
    path = Path(run_dir) / METRICS
    if not path.exists() or path.stat().st_size == 0:
        write_metrics(run_dir, [row], columns)
        return
    line = metrics_text([row], columns).split("\n", 1)[1]
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def truncate_metrics(run_dir: Path, max_step: int, columns: list[str]) -> int:
    """Keep the rows up to ``max_step`` (a resumed run recomputes the later ones); returns kept."""
    rows = [r for r in read_metrics(run_dir) if isinstance(r.get("step"), (int, float)) and r["step"] <= max_step]
    if (Path(run_dir) / METRICS).exists():
        write_metrics(run_dir, rows, columns)
    return len(rows)


def read_summary(run_dir: Path) -> dict | None:
    path = Path(run_dir) / SUMMARY
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_summary(run_dir: Path, summary: dict) -> None:
    atomic_write_text(Path(run_dir) / SUMMARY, json.dumps(summary, indent=2, allow_nan=True) + "\n")


def metric_is_better(a: float, b: float, mode: str) -> bool:
    if b is None or (isinstance(b, float) and math.isnan(b)):
        return not (isinstance(a, float) and math.isnan(a))
    return a > b if mode == "max" else a < b


def reached(value: Any, target: float | None, mode: str) -> bool:
    if target is None or not isinstance(value, (int, float)) or math.isnan(value):
        return False
    return value >= target if mode == "max" else value <= target


def summarize_rows(rows: list[dict], metric: str, mode: str, target: float | None) -> dict:
    """final / best values of ``metric`` (e.g. ``test_acc``) and when ``target`` was first reached."""
    out: dict[str, Any] = {"metric": metric, "mode": mode, "target": target, "evaluations": len(rows)}
    if not rows:
        out.update(final=None, best=None, reached_target=None)
        return out
    last = rows[-1]
    out["final"] = dict(last.items())
    best = None
    for r in rows:
        v = r.get(metric)
        if isinstance(v, (int, float)) and (best is None or metric_is_better(v, best[metric], mode)):
            best = r
    out["best"] = None if best is None else {"value": best[metric], "epoch": best["epoch"], "step": best["step"]}
    hit = next((r for r in rows if reached(r.get(metric), target, mode)), None)
    out["reached_target"] = (
        None if hit is None else {"epoch": hit["epoch"], "step": hit["step"], "time_s": hit.get("time_s")}
    )
    return out


def find_runs(paths: Iterable[Path]) -> list[Path]:
    """Run directories under the given paths (a path may be a run or hold runs at any depth)."""
    found: list[Path] = []
    for given in paths:
        p = Path(given)
        if (p / CONFIG).exists() or (p / SUMMARY).exists():
            found.append(p)
            continue
        if p.is_dir():
            for sub in sorted(p.rglob(SUMMARY)) + sorted(p.rglob(CONFIG)):
                d = sub.parent
                if d not in found:
                    found.append(d)
    seen, out = set(), []
    for d in found:
        key = d.resolve()
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out
