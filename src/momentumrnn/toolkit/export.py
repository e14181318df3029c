"""``momentumrnn export RUN_DIR --onnx FILE``: a trained run's model as an ONNX file.

The model of the run (its ``config.yaml``: the task's model, e.g. the recurrent layer and the
head) is rebuilt, loaded with a checkpoint's weights (``best.ckpt`` by default, weights-only) and
exported with ``torch.onnx.export`` (torch's default exporter; the layers run on the ``scan``
backend there, so the sequence length stays dynamic): one input of ``batch`` sequences of ``time``
steps, both dimensions dynamic, and the model's prediction as the output. The input is what the
model reads during training, after the task's input transform (``Task.inputs``: e.g. MNIST pixels
divided by 255, in the permuted order for psmnist). The file is written atomically; the export is
then checked with onnxruntime when it is installed, at the export's shape and at another one.

Needs ``onnx`` and ``onnxscript`` (torch's ONNX exporter), and ``onnxruntime`` for the check:
``pip install 'momentumrnn[onnx]'``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from . import runfiles
from .callbacks import load_checkpoint_file
from .config import load_run_config
from .errors import ToolkitError
from .tasks import build_task

if TYPE_CHECKING:
    from .tasks.base import Task

__all__ = ["export_run", "ExportResult", "CHECKPOINTS"]

#: ``--checkpoint`` choices: the best evaluation's weights, or the last saved ones
CHECKPOINTS = ("best", "last")
#: the example input's (batch, time) and the second shape of the onnxruntime check
EXAMPLE_SHAPE = (2, 5)
CHECK_SHAPE = (3, 11)
#: a difference above this (relative to the output's scale, at least 1) is reported as unexpected:
#: float32 rounding of short sequences stays far below it (about 1e-7 to 1e-5 relative here)
CHECK_TOLERANCE = 1e-4


@dataclass
class ExportResult:
    path: Path
    checkpoint: Path
    step: int | None
    inputs: list  # (name, dtype, shape) with symbolic dimensions as names
    outputs: list
    #: ``((batch, time), max |onnxruntime - torch|, max |torch|)`` per checked shape; None:
    #: onnxruntime is not installed
    check: list | None


class _Prediction(nn.Module):
    """The model's prediction (its first output, when it returns several, e.g. a language model's
    ``(logits, state, ...)``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out[0] if isinstance(out, (tuple, list)) else out


def _checkpoint(run_dir: Path, which: str | None) -> tuple[Path, str | None]:
    """The checkpoint file to load and a note when the default had to fall back."""
    ckpt_dir = run_dir / runfiles.CKPT_DIR
    files = {"best": ckpt_dir / runfiles.BEST, "last": ckpt_dir / runfiles.LAST}
    if which is not None:
        if which not in files:
            raise ToolkitError(f"--checkpoint must be one of {', '.join(CHECKPOINTS)}, got {which!r}")
        if not files[which].is_file():
            raise ToolkitError(f"{run_dir} has no {which} checkpoint ({files[which]} not found)")
        return files[which], None
    if files["best"].is_file():
        return files["best"], None
    if files["last"].is_file():
        return files["last"], f"{ckpt_dir} has no {runfiles.BEST}; using {runfiles.LAST}"
    raise ToolkitError(
        f"{run_dir} has no checkpoint ({ckpt_dir}/{runfiles.BEST} or {runfiles.LAST}); "
        "train it first (momentumrnn train ... --out RUN_DIR)"
    )


def _destination(onnx: Path, overwrite: bool) -> Path:
    onnx = Path(onnx)
    if onnx.is_dir():
        raise ToolkitError(f"--onnx {onnx} is a directory; give the path of the file to write")
    if not onnx.parent.is_dir():
        raise ToolkitError(f"--onnx {onnx}: the directory {onnx.parent} does not exist; create it first")
    if onnx.exists() and not overwrite:
        raise ToolkitError(f"{onnx} exists; add --overwrite to replace it")
    return onnx


def _need(module: str) -> ModuleType:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ToolkitError(
            f"momentumrnn export --onnx needs the package {module} (torch's ONNX exporter); "
            "install it: pip install 'momentumrnn[onnx]'"
        ) from None


def _spec(values: Iterable[Any]) -> list:
    import onnx

    out = []
    for v in values:
        t = v.type.tensor_type
        dims = [d.dim_param or d.dim_value for d in t.shape.dim]
        out.append((v.name, onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name, dims))
    return out


def load_model(
    run_dir: Path,
    checkpoint: str | None = None,
) -> tuple[Task, nn.Module, Path, int | None, str | None]:
    """``(task, model in eval mode, checkpoint path, step, note)`` of a run directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ToolkitError(f"run directory {run_dir} not found")
    cfg = load_run_config(run_dir)
    path, note = _checkpoint(run_dir, checkpoint)
    ckpt = load_checkpoint_file(path)
    task = build_task(cfg["task"], seed=cfg["train"].get("seed"))
    model = task.build_model(cfg["model"])
    prefix = "model."
    state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise ToolkitError(
            f"checkpoint {path} does not fit the model of {run_dir / 'config.yaml'} ({first}); "
            "it was made by another model or library version"
        ) from None
    model.eval()
    step = ckpt.get("global_step")
    return task, model, path, int(step) if isinstance(step, int) else None, note


def export_run(
    run_dir: Path,
    onnx: Path,
    checkpoint: str | None = None,
    overwrite: bool = False,
    say: Callable[[str], None] = print,
) -> ExportResult:
    """Export the model of ``run_dir`` to ``onnx`` (see the module docstring)."""
    dest = _destination(onnx, overwrite)
    _need("onnx")
    _need("onnxscript")
    task, model, path, step, note = load_model(run_dir, checkpoint)
    if note:
        say(f"note: {note}")
    wrapped = _Prediction(model).eval()
    gen = torch.Generator().manual_seed(0)
    x = task.example_input(*EXAMPLE_SHAPE, generator=gen)
    output = "logits" if task.kind in ("classification", "language") else "output"
    batch, time = torch.export.Dim("batch", min=1), torch.export.Dim("time", min=1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                wrapped,
                (x,),
                None,
                input_names=["x"],
                output_names=[output],
                dynamic_shapes=({0: batch, 1: time},),
                verbose=False,
            )
    except Exception as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        why = next((ln for ln in lines if ln.startswith("<class")), lines[0] if lines else type(e).__name__)
        raise ToolkitError(f"the model of {run_dir} cannot be exported to ONNX: {why[:300]}") from None
    assert program is not None  # (no file given: the program is returned)
    proto = program.model_proto
    if proto.ByteSize() >= 2**31 - 1:
        raise ToolkitError(f"the model of {run_dir} is larger than 2 GB, ONNX's limit for one file")
    runfiles.atomic_write_bytes(dest, proto.SerializeToString())
    result = ExportResult(dest, path, step, _spec(proto.graph.input), _spec(proto.graph.output), None)
    result.check = _check(dest, wrapped, task, gen)
    return result


def _check(path: Path, model: nn.Module, task: Task, gen: torch.Generator) -> list | None:
    """max |onnxruntime - torch| at the example's shape and another one (None without onnxruntime)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = []
    for shape in (EXAMPLE_SHAPE, CHECK_SHAPE):
        x = task.example_input(*shape, generator=gen)
        with torch.no_grad():
            want = model(x).float().numpy()
        got = session.run(None, {"x": x.numpy()})[0]
        diff = float(abs(got - want).max()) if want.size else 0.0
        scale = float(abs(want).max()) if want.size else 0.0
        out.append((shape, diff if math.isfinite(diff) else math.inf, scale))
    return out
