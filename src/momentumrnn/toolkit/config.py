"""Recipes: built-in defaults < YAML recipe < command-line overrides, validated into one config.

A recipe is a YAML mapping with these sections (every key optional)::

    task:    {name: smnist, ...task options}          # see ``momentumrnn list tasks``
    model:   {name: MomentumLSTM, hidden_size: 128, ...layer keyword arguments}
    presets: {MomentumLSTM: {mu: 0.6, epsilon: 0.6}, ...}   # per-model hyper-parameters
    optim:   {name: rmsprop, lr: 1.0e-3, lr_orth: null, alpha: 0.9, ...}
    train:   {epochs: 10, batch_size: 128, grad_clip: 1.0, seed: 0, precision: fp32, devices: 1, ...}
    report:  {target: null}
    models:  [LSTM, {name: MomentumLSTM, mu: 0.6}]      # `compare` only
    seeds:   [0, 1, 2]                                  # `compare` only

A model is named either by its paper name (``model.name``: ``MomentumLSTM``, ``AdamLSTM``,
``SRLSTM``, ``LSTM``, ...) or by ``model.host`` x ``model.scheme`` (``lstm`` x ``heavy_ball``).
Every other ``model`` key goes to the layer's constructor (``num_layers``, ``dropout``, ``mu``,
``epsilon``, ``beta``, ``restart``, ...); the layer itself validates them.

Precedence for a model's keys: ``presets[<model>]`` < ``model`` section < the ``models`` entry
(compare) < ``--set model.KEY=...`` / ``--model`` / ``--hidden-size`` on the command line.
(In ``compare`` the ``model`` section holds the settings shared by all models, e.g. hidden_size.)
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from . import tasks
from .errors import ToolkitError
from .options import (
    DEFAULTS,
    MODEL_IDENTITY,
    MODEL_SCHEMA,
    MODEL_TOOLKIT_KEYS,
    OPTIM_SCHEMA,
    REPORT_SCHEMA,
    RESUMABLE_CHANGES,
    SECTIONS,
    TRAIN_SCHEMA,
    Opt,
    _type_name,
    coerce,
    model_key,
    model_label,
    model_spec,
    suggest,
    unknown_key,
)

RECIPE_DIR = Path(__file__).resolve().parent / "recipes"

# ---------------------------------------------------------------------------------------------
# loading recipes and overrides


def _yaml() -> ModuleType:
    return yaml


def parse_value(text: str) -> Any:
    """A command-line value, read as YAML (``1e-3``, ``true``, ``null``, ``[0.9, 0.99]``, names)."""
    try:
        return _yaml().safe_load(text) if text.strip() else text
    except Exception:
        return text


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def _is_task_name(ref: str) -> bool:
    return ref.lower() in tasks.TASKS


def load_recipe(ref: str) -> dict:
    """A recipe from a YAML file path, a bundled recipe name (``demo``, ``mnist-table1``, ...) or a
    task name (``smnist``: the built-in defaults on that task)."""
    path = Path(ref)
    bundled_name = os.sep not in ref and not ref.endswith((".yaml", ".yml"))
    if path.is_dir() and bundled_name and (RECIPE_DIR / f"{ref}.yaml").exists():
        path = RECIPE_DIR / f"{ref}.yaml"  # a folder named like a bundled recipe (e.g. its output) is no recipe
    if not path.exists():
        bundled = RECIPE_DIR / f"{ref}.yaml"
        if bundled.exists() and os.sep not in ref and not ref.endswith((".yaml", ".yml")):
            path = bundled
        elif _is_task_name(ref):  # `momentumrnn train smnist`: the defaults on that task
            return {"task": {"name": ref}}
        else:
            raise ToolkitError(
                f"recipe {ref!r} not found: give a YAML file, a task name or one of the bundled recipes "
                f"({', '.join(recipe_names())})"
            )
    if path.is_dir():
        raise ToolkitError(f"recipe {str(path)!r} is a directory; give a YAML file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ToolkitError(f"cannot read recipe {str(path)!r}: {e}") from None
    try:
        data = _yaml().safe_load(text)
    except Exception as e:  # yaml.YAMLError
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ToolkitError(f"recipe {str(path)!r} is not valid YAML ({first}); fix the file") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ToolkitError(f"recipe {str(path)!r} must be a mapping of sections ({', '.join(SECTIONS)})")
    return data


def _check_recipe_shape(recipe: dict, origin: str) -> None:
    for k, v in recipe.items():
        if k not in SECTIONS:
            raise ToolkitError(
                f"unknown recipe key {k!r}{suggest(str(k), SECTIONS)} in {origin}; "
                f"valid sections: {', '.join(SECTIONS)}"
            )
        if k in ("task", "model", "presets", "optim", "train", "report") and not isinstance(v, dict):
            raise ToolkitError(f"{k}: expected a mapping of keys, got {v!r} ({_type_name(v)}) in {origin}")
        if k == "presets":
            for name, p in v.items():
                if not isinstance(p, dict):
                    raise ToolkitError(f"presets.{name}: expected a mapping of layer keys, got {p!r}")
        if k == "models" and not isinstance(v, list):
            raise ToolkitError(f"models: expected a list of model names or mappings, got {v!r}")
        if k == "seeds" and not isinstance(v, list):
            raise ToolkitError(f"seeds: expected a list of integers, got {v!r}")


def _merge(base: dict, upd: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in upd.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def merge_model(lower: dict, higher: dict) -> dict:
    """``higher`` over ``lower``; naming a model at a higher level replaces the lower identity."""
    lower = dict(lower)
    if higher.get("name") is not None:
        for k in MODEL_IDENTITY:
            lower.pop(k, None)
    elif higher.get("host") is not None or higher.get("scheme") is not None:
        lower.pop("name", None)
    lower.update(higher)
    return lower


def split_overrides(overrides: list[tuple[str, Any]]) -> tuple[list[tuple[str, Any]], dict]:
    """Separate ``model.*`` overrides (applied last, per model) from the others."""
    other: list[tuple[str, Any]] = []
    model: dict = {}
    for key, value in overrides:
        parts = key.split(".")
        if parts[0] == "model" and len(parts) != 2:
            raise ToolkitError(f"bad override {key!r}: model keys are flat, e.g. model.hidden_size=64")
        if parts[0] == "model":
            if parts[1] == "name" and isinstance(value, str):
                model = merge_model(model, model_spec(value))
            else:
                model = merge_model(model, {parts[1]: value})
        else:
            other.append((key, value))
    return other, model


def apply_overrides(recipe: dict, overrides: list[tuple[str, Any]]) -> dict:
    out = copy.deepcopy(recipe)
    for key, value in overrides:
        parts = key.split(".")
        if not key or any(not p for p in parts):
            raise ToolkitError(f"bad override {key!r}: write SECTION.KEY=VALUE, e.g. train.epochs=5")
        if parts[0] not in SECTIONS:
            raise unknown_key(parts[0], SECTIONS)
        if parts[0] in ("models", "seeds"):
            if len(parts) != 1:
                raise ToolkitError(f"bad override {key!r}: set the whole list, e.g. seeds=[0,1,2]")
            out[parts[0]] = value
            continue
        if len(parts) == 1:
            raise ToolkitError(f"bad override {key!r}: name a key inside {parts[0]}, e.g. {parts[0]}.name=...")
        node = out.setdefault(parts[0], {})
        for p in parts[1:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = value
    return out


# ---------------------------------------------------------------------------------------------
# validation


def _validate_section(name: str, values: dict, schema: dict[str, Opt]) -> dict:
    out = {}
    for k, v in values.items():
        if k not in schema:
            raise unknown_key(f"{name}.{k}", schema)
        out[k] = coerce(f"{name}.{k}", schema[k], v)
    for k, o in schema.items():
        out.setdefault(k, copy.deepcopy(o.default))
    return out


def _check_primitive(key: str, v: Any) -> None:
    if v is None or isinstance(v, (bool, int, float, str)):
        return
    if isinstance(v, (list, tuple)):
        for i, x in enumerate(v):
            _check_primitive(f"{key}[{i}]", x)
        return
    raise ToolkitError(f"{key}: expected a number, name, boolean or list, got {v!r}")


def validate_model(model: dict, where: str = "model") -> dict:
    """Type-check the toolkit's model keys; the layer keyword arguments are checked by the layer."""
    out = {}
    for k, v in model.items():
        if not isinstance(k, str) or not k.isidentifier():
            raise ToolkitError(f"{where}: bad key {k!r}")
        if k in MODEL_SCHEMA:
            out[k] = coerce(f"{where}.{k}", MODEL_SCHEMA[k], v)
        elif k in ("input_size", "batch_first"):
            raise ToolkitError(f"{where}.{k} is set by the task; remove it from the recipe")
        else:
            _check_primitive(f"{where}.{k}", v)
            out[k] = v
    out.setdefault("hidden_size", MODEL_SCHEMA["hidden_size"].default)
    if out.get("name") and (out.get("host") or out.get("scheme")):
        raise ToolkitError(
            f"{where}: give either name ({out['name']}) or host and scheme "
            f"({out.get('host')}/{out.get('scheme')}), not both"
        )
    if not out.get("name") and (not out.get("host") or not out.get("scheme")):
        raise ToolkitError(f"{where}: name a model: model.name (e.g. MomentumLSTM) or model.host and model.scheme")
    return out


def _validate_task(task: dict) -> dict:
    name = task.get("name", "smnist")
    if not isinstance(name, str):
        raise ToolkitError(f"task.name: expected a task name, got {name!r}")
    cls = tasks.get_task_class(name)
    schema = cls.options
    out = {"name": cls.name}
    for k, v in task.items():
        if k == "name":
            continue
        if k not in schema:
            raise unknown_key(f"task.{k}", ["name", *schema])
        out[k] = coerce(f"task.{k}", schema[k], v)
    for k, o in schema.items():
        out.setdefault(k, copy.deepcopy(o.default))
    return out


def resolve_models(cfg: dict, entries: list, cli_model: dict, *, single: bool = False) -> list[dict]:
    """Full model configs of a run list: preset < model section < entry < command line."""
    presets = cfg.get("presets") or {}
    shared = cfg.get("model") or {}
    out = []
    for i, given in enumerate(entries):
        if isinstance(given, str):
            entry = model_spec(given)
        elif isinstance(given, dict):
            entry = given
        else:
            raise ToolkitError(f"models[{i}]: expected a model name or a mapping, got {given!r}")
        key_entry = merge_model(merge_model(shared, entry), cli_model)
        m = dict(presets.get(model_key(key_entry), {}))
        m = merge_model(m, shared)
        m = merge_model(m, entry)
        m = merge_model(m, cli_model)
        out.append(validate_model(m, where="model" if single else f"models[{i}]"))
    return out


def resolve(
    recipe: dict | None, overrides: list[tuple[str, Any]], *, command: str = "train", origin: str = "the recipe"
) -> dict:
    """Resolve a run config (``command='train'``) or a comparison (``'compare'``).

    Returns ``{'task', 'model', 'optim', 'train', 'report'}`` for train, plus ``models`` (a list
    of full model configs) and ``seeds`` for compare. Raises ToolkitError on any bad key or value.
    """
    recipe = recipe or {}
    _check_recipe_shape(recipe, origin)
    other, cli_model = split_overrides(overrides)
    merged = apply_overrides(_merge(DEFAULTS, recipe), other)
    # a recipe that names its own models replaces the default model identity
    if "model" in recipe:
        merged["model"] = merge_model(DEFAULTS["model"], recipe["model"])
    _check_recipe_shape(dict(merged.items()), origin)
    cfg: dict[str, Any] = {
        "task": _validate_task(merged.get("task") or {}),
        "optim": _validate_section("optim", merged.get("optim") or {}, OPTIM_SCHEMA),
        "train": _validate_section("train", merged.get("train") or {}, TRAIN_SCHEMA),
        "report": _validate_section("report", merged.get("report") or {}, REPORT_SCHEMA),
    }
    presets = merged.get("presets") or {}
    base = {"model": merged.get("model") or {}, "presets": presets}
    if command == "compare":
        entries = merged.get("models") or []
        if not entries:
            raise ToolkitError("models: give at least one model to compare (--models A B ...)")
        shared = {k: v for k, v in base["model"].items() if k not in MODEL_IDENTITY}
        models = resolve_models({"model": shared, "presets": presets}, entries, cli_model)
        labels = [model_label(m) for m in models]
        for i, m in enumerate(models):
            if labels.count(labels[i]) > 1 and not m.get("label"):
                extra = ",".join(f"{k}={v}" for k, v in sorted(m.items()) if k not in MODEL_TOOLKIT_KEYS)
                m["label"] = f"{labels[i]}({extra})" if extra else f"{labels[i]}#{i}"
        labels = [model_label(m) for m in models]
        dup = {x for x in labels if labels.count(x) > 1}
        if dup:
            raise ToolkitError(f"models: {sorted(dup)[0]!r} appears twice; give each entry a distinct label")
        seeds = merged.get("seeds")
        if not isinstance(seeds, list) or not seeds:
            raise ToolkitError("seeds: expected a non-empty list of integers, e.g. [0, 1, 2]")
        seeds = [coerce(f"seeds[{i}]", TRAIN_SCHEMA["seed"], s) for i, s in enumerate(seeds)]
        if len(set(seeds)) != len(seeds):
            raise ToolkitError(f"seeds: {seeds} has repeated values")
        cfg["models"] = models
        cfg["seeds"] = seeds
    else:
        cfg["model"] = resolve_models(base, [{}], cli_model, single=True)[0]
    return cfg


def run_config(cfg: dict, model: dict, seed: int) -> dict:
    """The config of one run of a comparison."""
    out = {k: copy.deepcopy(cfg[k]) for k in ("task", "optim", "train", "report")}
    out["model"] = copy.deepcopy(model)
    out["train"]["seed"] = seed
    return out


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


_NO_DEFAULT = object()


def _schema_default(key: str, cfg: dict) -> Any:
    """The default of a ``task.`` / ``train.`` / ``optim.`` / ``report.`` key (``_NO_DEFAULT`` if none)."""
    section, _, leaf = key.partition(".")
    schema = {"train": TRAIN_SCHEMA, "optim": OPTIM_SCHEMA, "report": REPORT_SCHEMA}.get(section)
    if section == "task":
        try:
            schema = tasks.get_task_class(str((cfg.get("task") or {}).get("name"))).options
        except ToolkitError:
            return _NO_DEFAULT
    opt = (schema or {}).get(leaf)
    return _NO_DEFAULT if opt is None else opt.default


def config_changes(saved: dict, new: dict) -> list[str]:
    """Keys whose values differ between two run configs (excluding those a resume may change).
    A key missing from the saved config (a run made before the option existed) counts as unchanged
    when the new value is the option's default."""
    a, b = flatten(saved), flatten(new)
    return sorted(
        k
        for k in set(a) | set(b)
        if a.get(k) != b.get(k)
        and k not in RESUMABLE_CHANGES
        and not k.startswith("report.")  # reporting never changes training
        and not (k not in a and b[k] == _schema_default(k, new))
    )


def dump_yaml(data: Any) -> str:
    return _yaml().safe_dump(data, sort_keys=False, default_flow_style=None, width=100)


def load_run_config(run_dir: Path) -> dict:
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise ToolkitError(f"{run_dir} is not a run directory (no config.yaml); check the path")
    try:
        data = _yaml().safe_load(path.read_text(encoding="utf-8"))
    except Exception:
        raise ToolkitError(f"{path} is corrupt (not valid YAML); restore it or start a new run") from None
    if not isinstance(data, dict) or not all(k in data for k in ("task", "model", "optim", "train")):
        raise ToolkitError(f"{path} is not a momentumrnn run config; restore it or start a new run")
    return data
