"""The AWD-LSTM word model (Merity et al., 2017) of task ``ptb``, over any recurrent layer of the
core: embedding with word dropout, locked (variational) dropout, DropConnect on the recurrent
weights through ``torch.nn.utils.parametrize``, a decoder tied to the embedding.

The layers are built by :func:`.models.build_recurrent` (the core's public API), one separately
built one-layer module per level, so the last one can have ``emb_size`` units for tied weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from .errors import ToolkitError
from .models import build_recurrent, shift_forget_bias
from .options import model_key

# AWD-LSTM's PTB settings (the defaults of the model keys of task ptb)
AWD_DEFAULTS: dict[str, Any] = {
    "emb_size": 400,
    "num_layers": 3,
    "dropout": 0.4,
    "dropouth": 0.25,
    "dropouti": 0.4,
    "dropoute": 0.1,
    "wdrop": 0.5,
    "tie_weights": True,
}

# model


def locked_dropout(x: torch.Tensor, p: float, training: bool, columns: tuple[int, int] | None = None) -> torch.Tensor:
    """Variational dropout of a batch-first ``(B, T, F)`` tensor: one mask per sequence, the same at
    every step. ``columns = (offset, total)``: the mask is drawn for ``total`` sequences and rows
    ``offset:offset+B`` are used (so a batch split over processes gets the one-process masks)."""
    if not training or p <= 0:
        return x
    B = x.shape[0]
    off, total = columns or (0, B)
    mask = x.new_empty(total, 1, x.shape[2]).bernoulli_(1 - p).div_(1 - p)
    return x * mask[off : off + B]


def embedded_dropout(weight: torch.Tensor, tokens: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Embedding lookup with whole words dropped (AWD-LSTM's ``dropoute``): rows of the embedding
    matrix are zeroed with probability ``p`` (the rest scaled by ``1 / (1 - p)``)."""
    if training and p > 0:
        mask = weight.new_empty(weight.shape[0], 1).bernoulli_(1 - p).div_(1 - p)
        weight = weight * mask
    return F.embedding(tokens, weight)


class DropConnect(nn.Module):
    """Parametrization ``W -> dropout(W, p)`` (AWD-LSTM's weight drop): in training each entry is
    zeroed with probability ``p`` and the rest scaled by ``1 / (1 - p)``; identity in eval mode.
    One mask per forward of :class:`WordLM` (it evaluates its layers under
    ``parametrize.cached()``)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return F.dropout(w, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def weight_drop_(layer: nn.Module, p: float, names: Sequence[str] = ("weight_hh_l0",)) -> nn.Module:
    """Put DropConnect on the named weights of ``layer`` (in place; the raw weight becomes
    ``layer.parametrizations.<name>.original`` and gets the gradients). Works for every layer that
    reads its weights as attributes in ``forward``, which all layers of the core do."""
    for name in names:
        w = getattr(layer, name, None)
        if parametrize.is_parametrized(layer, name) or not isinstance(w, nn.Parameter):
            raise ToolkitError(
                f"model.wdrop needs a plain recurrent weight {name} in {type(layer).__name__}, which this layer "
                "does not have (orthogonal hosts parametrize it); set model.wdrop=0"
            )
        drop = DropConnect(p)
        drop.eval()  # no random draw while registering
        parametrize.register_parametrization(layer, name, drop)
    return layer


def map_state(state: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """Apply ``fn`` to every tensor of a (nested tuple / list / NamedTuple) state; returns plain
    tuples (the core's layers accept them as state)."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return fn(state)
    if isinstance(state, (tuple, list)):
        return tuple(map_state(s, fn) for s in state)
    raise TypeError(f"unexpected state element {type(state).__name__}")


def state_to_plain(state: Any) -> Any:
    """A state as nested lists of tensors (``torch.load(weights_only=True)`` reads it)."""
    if state is None or isinstance(state, torch.Tensor):
        return state
    return [state_to_plain(s) for s in state]


class WordLM(nn.Module):
    """AWD-LSTM with any recurrent layers: see the module docstring. ``forward(tokens (B, T),
    state=None, columns=None) -> (logits (B, T, V), state, {'raw', 'dropped'})`` where ``state`` is
    one state per layer (momentum state included) and ``raw`` / ``dropped`` are the last layer's
    output before / after its dropout (for AR / TAR)."""

    def __init__(
        self,
        vocab_size: int,
        layers: Sequence[nn.Module],
        emb_size: int,
        *,
        dropout: float = 0.4,
        dropouth: float = 0.25,
        dropouti: float = 0.4,
        dropoute: float = 0.1,
        tie_weights: bool = True,
    ):
        super().__init__()
        self.encoder = nn.Embedding(vocab_size, emb_size)
        self.rnns = nn.ModuleList(layers)
        last: Any = layers[-1]  # a recurrent layer: output_size when it has one (projections), else hidden_size
        out = int(getattr(last, "output_size", last.hidden_size))
        if tie_weights and out != emb_size:
            raise ToolkitError(f"tied weights need the last layer's output ({out}) to equal emb_size ({emb_size})")
        self.decoder = nn.Linear(out, vocab_size)
        self.dropout, self.dropouth, self.dropouti, self.dropoute = dropout, dropouth, dropouti, dropoute
        self.tie_weights = bool(tie_weights)
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        if tie_weights:
            self.decoder.weight = self.encoder.weight
        else:
            nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    def forward(
        self, tokens: torch.Tensor, state: Sequence[Any] | None = None, columns: tuple[int, int] | None = None
    ) -> tuple[torch.Tensor, list[Any], dict[str, torch.Tensor]]:
        train = self.training
        x = embedded_dropout(self.encoder.weight, tokens, self.dropoute, train)
        x = locked_dropout(x, self.dropouti, train, columns)
        new_state = []
        raw = x
        last = len(self.rnns) - 1
        with parametrize.cached():  # one DropConnect mask per weight and forward
            for i, rnn in enumerate(self.rnns):
                raw, s = rnn(x, None if state is None else state[i])
                new_state.append(s)
                x = locked_dropout(raw, self.dropout if i == last else self.dropouth, train, columns)
        return self.decoder(x), new_state, {"raw": raw, "dropped": x}


def _check_float(key: str, v: Any, lo: float, hi: float, hi_open: bool = True) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        raise ToolkitError(f"model.{key}: expected a number, got {v!r}")
    v = float(v)
    if v < lo or (v >= hi if hi_open else v > hi):
        raise ToolkitError(
            f"model.{key}: {v!r} is out of range (must be >= {lo:g} and {'<' if hi_open else '<='} {hi:g})"
        )
    return v


def _check_int(key: str, v: Any, lo: int) -> int:
    if isinstance(v, bool) or (not isinstance(v, int) and not (isinstance(v, float) and v.is_integer())):
        raise ToolkitError(f"model.{key}: expected an integer, got {v!r}")
    if int(v) < lo:
        raise ToolkitError(f"model.{key}: {v!r} is out of range (must be >= {lo})")
    return int(v)


def build_word_lm(model_cfg: dict, vocab_size: int) -> WordLM:
    """The :class:`WordLM` of a resolved ``model`` section: AWD keys (``AWD_DEFAULTS``) plus any
    layer of the core by name or host x scheme with its keyword arguments."""
    cfg = dict(model_cfg)
    awd = {k: cfg.pop(k, v) for k, v in AWD_DEFAULTS.items()}
    if cfg.get("bidirectional"):
        raise ToolkitError("model.bidirectional: a language model reads left to right; remove it")
    emb = _check_int("emb_size", awd["emb_size"], 1)
    n = _check_int("num_layers", awd["num_layers"], 1)
    drops = {k: _check_float(k, awd[k], 0.0, 1.0) for k in ("dropout", "dropouth", "dropouti", "dropoute", "wdrop")}
    tie = awd["tie_weights"]
    if not isinstance(tie, bool):
        raise ToolkitError(f"model.tie_weights: expected true or false, got {tie!r}")
    hidden = int(cfg["hidden_size"])
    layers = []
    for i in range(n):
        size_in = emb if i == 0 else hidden
        size_out = emb if (tie and i == n - 1) else hidden
        layer = build_recurrent(dict(cfg, hidden_size=size_out), size_in)
        layer.carry_momentum = True  # the authors' PTB code carries the momentum across BPTT windows
        if cfg.get("init_forget_bias"):
            shift_forget_bias(layer, float(cfg["init_forget_bias"]), model_key(cfg))
        layers.append(layer)
    if drops["wdrop"] > 0:
        for layer in layers:
            weight_drop_(layer, drops["wdrop"])
    return WordLM(
        vocab_size,
        layers,
        emb,
        dropout=drops["dropout"],
        dropouth=drops["dropouth"],
        dropouti=drops["dropouti"],
        dropoute=drops["dropoute"],
        tie_weights=tie,
    )
