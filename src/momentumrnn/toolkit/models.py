"""Models of the toolkit: a layer of the core library (any host x scheme x parametrization, by
name) followed by the task's head, plus the parameter split for ``lr_orth``.

Plug-in points for layers the core adds later (orthogonal hosts):

* ``momentumrnn.orthogonal.split_parameters(module) -> (orthogonal, other)`` if that module
  exists, else any sub-module's ``orthogonal_parameters()`` method, decides which parameters get
  ``optim.lr_orth``;
* a sub-module's ``on_optimizer_step()`` method is called after every optimizer step (e.g. the
  DTRIV base change).
"""

from __future__ import annotations

import re
import warnings
from typing import Optional

import torch
from torch import nn

from .config import MODEL_TOOLKIT_KEYS, model_key, suggest
from .errors import ToolkitError
from .tasks import Task


def _core():
    try:
        import momentumrnn
    except ImportError as e:  # pragma: no cover - the core ships with the toolkit
        raise ToolkitError(f"the momentumrnn core library cannot be imported ({e}); reinstall momentumrnn") from None
    try:  # orthogonal hosts (expRNN, DTRIV, scoRNN, scuRNN)
        import momentumrnn.orthogonal as orthogonal
    except ImportError:
        orthogonal = None
    return momentumrnn, orthogonal


def known_layer_names() -> dict[str, tuple]:
    """Paper name -> (host, scheme, summary) of every layer the library provides."""
    core, orth = _core()
    names = dict(getattr(core, "LAYER_NAMES", {}))
    if orth is not None:
        for k, v in getattr(orth, "ORTHOGONAL_LAYER_NAMES", {}).items():
            names.setdefault(k, v)
    return names


def known_hosts() -> list[str]:
    core, orth = _core()
    hosts = list(getattr(core, "GATES", {"rnn": 1, "lstm": 4, "gru": 3}))
    if orth is not None:
        hosts += [h for h in getattr(orth, "HOSTS", {}) if h not in hosts]
    return hosts


def _layer_class(name: str):
    core, orth = _core()
    try:
        return core.layer_class(name)
    except (ValueError, KeyError):
        if orth is not None and name in getattr(orth, "ORTHOGONAL_LAYER_NAMES", {}):
            return orth.layer_class(name)
        raise


def _build_layer(host: str, scheme: str, input_size: int, hidden: int, **kwargs):
    core, orth = _core()
    if orth is not None and isinstance(host, str) and host.lower() in getattr(orth, "HOSTS", {}):
        return orth.build_orthogonal_layer(host.lower(), scheme, input_size, hidden, **kwargs)
    if not isinstance(host, str) or host.lower() not in known_hosts():
        raise ToolkitError(f"unknown model host {host!r}{suggest(str(host), known_hosts())}; choose one of "
                           f"{', '.join(known_hosts())}")
    return core.build_layer(host, scheme, input_size, hidden, **kwargs)


def layer_kwargs(model_cfg: dict) -> dict:
    return {k: v for k, v in model_cfg.items() if k not in MODEL_TOOLKIT_KEYS}


def build_recurrent(model_cfg: dict, input_size: int) -> nn.Module:
    """The layer named by ``model_cfg``, batch-first; bad names / arguments become ToolkitError."""
    kwargs = layer_kwargs(model_cfg)
    kwargs["batch_first"] = True
    hidden = model_cfg["hidden_size"]
    what = model_key(model_cfg)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            if model_cfg.get("name"):
                name = model_cfg["name"]
                try:
                    cls = _layer_class(name)
                except (ValueError, KeyError):
                    names = list(known_layer_names())
                    raise ToolkitError(
                        f"unknown model {name!r}{suggest(name, names)}; choose one of {', '.join(names)} "
                        "(or model.host + model.scheme)"
                    ) from None
                return cls(input_size, hidden, **kwargs)
            return _build_layer(model_cfg["host"], model_cfg["scheme"], input_size, hidden, **kwargs)
    except ToolkitError:
        raise
    except TypeError as e:
        msg = str(e)
        bad = msg.split("argument")[-1].strip(" '\"") if "unexpected keyword argument" in msg else None
        if bad:
            raise ToolkitError(f"model.{bad} is not a parameter of {what}; remove it from the recipe") from None
        raise ToolkitError(f"model {what}: bad arguments ({msg})") from None
    except ValueError as e:
        raise ToolkitError(f"model {what}: {e}") from None


class SequenceModel(nn.Module):
    """``recurrent`` layer (batch first) -> task head on the selected output."""

    def __init__(self, recurrent: nn.Module, head: nn.Module, task: Task):
        super().__init__()
        self.recurrent = recurrent
        self.head = head
        self._task_head_input = task.head_input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.recurrent(x)
        return self.head(self._task_head_input(out))


def output_features(layer: nn.Module, hidden: int) -> int:
    directions = 2 if getattr(layer, "bidirectional", False) else 1
    return int(getattr(layer, "output_size", hidden * directions))


def shift_forget_bias(layer: nn.Module, shift: float, what: str) -> None:
    """Add ``shift`` to the forget-gate slice (gate order i, f, g, o as torch.nn.LSTM) of every
    ``bias_hh_l*`` of an LSTM layer.

    ``b_hh`` enters the pre-activation directly in every scheme, so the forget gate starts
    ``shift`` higher for all of them; ``b_ih`` sits inside the momentum (SPEC 2), where a shift
    would be rescaled by ``s / (1 - mu)`` (heavy ball) or even negated (Nesterov: ``r - s u``)."""
    is_lstm = getattr(layer, "host", None) == "lstm" or isinstance(layer, nn.LSTM)
    if not is_lstm:
        raise ToolkitError(f"model.init_forget_bias applies to LSTM hosts only, not {what}; remove it")
    names = [n for n, _ in layer.named_parameters() if re.fullmatch(r"bias_hh_l\d+(_reverse)?", n)]
    if not names:
        raise ToolkitError(f"model.init_forget_bias needs biases, but {what} has bias=False")
    with torch.no_grad():
        for n in names:
            b = getattr(layer, n)
            h = b.numel() // 4
            b[h:2 * h] += shift


def build_model(model_cfg: dict, task: Task) -> nn.Module:
    if type(task).build_model is not Task.build_model:  # a task with its own model (e.g. ptb)
        return task.build_model(model_cfg)
    layer = build_recurrent(model_cfg, task.input_size)
    if model_cfg.get("init_forget_bias"):
        shift_forget_bias(layer, float(model_cfg["init_forget_bias"]), model_key(model_cfg))
    head = task.make_head(output_features(layer, model_cfg["hidden_size"]))
    return SequenceModel(layer, head, task)


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``(orthogonal, other)`` trainable parameters of ``model``."""
    orth: list[nn.Parameter] = []
    try:
        from momentumrnn.orthogonal import split_parameters as core_split  # type: ignore

        orth = list(core_split(model)[0])
    except ImportError:
        for m in model.modules():
            fn = getattr(m, "orthogonal_parameters", None)
            if callable(fn):
                orth.extend(fn())
    seen, orth_unique = set(), []
    for p in orth:
        if id(p) not in seen and p.requires_grad:
            seen.add(id(p))
            orth_unique.append(p)
    other = [p for p in model.parameters() if p.requires_grad and id(p) not in seen]
    return orth_unique, other


def optimizer_step_hooks(model: nn.Module) -> list:
    return [m.on_optimizer_step for m in model.modules() if callable(getattr(m, "on_optimizer_step", None))]


def make_optimizer(optim_cfg: dict, model: nn.Module, *, asgd: bool = False) -> torch.optim.Optimizer:
    orth, other = split_parameters(model)
    lr = optim_cfg["lr"]
    lr_orth = optim_cfg.get("lr_orth") or lr
    groups = [{"params": other, "lr": lr, "group": "default"}]
    orth_group = {"params": orth, "lr": lr_orth, "group": "orthogonal"}
    orth_name = optim_cfg.get("orth_name")
    if orth and orth_name and orth_name != optim_cfg["name"] and not asgd:
        # e.g. the authors' TIMIT DTRIV: Adam for the rest, RMSprop for the orthogonal parameters
        from .optimizers import MixedOptimizer

        return MixedOptimizer([_optimizer(optim_cfg["name"], groups, optim_cfg, lr, asgd=False),
                               _optimizer(orth_name, [orth_group], optim_cfg, lr_orth, asgd=False)])
    if orth:
        groups.append(orth_group)
    return _optimizer(optim_cfg["name"], groups, optim_cfg, lr, asgd=asgd)


def _optimizer(name: str, groups: list, optim_cfg: dict, lr: float, *, asgd: bool) -> torch.optim.Optimizer:
    wd = optim_cfg["weight_decay"]
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, alpha=optim_cfg["alpha"], eps=optim_cfg["eps"],
                                   momentum=optim_cfg["momentum"], weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=tuple(optim_cfg["betas"]), eps=optim_cfg["eps"],
                                weight_decay=wd)
    if name in ("sgd", "sgd_asgd"):
        if asgd:
            return torch.optim.ASGD(groups, lr=lr, t0=0, lambd=0.0, weight_decay=wd)
        return torch.optim.SGD(groups, lr=lr, momentum=optim_cfg["momentum"], weight_decay=wd,
                               nesterov=optim_cfg["nesterov"])
    raise ToolkitError(f"unknown optimizer {name!r}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def check_optim(optim_cfg: dict, model: nn.Module) -> Optional[str]:
    """A one-line warning for settings that do not apply to this model (or None)."""
    if optim_cfg["name"] == "sgd" and optim_cfg["nesterov"] and optim_cfg["momentum"] <= 0:
        raise ToolkitError("optim.nesterov needs optim.momentum > 0")
    if optim_cfg.get("lr_orth") is not None and not split_parameters(model)[0]:
        return "optim.lr_orth is set but this model has no orthogonal parameters; it is unused"
    if optim_cfg.get("orth_name") is not None and not split_parameters(model)[0]:
        return "optim.orth_name is set but this model has no orthogonal parameters; it is unused"
    return None
