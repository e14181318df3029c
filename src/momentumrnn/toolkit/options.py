"""The option schema of the toolkit: what every recipe key may hold, and its default.

:class:`Opt` describes one option (type, range, choices, default, help); :func:`coerce` checks and
converts a value against it. ``OPTIM_SCHEMA``, ``TRAIN_SCHEMA``, ``REPORT_SCHEMA`` and
``MODEL_SCHEMA`` are the fixed sections; each task declares its own ``options`` (tasks/). Reading
recipes and resolving them into a run config is :mod:`.config`'s job; this module has no
dependency beyond the error type, so tasks and models can use it without importing the resolver.
"""

from __future__ import annotations

import copy
import difflib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .errors import ToolkitError

SECTIONS = ("task", "model", "presets", "optim", "train", "report", "models", "seeds")
OPTIMIZERS = ("rmsprop", "rmsprop_tf", "adam", "sgd", "sgd_asgd")
PRECISIONS = ("fp32", "bf16")
MODEL_IDENTITY = ("name", "host", "scheme")
MODEL_TOOLKIT_KEYS = ("name", "host", "scheme", "hidden_size", "label", "init_forget_bias")
# keys a resumed run may change (everything else must match the saved config)
RESUMABLE_CHANGES = {
    "train.epochs",
    "train.max_steps",
    "train.devices",
    "train.num_nodes",
    "train.accelerator",
    "train.progress",
    "train.checkpoint_every_steps",
    "train.checkpoint_every_minutes",
    "train.threads",
    "train.requeue",
}


@dataclass(frozen=True)
class Opt:
    """One option: kind in int, float, str, bool, choice, int_list, float_list, float_map."""

    kind: str
    default: Any
    help: str = ""
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple | None = None
    nullable: bool = False
    length: int | None = None


def _type_name(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _as_float(key: str, v: Any) -> float:
    if isinstance(v, bool):
        raise ToolkitError(f"{key}: expected a number, got {v!r}")
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            pass
    raise ToolkitError(f"{key}: expected a number, got {v!r} ({_type_name(v)})")


def _as_int(key: str, v: Any) -> int:
    if isinstance(v, bool):
        raise ToolkitError(f"{key}: expected an integer, got {v!r}")
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str):
        try:
            return int(v)
        except ValueError:
            pass
    raise ToolkitError(f"{key}: expected an integer, got {v!r} ({_type_name(v)})")


def _range_text(opt: Opt) -> str:
    lo = "" if opt.lo is None else (f"> {opt.lo:g}" if opt.lo_open else f">= {opt.lo:g}")
    hi = "" if opt.hi is None else (f"< {opt.hi:g}" if opt.hi_open else f"<= {opt.hi:g}")
    return " and ".join(t for t in (lo, hi) if t)


def _check_range(key: str, opt: Opt, x: float) -> None:
    if isinstance(x, float) and not math.isfinite(x):
        raise ToolkitError(f"{key}: must be a finite number, got {x!r}")
    bad = (opt.lo is not None and (x <= opt.lo if opt.lo_open else x < opt.lo)) or (
        opt.hi is not None and (x >= opt.hi if opt.hi_open else x > opt.hi)
    )
    if bad:
        raise ToolkitError(f"{key}: {x!r} is out of range (must be {_range_text(opt)})")


def coerce(key: str, opt: Opt, v: Any) -> Any:
    """Check / convert one value; raise ToolkitError naming ``key`` if it does not fit."""
    if v is None or (isinstance(v, str) and v.strip().lower() in ("null", "none", "~") and opt.kind != "str"):
        if opt.nullable:
            return None
        raise ToolkitError(f"{key}: a value is required (got null)")
    if opt.kind == "int":
        x = _as_int(key, v)
        _check_range(key, opt, x)
        return x
    if opt.kind == "float":
        f = _as_float(key, v)
        _check_range(key, opt, f)
        return f
    if opt.kind == "bool":
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.strip().lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return v.strip().lower() in ("true", "yes", "on", "1")
        raise ToolkitError(f"{key}: expected true or false, got {v!r}")
    if opt.kind in ("str", "choice"):
        if not isinstance(v, str) or not v:
            raise ToolkitError(f"{key}: expected a name, got {v!r} ({_type_name(v)})")
        if opt.kind == "choice":
            assert opt.choices is not None  # (a choice option lists them)
            low = v.lower()
            if low not in opt.choices:
                raise ToolkitError(f"{key}: unknown value {v!r}; choose one of {', '.join(opt.choices)}")
            return low
        return v
    if opt.kind == "float_map":
        if not isinstance(v, dict):
            raise ToolkitError(f"{key}: expected a mapping of model label -> number, got {v!r} ({_type_name(v)})")
        out_map = {}
        for name, x in v.items():
            if not isinstance(name, str) or not name:
                raise ToolkitError(f"{key}: keys must be model labels, got {name!r}")
            out_map[name] = _as_float(f"{key}.{name}", x)
            _check_range(f"{key}.{name}", opt, out_map[name])
        return out_map
    if opt.kind in ("int_list", "float_list"):
        if not isinstance(v, (list, tuple)):
            raise ToolkitError(f"{key}: expected a list, got {v!r} ({_type_name(v)})")
        if opt.length is not None and len(v) != opt.length:
            raise ToolkitError(f"{key}: expected a list of {opt.length} values, got {len(v)}")
        conv = _as_int if opt.kind == "int_list" else _as_float
        out = [conv(f"{key}[{i}]", x) for i, x in enumerate(v)]
        for i, item in enumerate(out):
            _check_range(f"{key}[{i}]", opt, item)
        return out
    raise AssertionError(opt.kind)


# ---------------------------------------------------------------------------------------------
# schemas of the fixed sections (task options come from the task registry)

OPTIM_SCHEMA: dict[str, Opt] = {
    "name": Opt(
        "choice",
        "rmsprop",
        "optimizer: rmsprop, rmsprop_tf (TensorFlow 1's RMSProp: running "
        "average from ones, eps inside the root; the ENRNN authors'), adam, sgd, or sgd_asgd (SGD, then "
        "averaged SGD once the test loss stops improving, as for AWD-LSTM)",
        choices=OPTIMIZERS,
    ),
    "lr": Opt("float", 1e-3, "learning rate", lo=0, lo_open=True),
    "lr_orth": Opt(
        "float", None, "learning rate of orthogonal parameters (null: same as lr)", lo=0, lo_open=True, nullable=True
    ),
    "orth_name": Opt(
        "choice",
        None,
        "optimizer of the orthogonal parameters when it differs from "
        "optim.name (rmsprop, rmsprop_tf, adam or sgd; null: the same); its other settings are "
        "optim's",
        choices=("rmsprop", "rmsprop_tf", "adam", "sgd"),
        nullable=True,
    ),
    "weight_decay": Opt("float", 0.0, "L2 weight decay", lo=0),
    "momentum": Opt("float", 0.0, "momentum (sgd, rmsprop, rmsprop_tf)", lo=0, hi=1, hi_open=True),
    "alpha": Opt("float", 0.9, "smoothing constant (rmsprop, rmsprop_tf)", lo=0, hi=1, lo_open=True, hi_open=True),
    "betas": Opt("float_list", [0.9, 0.999], "(beta1, beta2) of adam", lo=0, hi=1, hi_open=True, length=2),
    "eps": Opt(
        "float",
        1e-8,
        "denominator epsilon (rmsprop, adam; inside the root for rmsprop_tf, whose TensorFlow default is 1e-10)",
        lo=0,
        lo_open=True,
    ),
    "nesterov": Opt("bool", False, "Nesterov momentum (sgd)"),
    "asgd_nonmono": Opt(
        "int",
        5,
        "sgd_asgd: switch to ASGD when the test loss is worse than the best of all evaluations before the last N",
        lo=1,
    ),
}

# optim settings that only the orthogonal parameters use: in a comparison they go to the models that
# have such parameters (a shared recipe's other models hold null; see compare.scope_settings)
ORTH_OPTIM_KEYS = ("lr_orth", "orth_name")

TRAIN_SCHEMA: dict[str, Opt] = {
    "epochs": Opt("int", 10, "number of epochs", lo=1),
    "batch_size": Opt("int", 128, "global batch size (split over devices)", lo=1),
    "eval_batch_size": Opt("int", None, "batch size of evaluation (null: max(batch_size, 256))", lo=1, nullable=True),
    "grad_clip": Opt("float", 1.0, "clip the gradient norm to this (null or 0: no clipping)", lo=0, nullable=True),
    "seed": Opt("int", 0, "random seed (initialisation, data order, dropout)", lo=0, hi=2**31 - 1),
    "precision": Opt("choice", "fp32", "fp32 or bf16 (bf16 autocast)", choices=PRECISIONS),
    "accelerator": Opt("choice", "auto", "cpu, gpu or auto", choices=("auto", "cpu", "gpu", "cuda", "mps")),
    "devices": Opt("int", 1, "processes (CPU) or GPUs per node; > 1 trains with DDP", lo=1),
    "num_nodes": Opt("int", 1, "machines (DDP on a cluster)", lo=1),
    "max_steps": Opt("int", None, "stop after this many optimizer steps (null: epochs decide)", lo=1, nullable=True),
    "limit_train_batches": Opt("int", None, "batches per training epoch (null: all)", lo=1, nullable=True),
    "limit_eval_batches": Opt("int", None, "batches per evaluation (null: all)", lo=1, nullable=True),
    "evals_per_epoch": Opt("int", 1, "evaluations on the test set per epoch", lo=1),
    "checkpoint_every_steps": Opt(
        "int",
        None,
        "also save last.ckpt every N optimizer steps (null: at each evaluation and epoch end only)",
        lo=1,
        nullable=True,
    ),
    "checkpoint_every_minutes": Opt(
        "float",
        10.0,
        "also save last.ckpt every X minutes of training, so "
        "that a kill loses at most that (null: at each evaluation and epoch end "
        "only)",
        lo=0,
        lo_open=True,
        nullable=True,
    ),
    "requeue": Opt(
        "bool",
        True,
        "under SLURM: on SIGUSR1 (sbatch --signal=USR1@SECONDS) save, then requeue "
        "the job (scontrol requeue); the requeued job resumes the run",
    ),
    "threads": Opt(
        "int",
        None,
        "CPU threads per process (null: torch's default; 1 is fastest for small models on a busy machine)",
        lo=1,
        nullable=True,
    ),
    "log_every_steps": Opt("int", 10, "TensorBoard training-loss interval in steps", lo=1),
    "grad_norm_steps": Opt(
        "int_list",
        None,
        "record ||dL/dh_t|| for every time step t at these optimizer "
        "steps (grad_norms.npz; `momentumrnn grads` sets it)",
        lo=0,
        nullable=True,
    ),
    "grad_norm_batch": Opt(
        "int", 32, "examples in the fixed probe batch of grad_norm_steps (the first training examples)", lo=1
    ),
    "progress": Opt("bool", True, "show a progress bar"),
    "deterministic": Opt(
        "bool",
        True,
        "use deterministic algorithms where they exist (same seed, same metrics on CPU; an op without one only warns)",
    ),
}

REPORT_SCHEMA: dict[str, Opt] = {
    "target": Opt("float", None, "convergence target of the task's metric (null: task default)", nullable=True),
    "published": Opt(
        "float_map",
        None,
        "published values of the task's metric per model label, in the "
        "toolkit's units (accuracy as a fraction), shown beside ours in reports",
        nullable=True,
    ),
    "published_source": Opt("str", None, "where the published values come from (paper, table, setting)", nullable=True),
}

MODEL_SCHEMA: dict[str, Opt] = {
    "name": Opt("str", None, "paper name of the layer (MomentumLSTM, AdamLSTM, SRLSTM, LSTM, ...)", nullable=True),
    "host": Opt("str", None, "host cell (rnn, lstm, gru, or an orthogonal host) when no name is given", nullable=True),
    "scheme": Opt("str", None, "momentum scheme (none, heavy_ball, adam, rmsprop, restart, nesterov)", nullable=True),
    "hidden_size": Opt("int", 128, "hidden units", lo=1),
    "label": Opt("str", None, "name of the model in reports (default: its name)", nullable=True),
    "init_forget_bias": Opt(
        "float",
        None,
        "LSTM hosts: add this to the forget-gate input bias after the "
        "layer's initialisation (long sequences need memory from the start)",
        nullable=True,
    ),
}

# the paper's sequential-MNIST settings (docs/equations.md, section 7) are the defaults
DEFAULTS: dict[str, Any] = {
    "task": {"name": "smnist"},
    "model": {"name": "MomentumLSTM", "hidden_size": 128},
    "presets": {
        "MomentumLSTM": {"mu": 0.6, "epsilon": 0.6},
        "AdamLSTM": {"mu": 0.6, "epsilon": 0.6, "beta": 0.1},
        "RMSPropLSTM": {"epsilon": 0.6, "beta": 0.9},
        "SRLSTM": {"epsilon": 1.0, "restart": 2},
    },
    "optim": {k: copy.deepcopy(o.default) for k, o in OPTIM_SCHEMA.items()},
    "train": {k: o.default for k, o in TRAIN_SCHEMA.items()},
    "report": {k: o.default for k, o in REPORT_SCHEMA.items()},
    "models": ["LSTM", "MomentumLSTM"],
    "seeds": [0],
}


def suggest(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_key(key: str, known: Iterable[str]) -> ToolkitError:
    section, _, leaf = key.rpartition(".")
    known = sorted(known)
    return ToolkitError(
        f"unknown recipe key {key!r}{suggest(leaf, known)}; valid keys of {section or 'a recipe'}: {', '.join(known)}"
    )


def model_spec(text: str) -> dict:
    """``MomentumLSTM`` -> {name}; ``lstm/heavy_ball`` (or ``lstm:heavy_ball``) -> {host, scheme}."""
    if not isinstance(text, str) or not text:
        raise ToolkitError(f"model: expected a model name, got {text!r}")
    for sep in ("/", ":"):
        if sep in text:
            host, _, scheme = text.partition(sep)
            if not host or not scheme:
                raise ToolkitError(f"model {text!r}: write HOST/SCHEME, e.g. lstm/heavy_ball")
            return {"host": host, "scheme": scheme}
    return {"name": text}


def model_key(model: dict) -> str:
    if model.get("name"):
        return str(model["name"])
    return f"{model.get('host')}/{model.get('scheme')}"


def model_label(model: dict) -> str:
    return str(model.get("label") or model_key(model))
