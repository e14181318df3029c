"""Comparisons: every model of a recipe with every seed (:func:`compare_runs`), side by side in
parallel processes (``--jobs N``) or written as a job list for any scheduler
(:func:`write_job_list`: one self-contained ``momentumrnn train`` command per run).

A comparison directory holds ``compare.yaml`` (the resolved comparison), one run directory per
model and seed (``<model>/seed<N>/``) and the report.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import yaml
from tqdm import tqdm

from . import runfiles
from .config import config_changes, dump_yaml, flatten, run_config
from .errors import ToolkitError
from .interrupts import STOP_SIGNALS, RunInterrupted, signal_name, slurm_restarted
from .models import split_parameters
from .options import ORTH_OPTIM_KEYS, model_label
from .report import make_report
from .runner import COMPARE_FILE, RunFailed, _nonempty, check_new_dir, is_writer, say, slug, train_run
from .tasks import build_task

if TYPE_CHECKING:
    from torch import nn

_HEADER = re.compile(r"\((\d+) steps per epoch\)")
_ROW = re.compile(r"epoch ([\d.]+)\s+step (\d+)\s+(.*?)\s*\[")


def _yaml_value(v: Any) -> str:
    """``v`` as the YAML the command line reads back (``--set KEY=VALUE`` values are YAML)."""
    return yaml.safe_dump(v, default_flow_style=True, width=10**6).split("\n...")[0].strip()


def train_command(rc: dict, run_dir: Path) -> str:
    """One self-contained shell command that trains the run ``rc`` into ``run_dir``: every setting
    of the resolved config as ``--set KEY=VALUE`` (no recipe file needed on the machine that runs
    it; ``--resume`` added to the same command continues it)."""
    parts = ["momentumrnn", "train"]
    for key, value in flatten(rc).items():
        parts += ["--set", f"{key}={_yaml_value(value)}"]
    parts += ["--out", str(run_dir)]
    return " ".join(shlex.quote(p) for p in parts)


def plan_runs(cfg: dict, out_dir: Path) -> list[tuple[dict, Path]]:
    """``(run config, run directory)`` of every model x seed of a comparison."""
    return [
        (run_config(cfg, model, seed), out_dir / slug(model_label(model)) / f"seed{seed}")
        for model in cfg["models"]
        for seed in cfg["seeds"]
    ]


def scope_settings(rc: dict, model: nn.Module) -> list[str]:
    """A comparison's ``optim`` section is shared by its models: the settings of orthogonal
    parameters (``lr_orth``, ``orth_name``) go only to the models that have such parameters; the
    others' run config holds null (so their runs do not warn that the setting is unused). Returns
    the keys that apply to ``model``."""
    if split_parameters(model)[0]:
        return [k for k in ORTH_OPTIM_KEYS if rc["optim"].get(k) is not None]
    for k in ORTH_OPTIM_KEYS:
        rc["optim"][k] = None
    return []


def write_job_list(plan: list[tuple[dict, Path]], path: Path) -> None:
    """The job list: one ``momentumrnn train`` command a line (a ``#`` header says how to use it)."""
    lines = [
        "# momentumrnn job list: one self-contained `momentumrnn train` command per line, for any",
        '# scheduler (e.g. a SLURM array: sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" THIS_FILE | bash; see',
        "# docs/toolkit.md). A job that was stopped continues with the same line plus --resume.",
        "# Then: momentumrnn report <comparison directory>",
    ]
    runfiles.atomic_write_text(path, "\n".join(lines + [train_command(rc, d) for rc, d in plan]) + "\n")


def compare_runs(
    cfg: dict,
    out_dir: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
    target: float | None = None,
    jobs: int = 1,
    job_list: Path | None = None,
) -> str:
    """Train every model of ``cfg['models']`` with every seed of ``cfg['seeds']``, then report.

    ``jobs > 1`` trains that many runs at once, each in its own process (``momentumrnn train``
    on the run's resolved config) with ``cpu_count // jobs`` threads unless ``train.threads`` is set.
    ``job_list``: train nothing; write ``compare.yaml`` and the job list (one command per run) for
    a scheduler, and return a note on what to do next.
    """
    out_dir = Path(out_dir).absolute()
    writer = is_writer()
    if not resume and not overwrite and slurm_restarted() and (out_dir / COMPARE_FILE).exists():
        resume = True  # SLURM requeued the job: the same command continues its comparison
    if jobs < 1:
        raise ToolkitError(f"--jobs must be >= 1, got {jobs}")
    if jobs > 1 and cfg["train"]["devices"] * cfg["train"]["num_nodes"] > 1:
        raise ToolkitError("--jobs > 1 trains runs side by side in single processes; use it with --devices 1")
    replace = check_new_dir(out_dir, resume=resume, overwrite=overwrite, what="output directory") if writer else False
    saved_path = out_dir / COMPARE_FILE
    if resume and writer:
        if not saved_path.exists():
            raise ToolkitError(f"--resume: {out_dir} holds no {COMPARE_FILE}; it is not a comparison directory")
        try:
            saved = yaml.safe_load(saved_path.read_text(encoding="utf-8"))
        except Exception:
            raise ToolkitError(f"{saved_path} is corrupt; restore it or start again with --overwrite") from None
        changes = config_changes(
            {k: v for k, v in saved.items() if k not in ("models", "seeds")},
            {k: v for k, v in cfg.items() if k not in ("models", "seeds")},
        )
        if changes or saved.get("models") != cfg["models"] or saved.get("seeds") != cfg["seeds"]:
            which = changes[0] if changes else ("models" if saved.get("models") != cfg["models"] else "seeds")
            raise ToolkitError(
                f"--resume: {out_dir} was started with a different {which}; repeat the "
                "original settings or choose another --out"
            )
    plan = plan_runs(cfg, out_dir)
    # validate every model before training any; shared settings go to the models that use them
    task = build_task(cfg["task"])
    used: set[str] = set()
    for rc, _ in plan:
        used.update(scope_settings(rc, task.build_model(rc["model"])))
    for k in ORTH_OPTIM_KEYS:
        if cfg["optim"].get(k) is not None and k not in used:
            say(f"note: optim.{k} is set but none of the models has orthogonal parameters; it is unused")
    if writer:
        if replace:
            shutil.rmtree(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        runfiles.atomic_write_text(saved_path, "# momentumrnn comparison (resolved)\n" + dump_yaml(cfg))
    if job_list is not None:
        if writer:
            write_job_list(plan, Path(job_list))
        return (
            f"wrote {len(plan)} jobs to {job_list} (one `momentumrnn train` command per line) and the "
            f"comparison to {saved_path}; run the jobs anywhere, copy their run directories under {out_dir} "
            f"if they ran elsewhere, then: momentumrnn report {out_dir}"
        )
    n = len(plan)
    todo = []
    for i, (rc, d) in enumerate(plan):
        run_resume = resume and _nonempty(d)
        summary = runfiles.read_summary(d) if run_resume else None
        if (
            summary
            and summary.get("status") == "completed"
            and writer
            and rc["train"]["epochs"] <= (summary.get("epochs_planned") or 0)
            and (rc["train"]["devices"] * rc["train"]["num_nodes"]) == 1
            and not rc["train"]["max_steps"]
        ):
            say(f"[{i + 1}/{n}] {model_label(rc['model'])} seed {rc['train']['seed']}: already complete")
            continue
        todo.append((i, rc, d, run_resume))
    if jobs > 1 and len(todo) > 1:
        _run_parallel(todo, n, jobs, out_dir)
    else:
        for i, rc, d, run_resume in todo:
            try:
                train_run(
                    rc,
                    d,
                    resume=run_resume,
                    overwrite=False,
                    label=model_label(rc["model"]),
                    progress=progress,
                    prefix=f"[{i + 1}/{n}] ",
                )
            except RunInterrupted as e:
                raise RunInterrupted(
                    f"{e.what} ({model_label(rc['model'])} seed {rc['train']['seed']})",
                    "continue the comparison with the same command and --resume",
                    e.signum,
                ) from None
    if not writer:
        return ""
    return make_report([out_dir], out_dir=out_dir, target=target)


def _run_parallel(todo: list, n: int, jobs: int, out_dir: Path) -> None:
    """Run ``todo`` (index, config, run dir, resume) ``jobs`` at a time as ``momentumrnn train``
    processes; their output is printed line by line with a ``[model seed]`` prefix."""
    recipes = out_dir / ".recipes"
    recipes.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    lock = threading.Lock()
    queue = list(todo)
    running: dict = {}
    failed: list[str] = []

    bars = sys.stdout.isatty()  # a progress bar per running job, else the jobs' lines

    def pump(proc: subprocess.Popen[str], prefix: str, rc: dict) -> None:
        assert proc.stdout is not None  # (stdout=PIPE)
        bar = None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            with lock:
                m = _HEADER.search(line)
                if bars and m and bar is None:
                    t = rc["train"]
                    per_epoch = int(m.group(1))
                    if t["limit_train_batches"]:
                        per_epoch = min(per_epoch, t["limit_train_batches"])
                    total = per_epoch * t["epochs"]
                    if t["max_steps"]:
                        total = min(total, t["max_steps"])
                    bar = tqdm(total=total, desc=prefix.strip(" []"), unit="step", leave=True, dynamic_ncols=True)
                row = _ROW.search(line)
                if bar is not None and row:
                    bar.update(int(row.group(2)) - bar.n)
                    bar.set_postfix_str(" ".join(row.group(3).split())[:80], refresh=True)
                elif bar is not None:
                    tqdm.write(prefix + line)
                else:
                    print(prefix + line, flush=True)
        if bar is not None:
            bar.close()

    def start(i: int, rc: dict, d: Path, run_resume: bool) -> None:
        rc = dict(rc, train=dict(rc["train"]))
        if rc["train"].get("threads") is None:
            rc["train"]["threads"] = threads
        recipe = recipes / f"run{i}.yaml"
        runfiles.atomic_write_text(recipe, dump_yaml(rc))
        cmd = [sys.executable, "-m", "momentumrnn", "train", str(recipe), "--out", str(d)]
        if run_resume:
            cmd.append("--resume")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=env)
        label = f"{model_label(rc['model'])} seed {rc['train']['seed']}"
        t = threading.Thread(target=pump, args=(proc, f"[{i + 1}/{n} {label}] ", rc), daemon=True)
        t.start()
        running[proc] = (label, t)

    received: list[int] = []

    # the jobs save their checkpoints and stop; none starts
    def forward(signum: int, frame: FrameType | None) -> None:
        if not received:
            received.append(int(signum))
        for proc in list(running):
            with contextlib.suppress(OSError):
                proc.send_signal(signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, forward) for s in STOP_SIGNALS}
    try:
        while queue or running:
            while queue and len(running) < jobs and not received:
                start(*queue.pop(0))
            time.sleep(0.1)
            for proc in [p for p in running if p.poll() is not None]:
                label, t = running.pop(proc)
                t.join()
                if proc.returncode != 0:
                    failed.append(f"{label} (exit {proc.returncode})")
    except BaseException:
        for proc in running:
            proc.terminate()
        for proc in running:
            with contextlib.suppress(Exception):
                proc.wait(timeout=30)
        raise
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        shutil.rmtree(recipes, ignore_errors=True)
    if received:
        raise RunInterrupted(
            f"{signal_name(received[0])}: the running jobs saved their checkpoints",
            "continue the comparison with the same command and --resume",
            received[0],
        )
    if failed:
        raise RunFailed(
            f"{len(failed)} run(s) failed: {', '.join(failed)}; see their output above, fix the "
            f"cause and continue with --resume"
        )


def fresh_dir(base: Path) -> Path:
    """``base`` if free, else ``base-2``, ``base-3``, ..."""
    if not _nonempty(base):
        return base
    k = 2
    while _nonempty(base.with_name(f"{base.name}-{k}")):
        k += 1
    return base.with_name(f"{base.name}-{k}")
