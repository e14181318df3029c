"""Word-level language modelling on the Penn Treebank (task ``ptb``), as the MomentumRNN authors
ran it: an AWD-LSTM (Merity et al., 2017, "Regularizing and Optimizing LSTM Language Models")
whose recurrent layers are any host x scheme of the core library.

Data
    Mikolov's preprocessed PTB: ``train.txt``, ``valid.txt``, ``test.txt`` (also accepted:
    ``ptb.train.txt``, ...) in ``task.data_dir``. Words are split on whitespace and ``<eos>`` is
    appended at each line end; the vocabulary is built from the training text (``task.vocab:
    train``; evaluation words unseen in training become ``<unk>``) or from every file of the
    setting (``task.vocab: all``, as AWD-LSTM's and pytorch/examples' ``Corpus`` do; the same
    vocabulary for the standard split). ``task.split`` chooses what is trained and evaluated:
    ``train-valid`` (standard: train on train.txt, evaluate on valid.txt), ``train-test``, or
    ``valid-test`` ("PTB-small": train on valid.txt, evaluate on test.txt, for machines without
    train.txt; results must say so, and reports name the task ``ptb-small``).
    ``task.download: true`` fetches missing files (md5-checked) from a standard mirror.

Model (:class:`WordLM`)
    embedding (embedding dropout ``dropoute``) -> locked dropout ``dropouti`` -> ``num_layers``
    recurrent layers, each built separately by the core (``build_layer`` / ``layer_class``), with
    locked dropout ``dropouth`` between them and DropConnect ``wdrop`` on each ``weight_hh_l0``
    (:func:`weight_drop_`) -> locked dropout ``dropout`` -> decoder, tied to the embedding
    (``tie_weights``: the last layer then has ``emb_size`` units).

Training (AWD-LSTM's)
    The training text is cut into ``batch_size`` contiguous columns; each step takes the next
    window of ``seq_len ~ N(bptt, 5)`` tokens (``bptt / 2`` with probability 0.05, at least 5,
    drawn from ``(seed, epoch)``; ``task.variable_bptt: false`` for fixed windows) with the
    learning rate scaled by ``seq_len / bptt``, carries the hidden state -- momentum state
    included -- across windows (detached), and resets it at each epoch start. Loss: cross-entropy
    per token plus AR (``task.ar_alpha``: L2 of the last layer's dropped output) and TAR
    (``task.tar_beta``: slowness of its raw output). Evaluation reads the evaluation text in
    order, ``bptt`` tokens at a time, ``train.eval_batch_size`` columns (default 10), state
    carried; metrics: loss (nats / token) and perplexity ``exp(loss)``.

Resume and DDP
    Checkpoints hold the carried state of all columns and the stream position, so a resumed run
    is exact. With ``--devices N`` every process takes ``batch_size / N`` columns (the batch sizes
    must be divisible by N) and every random mask is drawn for the whole batch from ``(seed,
    step)`` then sliced, so N processes compute what one does, up to floating-point rounding.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from .config import Opt
from .errors import ToolkitError
from .tasks import Split, Task, register

EOS = "<eos>"
UNK = "<unk>"

# file names of the standard layout (first) and of Mikolov's archive / common mirrors
FILE_NAMES = {
    "train": ("train.txt", "ptb.train.txt"),
    "valid": ("valid.txt", "ptb.valid.txt"),
    "test": ("test.txt", "ptb.test.txt"),
}
# what is trained and evaluated in each setting
SPLITS = {"train-valid": ("train", "valid"), "train-test": ("train", "test"), "valid-test": ("valid", "test")}
# AWD-LSTM's PTB settings (the defaults of the model keys of task ptb)
AWD_DEFAULTS: dict[str, Any] = {
    "emb_size": 400, "num_layers": 3, "dropout": 0.4, "dropouth": 0.25, "dropouti": 0.4,
    "dropoute": 0.1, "wdrop": 0.5, "tie_weights": True,
}
MIN_SEQ_LEN = 5


# ---------------------------------------------------------------------------------------------
# data

def ptb_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "momentumrnn" / "ptb"


def find_file(directory: Path, which: str) -> Optional[Path]:
    for name in FILE_NAMES[which]:
        if (directory / name).is_file():
            return directory / name
    return None


def read_words(path: Path) -> list[str]:
    """The words of one text file, ``<eos>`` after every line; bad files raise ToolkitError."""
    path = Path(path)
    fix = "replace it with the PTB text file (one sentence a line, words separated by spaces)"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ToolkitError(f"{path} not found; {fix}") from None
    except OSError as e:
        raise ToolkitError(f"cannot read {path} ({e.strerror or e}); check its permissions") from None
    if data[:2] == b"\x1f\x8b":
        raise ToolkitError(f"{path} is gzip-compressed; decompress it (gunzip) first")
    if b"\x00" in data:
        raise ToolkitError(f"{path} is a binary file, not text (it holds NUL bytes); {fix}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ToolkitError(f"{path} is not UTF-8 text (bad byte at offset {e.start}); it is corrupt or "
                           f"not the PTB text: {fix}") from None
    words: list[str] = []
    for line in text.splitlines():
        words.extend(line.split())
        words.append(EOS)
    if all(w == EOS for w in words):
        raise ToolkitError(f"{path} holds no words (empty file); {fix}")
    return words


class Vocabulary:
    """Words in order of first appearance; ``ids()`` maps unseen words to ``<unk>`` if it exists."""

    def __init__(self):
        self.words: list[str] = []
        self.index: dict[str, int] = {}

    def add(self, words: Sequence[str]) -> None:
        index = self.index
        for w in words:
            if w not in index:
                index[w] = len(self.words)
                self.words.append(w)

    def __len__(self) -> int:
        return len(self.words)

    def ids(self, words: Sequence[str], origin: str, fix: str) -> tuple[torch.Tensor, int]:
        """Ids of ``words`` and the number of words that were mapped to ``<unk>``."""
        index = self.index
        unk = index.get(UNK)
        out = np.empty(len(words), dtype=np.int64)
        unseen = 0
        missing: list[str] = []
        for i, w in enumerate(words):
            j = index.get(w)
            if j is None:
                unseen += 1
                if unk is None:
                    if len(missing) < 3:
                        missing.append(w)
                    continue
                j = unk
            out[i] = j
        if unk is None and unseen:
            raise ToolkitError(f"{origin}: {unseen} word(s) not in the training vocabulary and it has no "
                               f"{UNK} to map them to (e.g. {', '.join(map(repr, missing))}); {fix}")
        return torch.from_numpy(out), unseen


def _download(directory: Path, names: Sequence[str], *, timeout: float = 60.0) -> None:
    """Fetch the named PTB files into ``directory`` (mirrors, MD5 check, atomic: see ``download``)."""
    from . import download as dl

    dl.download_missing(dl.SOURCES["ptb"], directory, names, timeout=timeout)


def load_corpus(data_dir: Optional[str], split: str, vocab_mode: str, *, download: bool = False) -> dict:
    """Read the files of ``split`` (``train-valid`` / ``train-test`` / ``valid-test``): returns
    ``{'train', 'test'}`` id tensors, the ``vocab``, and ``unk_test`` (evaluation words mapped to
    ``<unk>`` because training never saw them)."""
    train_key, test_key = SPLITS[split]
    need = [train_key, test_key]
    expected = " and ".join(FILE_NAMES[k][0] for k in need)
    if data_dir is None:  # the download cache
        directory = ptb_cache_dir()
        if not download and any(find_file(directory, k) is None for k in need):
            raise ToolkitError(
                f"task.data_dir is not set: give the folder holding {expected} (Mikolov's PTB layout "
                "train.txt / valid.txt / test.txt; ptb.train.txt, ... also accepted), or set "
                f"task.download=true to fetch them into {directory} (needs a network)")
    else:
        directory = Path(os.path.expanduser(data_dir))
        if not directory.is_dir() and not download:
            raise ToolkitError(f"task.data_dir {data_dir!r} is not a directory; give the folder holding {expected}")
    missing = [k for k in need if find_file(directory, k) is None]
    if missing and download:
        _download(directory, [FILE_NAMES[k][1] for k in missing])
        missing = [k for k in need if find_file(directory, k) is None]
    if missing:
        names = ", ".join(FILE_NAMES[k][0] for k in missing)
        hint = ""
        if "train" in missing and find_file(directory, "valid") and find_file(directory, "test"):
            hint = ("; only valid.txt and test.txt are there: task.split=valid-test trains on valid.txt and "
                    "evaluates on test.txt (PTB-small)")
        raise ToolkitError(f"{names} not found in {directory} (task.split={split} needs {expected}); copy "
                           f"the file(s) there or set task.download=true{hint}")
    paths = {k: find_file(directory, k) for k in need}
    words = {k: read_words(paths[k]) for k in need}
    vocab = Vocabulary()
    vocab.add(words[train_key])
    if vocab_mode == "all":  # AWD-LSTM's Corpus: every file of the layout that is there
        for k in ("train", "valid", "test"):
            path = find_file(directory, k)
            if path is not None:
                vocab.add(words[k] if k in words else read_words(path))
    fix = "set task.vocab=all to build the vocabulary from every file"
    train_ids, _ = vocab.ids(words[train_key], str(paths[train_key]), fix)
    test_ids, unk = vocab.ids(words[test_key], str(paths[test_key]), fix)
    return {"train": train_ids, "test": test_ids, "vocab": vocab, "unk_test": unk,
            "files": {k: str(p) for k, p in paths.items()}}


def batchify(ids: torch.Tensor, columns: int) -> torch.Tensor:
    """A token stream as ``(rows, columns)``: column ``j`` is the ``j``-th contiguous chunk (the
    tail that does not fill a row is dropped), as AWD-LSTM's ``batchify``."""
    rows = ids.numel() // columns
    return ids[: rows * columns].view(columns, rows).t().contiguous()


# ---------------------------------------------------------------------------------------------
# windows over the stream

def _seed(seed: int, epoch: int) -> int:
    return (int(seed) * 2_654_435_761 + int(epoch) * 40_503 + 7) % (2**63 - 1)


def window_plan(rows: int, bptt: int, *, variable: bool, seed: int = 0, epoch: int = 0) -> list[tuple[int, int]]:
    """``(start, seq_len)`` of the windows of one pass over a ``rows``-long stream: fixed ``bptt``
    windows, or AWD-LSTM's random lengths drawn from ``(seed, epoch)`` alone."""
    plan = []
    i = 0
    end = rows - 1  # the last row is only a target
    if not variable:
        while i < end:
            plan.append((i, min(bptt, end - i)))
            i += bptt
        return plan
    rng = np.random.Generator(np.random.PCG64(_seed(seed, epoch)))
    while i < end:
        b = bptt if rng.random() < 0.95 else bptt / 2.0
        n = max(min(MIN_SEQ_LEN, bptt), int(rng.normal(b, 5)))
        n = min(n, end - i)
        plan.append((i, n))
        i += n
    return plan


class StreamLoader:
    """Windows of a batchified token stream for this rank's columns: batches ``(x, y, meta)`` with
    ``x`` ``(columns, seq_len)`` token ids, ``y`` the next tokens, and ``meta`` =
    ``[epoch, window index, seq_len, windows this epoch]``. Resumable like :class:`BatchLoader`
    (Lightning's ``state_dict`` protocol; the position comes from the restored loop)."""

    def __init__(self, stream: torch.Tensor, bptt: int, *, variable: bool, seed: int = 0,
                 columns: tuple[int, int] = (0, -1), epoch_fn: Optional[Callable[[], int]] = None,
                 skip_fn: Optional[Callable[[], int]] = None):
        lo, hi = columns
        self.stream = stream[:, lo: (hi if hi >= 0 else stream.shape[1])]
        self.bptt = int(bptt)
        self.variable = bool(variable)
        self.seed = int(seed)
        self.epoch_fn = epoch_fn or (lambda: 0)
        self.skip_fn = skip_fn or (lambda: 0)
        self._plans: dict[int, list] = {}
        self._resume_pending = False

    def plan(self, epoch: int) -> list[tuple[int, int]]:
        key = epoch if self.variable else 0
        if key not in self._plans:
            self._plans = {key: window_plan(self.stream.shape[0], self.bptt, variable=self.variable,
                                            seed=self.seed, epoch=key)}
        return self._plans[key]

    def __len__(self) -> int:
        return len(self.plan(self.epoch_fn()))

    def __iter__(self):
        skip = 0
        if self._resume_pending:
            self._resume_pending = False
            skip = max(0, int(self.skip_fn()))
        epoch = self.epoch_fn()
        plan = self.plan(epoch)
        for k in range(skip, len(plan)):
            i, n = plan[k]
            x = self.stream[i: i + n].t().contiguous()
            y = self.stream[i + 1: i + 1 + n].t().contiguous()
            yield x, y, torch.tensor([epoch, k, n, len(plan)], dtype=torch.long)

    def state_dict(self) -> dict:
        return {"seed": self.seed, "bptt": self.bptt, "columns": int(self.stream.shape[1])}

    def load_state_dict(self, state: dict) -> None:
        self._resume_pending = True


# ---------------------------------------------------------------------------------------------
# model

def locked_dropout(x: torch.Tensor, p: float, training: bool, columns: Optional[tuple[int, int]] = None) -> torch.Tensor:
    """Variational dropout of a batch-first ``(B, T, F)`` tensor: one mask per sequence, the same at
    every step. ``columns = (offset, total)``: the mask is drawn for ``total`` sequences and rows
    ``offset:offset+B`` are used (so a batch split over processes gets the one-process masks)."""
    if not training or p <= 0:
        return x
    B = x.shape[0]
    off, total = columns or (0, B)
    mask = x.new_empty(total, 1, x.shape[2]).bernoulli_(1 - p).div_(1 - p)
    return x * mask[off: off + B]


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
                "does not have (orthogonal hosts parametrize it); set model.wdrop=0")
        drop = DropConnect(p)
        drop.eval()  # no random draw while registering
        parametrize.register_parametrization(layer, name, drop)
    return layer


def map_state(state, fn):
    """Apply ``fn`` to every tensor of a (nested tuple / list / NamedTuple) state; returns plain
    tuples (the core's layers accept them as state)."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return fn(state)
    if isinstance(state, (tuple, list)):
        return tuple(map_state(s, fn) for s in state)
    raise TypeError(f"unexpected state element {type(state).__name__}")


def state_to_plain(state):
    """A state as nested lists of tensors / None (``torch.load(weights_only=True)`` reads it)."""
    if state is None or isinstance(state, torch.Tensor):
        return state
    return [state_to_plain(s) for s in state]


class WordLM(nn.Module):
    """AWD-LSTM with any recurrent layers: see the module docstring. ``forward(tokens (B, T),
    state=None, columns=None) -> (logits (B, T, V), state, {'raw', 'dropped'})`` where ``state`` is
    one state per layer (momentum state included) and ``raw`` / ``dropped`` are the last layer's
    output before / after its dropout (for AR / TAR)."""

    def __init__(self, vocab_size: int, layers: Sequence[nn.Module], emb_size: int, *, dropout: float = 0.4,
                 dropouth: float = 0.25, dropouti: float = 0.4, dropoute: float = 0.1, tie_weights: bool = True):
        super().__init__()
        self.encoder = nn.Embedding(vocab_size, emb_size)
        self.rnns = nn.ModuleList(layers)
        out = int(getattr(layers[-1], "output_size", getattr(layers[-1], "hidden_size")))
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

    def forward(self, tokens: torch.Tensor, state=None, columns: Optional[tuple[int, int]] = None):
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
        raise ToolkitError(f"model.{key}: {v!r} is out of range (must be >= {lo:g} and {'<' if hi_open else '<='} {hi:g})")
    return v


def _check_int(key: str, v: Any, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) and not (isinstance(v, float) and v.is_integer()):
        raise ToolkitError(f"model.{key}: expected an integer, got {v!r}")
    if int(v) < lo:
        raise ToolkitError(f"model.{key}: {v!r} is out of range (must be >= {lo})")
    return int(v)


def build_word_lm(model_cfg: dict, vocab_size: int) -> WordLM:
    """The :class:`WordLM` of a resolved ``model`` section: AWD keys (``AWD_DEFAULTS``) plus any
    layer of the core by name or host x scheme with its keyword arguments."""
    from .config import model_key
    from .models import build_recurrent, shift_forget_bias

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
        if cfg.get("init_forget_bias"):
            shift_forget_bias(layer, float(cfg["init_forget_bias"]), model_key(cfg))
        layers.append(layer)
    if drops["wdrop"] > 0:
        for layer in layers:
            weight_drop_(layer, drops["wdrop"])
    return WordLM(vocab_size, layers, emb, dropout=drops["dropout"], dropouth=drops["dropouth"],
                  dropouti=drops["dropouti"], dropoute=drops["dropoute"], tie_weights=tie)


# ---------------------------------------------------------------------------------------------
# the task

@register
class PennTreebank(Task):
    name = "ptb"
    summary = ("Penn Treebank word-level language modelling (AWD-LSTM: embedding, weight drop, locked "
               "dropout, tied decoder, AR/TAR, random BPTT windows, carried state); metric perplexity")
    kind = "language"
    metric = "ppl"
    default_target = None
    reload_loaders_every_epoch = True  # random windows: each epoch has its own number of batches
    options = {
        "data_dir": Opt("str", None, "folder of train.txt, valid.txt, test.txt (Mikolov's PTB; ptb.*.txt also "
                        "accepted); null: the download cache (with task.download)", nullable=True),
        "split": Opt("choice", "train-valid", "train-valid (standard), train-test, or valid-test (PTB-small: "
                     "train on valid.txt, evaluate on test.txt)", choices=tuple(SPLITS)),
        "vocab": Opt("choice", "train", "vocabulary from the training text (unseen evaluation words -> <unk>) "
                     "or from all files of the setting", choices=("train", "all")),
        "download": Opt("bool", False, "fetch missing files (md5-checked) from a standard mirror"),
        "bptt": Opt("int", 70, "mean training window (tokens); evaluation windows", lo=1),
        "variable_bptt": Opt("bool", True, "AWD-LSTM's random window lengths (else fixed bptt)"),
        "ar_alpha": Opt("float", 2.0, "activation regularisation (L2 of the last layer's dropped output)", lo=0),
        "tar_beta": Opt("float", 1.0, "temporal activation regularisation (slowness of its raw output)", lo=0),
    }

    def __init__(self, opts: dict):
        super().__init__(opts)
        self.opts.setdefault("split", "train-valid")
        self.corpus: Optional[dict] = None
        self.columns = (0, 1)  # this rank's training columns: (offset, total)
        self.eval_columns = (0, 1)
        self._state = None  # carried training state (tuples, this rank's columns)
        self._pending = None  # (plain global state, position) restored from a checkpoint
        self._position = (-1, 0)  # (epoch, next window) of the carried state
        self._progress: Optional[float] = None
        self._eval_state = None

    # -- data --------------------------------------------------------------------------------
    @property
    def display_name(self) -> str:
        return {"train-valid": "ptb", "train-test": "ptb-test", "valid-test": "ptb-small"}[self.opts["split"]]

    def describe(self) -> str:
        return self.summary

    @property
    def metric_names(self) -> list[str]:
        return ["loss", "ppl"]

    def _corpus(self) -> dict:
        if self.corpus is None:
            o = self.opts
            self.corpus = load_corpus(o.get("data_dir"), o["split"], o.get("vocab", "train"),
                                      download=bool(o.get("download")))
        return self.corpus

    def load(self) -> tuple[Split, Split]:
        c = self._corpus()
        return Split(c["train"], c["train"]), Split(c["test"], c["test"])

    def check_run(self, cfg: dict) -> None:
        t = cfg["train"]
        world = t["devices"] * t["num_nodes"]
        ebs = t["eval_batch_size"] or 10
        for key, bs in (("train.batch_size", t["batch_size"]), ("train.eval_batch_size", ebs)):
            if bs % world:
                raise ToolkitError(f"task ptb splits the {bs} columns of {key} over {world} processes: make it "
                                   f"a multiple of {world} (or change --devices)")

    def build_model(self, model_cfg: dict) -> nn.Module:
        return build_word_lm(model_cfg, len(self._corpus()["vocab"]))

    # -- loaders -----------------------------------------------------------------------------
    def _stream(self, split: Split, columns: int, what: str) -> torch.Tensor:
        stream = batchify(split.x, columns)
        if stream.shape[0] < 2:
            raise ToolkitError(f"the {what} text ({split.x.numel()} tokens) is too short for {columns} columns; "
                               "lower the batch size")
        return stream

    def steps_per_epoch(self, n_train: int, batch_size: int) -> int:
        """Windows of ``bptt`` tokens over columns of ``n_train // batch_size`` tokens (exact for a
        fixed ``bptt``; about right for the variable windows, whose mean is near ``bptt``)."""
        column = int(n_train) // int(batch_size)
        return max(1, -(-(column - 1) // int(self.opts["bptt"])))

    def train_loader(self, module):
        trainer = module.trainer
        rank, world = trainer.global_rank, trainer.world_size
        total = module.cfg["train"]["batch_size"]
        per = total // world
        self.columns = (rank * per, total)
        return StreamLoader(
            self._stream(module.train_split, total, "training"), self.opts["bptt"],
            variable=self.opts["variable_bptt"], seed=module.seed, columns=(rank * per, (rank + 1) * per),
            epoch_fn=lambda: trainer.current_epoch,
            skip_fn=lambda: trainer.fit_loop.epoch_loop.batch_progress.current.completed)

    def eval_loader(self, module):
        trainer = module.trainer
        rank, world = trainer.global_rank, trainer.world_size
        total = module.cfg["train"]["eval_batch_size"] or 10
        per = total // world
        self.eval_columns = (rank * per, total)
        return StreamLoader(self._stream(module.test_split, total, "evaluation"), self.opts["bptt"],
                            variable=False, columns=(rank * per, (rank + 1) * per))

    # -- steps -------------------------------------------------------------------------------
    def _carried(self, epoch: int, index: int):
        if index == 0:
            self._pending = None
            return None
        if self._pending is not None:
            plain, pos = self._pending
            self._pending = None
            lo = self.columns[0]
            self._state = map_state(plain, lambda t: t[:, lo: lo + self._local_columns].contiguous())
            self._position = pos
        if self._position[0] < 0:
            raise ToolkitError(
                f"training resumes at window {index} of epoch {epoch} but the checkpoint holds no carried hidden "
                "state for it (was it written by another version?); start the run again with --overwrite")
        if self._position != (epoch, index):
            raise ToolkitError(
                f"the carried hidden state belongs to window {self._position[1]} of epoch {self._position[0]}, "
                f"but training continues with window {index} of epoch {epoch}; the checkpoint does not match "
                "this run (start it again with --overwrite)")
        return self._state

    def training_step(self, module, batch, batch_idx):
        from .module import step_seed

        x, y, meta = batch
        epoch, index, n, _ = (int(v) for v in meta.tolist())
        self._local_columns = x.shape[0]
        state = self._carried(epoch, index)
        # every mask is drawn for the whole batch from (seed, step), the same in every process
        torch.manual_seed(step_seed(module.seed, module.global_step, 0))
        module.scale_lr(n / self.opts["bptt"])
        logits, state, out = module.model(x, state, columns=self.columns)
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1), reduction="sum")
        world = module.trainer.world_size
        loss = ce * (world / (n * self.columns[1]))
        alpha, beta = self.opts["ar_alpha"], self.opts["tar_beta"]
        if alpha:
            loss = loss + alpha * out["dropped"].float().pow(2).mean()
        if beta and out["raw"].shape[1] > 1:
            raw = out["raw"].float()
            loss = loss + beta * (raw[:, 1:] - raw[:, :-1]).pow(2).mean()
        self._state = map_state(state, lambda t: t.detach())
        self._position = (epoch, index + 1)
        nb = module.trainer.num_training_batches
        self._progress = epoch + (index + 1) / nb if math.isfinite(nb) and nb > 0 else None
        module.add_stats({"loss": float(ce.detach())}, y.numel(), train=True)
        count = float(module._acc[-1])
        module.log("loss", float(module._acc[0]) / max(count, 1.0), prog_bar=True, logger=False,
                   on_step=True, on_epoch=False, batch_size=int(y.numel()))
        return loss

    def validation_step(self, module, batch, batch_idx) -> None:
        x, y, meta = batch
        if int(meta[1]) == 0:
            self._eval_state = None
        logits, state, _ = module.model(x, self._eval_state, columns=self.eval_columns)
        self._eval_state = map_state(state, lambda t: t.detach())
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1), reduction="sum")
        module.add_stats({"loss": float(ce)}, y.numel(), train=False)

    def finish_row(self, module, row: dict) -> None:
        for side in ("train", "test"):
            loss = row.get(f"{side}_loss")
            row[f"{side}_ppl"] = math.exp(min(loss, 700.0)) if isinstance(loss, float) and loss == loss else float("nan")
        if self._progress is not None:
            row["epoch"] = round(self._progress, 6)

    # -- resumable state -----------------------------------------------------------------------
    def run_state(self, module) -> dict:
        state = self._state
        if self._pending is not None:  # restored but not used yet: keep it as it was
            plain, pos = self._pending
            return {"state": plain, "position": list(pos), "progress": self._progress}
        trainer = module.trainer
        world = trainer.world_size if trainer is not None else 1
        if state is not None and world > 1:  # every process holds its columns: gather them all
            state = map_state(state, lambda t: torch.cat(list(module.all_gather(t).unbind(0)), dim=1))
        return {"state": state_to_plain(state), "position": list(self._position), "progress": self._progress}

    def load_run_state(self, module, state: dict) -> None:
        if not state:
            return
        pos = tuple(int(v) for v in state.get("position", (-1, 0)))
        self._progress = state.get("progress")
        self._state = None
        self._position = pos
        self._pending = (state["state"], pos) if state.get("state") is not None else None
