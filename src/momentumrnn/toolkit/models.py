"""Models of the toolkit: a layer of the core library (any host x scheme x parametrization, by
name) followed by the task's head, and the optimizers (``lr_orth`` groups, a second algorithm for
the orthogonal parameters, SGD -> ASGD).

Layers are built through the core's public API only: ``momentumrnn.layer_class(name)`` for paper
names and their aliases (``momentumrnn.LAYER_NAMES``, ``momentumrnn.LAYER_ALIASES``),
``momentumrnn.build_layer(host, scheme, ...)`` for every host of ``momentumrnn.HOSTS``;
``momentumrnn.split_parameters`` decides which parameters get ``optim.lr_orth``, and every layer's
``on_optimizer_step()`` runs after each optimizer step (e.g. the DTRIV base change).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from typing import Protocol, cast

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import momentumrnn as core

from .errors import ToolkitError
from .optimizers import MixedOptimizer, RMSpropTF
from .options import MODEL_TOOLKIT_KEYS, model_key, suggest


class TaskShape(Protocol):
    """What :func:`build_model` reads of a task (:class:`~momentumrnn.toolkit.tasks.base.Task`
    has it; a protocol because the tasks import this module)."""

    input_size: int

    def make_head(self, features: int) -> nn.Module: ...

    def head_input(self, output: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor: ...


def known_layer_names() -> dict[str, tuple]:
    """Paper name -> (host, scheme, summary) of every layer of the core, aliases included
    (an alias carries its canonical name's entry)."""
    names = dict(core.LAYER_NAMES)
    for alias, canonical in core.LAYER_ALIASES.items():
        if canonical in core.LAYER_NAMES:
            names.setdefault(alias, core.LAYER_NAMES[canonical])
    return names


def known_hosts() -> list[str]:
    return list(core.HOSTS)


def layer_kwargs(model_cfg: dict) -> dict:
    return {k: v for k, v in model_cfg.items() if k not in MODEL_TOOLKIT_KEYS}


def build_recurrent(model_cfg: dict, input_size: int) -> core.SequenceBase:
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
                    cls = core.layer_class(name)
                except (ValueError, KeyError):
                    names = list(known_layer_names())
                    raise ToolkitError(
                        f"unknown model {name!r}{suggest(name, names)}; choose one of {', '.join(names)} "
                        "(or model.host + model.scheme)"
                    ) from None
                return cast(core.SequenceBase, cls(input_size, hidden, **kwargs))
            host = model_cfg["host"]
            if not isinstance(host, str) or host.lower() not in core.HOSTS:
                hosts = known_hosts()
                raise ToolkitError(
                    f"unknown model host {host!r}{suggest(str(host), hosts)}; choose one of {', '.join(hosts)}"
                )
            return cast(
                core.SequenceBase, core.build_layer(host.lower(), model_cfg["scheme"], input_size, hidden, **kwargs)
            )
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
    """``recurrent`` layer (batch first) -> task head on the selected output (``head_input``:
    the task's choice of steps). With ``lengths`` the sequences run packed."""

    def __init__(self, recurrent: nn.Module, head: nn.Module, head_input: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        self.recurrent = recurrent
        self.head = head
        self._head_input = head_input

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if lengths is None:
            out, _ = self.recurrent(x)
            return self.head(self._head_input(out))
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.recurrent(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return self.head(self._head_input(out, lengths))


def output_features(layer: nn.Module, hidden: int) -> int:
    directions = 2 if getattr(layer, "bidirectional", False) else 1
    return int(getattr(layer, "output_size", hidden * directions))


def shift_forget_bias(layer: nn.Module, shift: float, what: str) -> None:
    """Add ``shift`` to the forget-gate slice (gate order i, f, g, o as torch.nn.LSTM) of every
    ``bias_hh_l*`` of an LSTM layer.

    ``b_hh`` enters the pre-activation directly in every scheme, so the forget gate starts
    ``shift`` higher for all of them; ``b_ih`` sits inside the momentum (docs/equations.md, section 2), where a shift
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
            b[h : 2 * h] += shift


def build_model(model_cfg: dict, task: TaskShape) -> nn.Module:
    """The standard model of a task (``input_size``, ``make_head``, ``head_input``): the named
    recurrent layer and the head. Tasks with a model of their own override ``Task.build_model``."""
    layer = build_recurrent(model_cfg, task.input_size)
    if model_cfg.get("init_forget_bias"):
        shift_forget_bias(layer, float(model_cfg["init_forget_bias"]), model_key(model_cfg))
    head = task.make_head(output_features(layer, model_cfg["hidden_size"]))
    return SequenceModel(layer, head, task.head_input)


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``(orthogonal, other)`` trainable parameters of ``model`` (the core's split)."""
    orth, _ = core.split_parameters(model)
    seen, orth_unique = set(), []
    for p in orth:
        if id(p) not in seen and p.requires_grad:
            seen.add(id(p))
            orth_unique.append(p)
    other = [p for p in model.parameters() if p.requires_grad and id(p) not in seen]
    return orth_unique, other


def optimizer_step_hooks(model: nn.Module) -> list:
    """Every layer's ``on_optimizer_step`` (the core gives every layer one; a no-op on the
    RNN / LSTM / GRU hosts, the base change on DTRIV)."""
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
        return MixedOptimizer(
            [
                _optimizer(optim_cfg["name"], groups, optim_cfg, lr, asgd=False),
                _optimizer(orth_name, [orth_group], optim_cfg, lr_orth, asgd=False),
            ]
        )
    if orth:
        groups.append(orth_group)
    return _optimizer(optim_cfg["name"], groups, optim_cfg, lr, asgd=asgd)


def _optimizer(name: str, groups: list, optim_cfg: dict, lr: float, *, asgd: bool) -> torch.optim.Optimizer:
    wd = optim_cfg["weight_decay"]
    if name == "rmsprop":
        return torch.optim.RMSprop(
            groups,
            lr=lr,
            alpha=optim_cfg["alpha"],
            eps=optim_cfg["eps"],
            momentum=optim_cfg["momentum"],
            weight_decay=wd,
        )
    if name == "rmsprop_tf":
        return RMSpropTF(
            groups,
            lr=lr,
            alpha=optim_cfg["alpha"],
            eps=optim_cfg["eps"],
            momentum=optim_cfg["momentum"],
            weight_decay=wd,
        )
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=tuple(optim_cfg["betas"]), eps=optim_cfg["eps"], weight_decay=wd)
    if name in ("sgd", "sgd_asgd"):
        if asgd:
            return torch.optim.ASGD(groups, lr=lr, t0=0, lambd=0.0, weight_decay=wd)
        return torch.optim.SGD(
            groups, lr=lr, momentum=optim_cfg["momentum"], weight_decay=wd, nesterov=optim_cfg["nesterov"]
        )
    raise ToolkitError(f"unknown optimizer {name!r}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def check_optim(optim_cfg: dict, model: nn.Module) -> str | None:
    """A one-line warning for settings that do not apply to this model (or None)."""
    if optim_cfg["name"] == "sgd" and optim_cfg["nesterov"] and optim_cfg["momentum"] <= 0:
        raise ToolkitError("optim.nesterov needs optim.momentum > 0")
    if optim_cfg.get("lr_orth") is not None and not split_parameters(model)[0]:
        return "optim.lr_orth is set but this model has no orthogonal parameters; it is unused"
    if optim_cfg.get("orth_name") is not None and not split_parameters(model)[0]:
        return "optim.orth_name is set but this model has no orthogonal parameters; it is unused"
    return None
