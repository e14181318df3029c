"""Penn Treebank data for task ``ptb``: the text files, the vocabulary, and the stream of BPTT
windows (AWD-LSTM's random window lengths, drawn from ``(seed, epoch)``), resumable mid-epoch.

Mikolov's preprocessed PTB: ``train.txt``, ``valid.txt``, ``test.txt`` (``ptb.train.txt``, ...
accepted) in a folder; words split on whitespace, ``<eos>`` at each line end. See :mod:`.ptb`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import cast

import numpy as np
import torch

from .. import download as dl
from ..errors import ToolkitError

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
MIN_SEQ_LEN = 5


# ---------------------------------------------------------------------------------------------
# data


def ptb_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "momentumrnn" / "ptb"


def find_file(directory: Path, which: str) -> Path | None:
    for name in FILE_NAMES[which]:
        if (directory / name).is_file():
            return directory / name
    return None


def _archive_data_dir(directory: Path) -> Path:
    """The folder of the text files: ``directory`` itself, or its ``data/`` when ``directory`` is
    Mikolov's extracted ``simple-examples`` archive (the standard PTB download:
    ``simple-examples/data/ptb.train.txt``, ...)."""
    if any(find_file(directory, k) for k in FILE_NAMES):
        return directory
    sub = directory / "data"
    if sub.is_dir() and any(find_file(sub, k) for k in FILE_NAMES):
        return sub
    return directory


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
        raise ToolkitError(
            f"{path} is not UTF-8 text (bad byte at offset {e.start}); it is corrupt or not the PTB text: {fix}"
        ) from None
    words: list[str] = []
    for line in text.splitlines():
        words.extend(line.split())
        words.append(EOS)
    if all(w == EOS for w in words):
        raise ToolkitError(f"{path} holds no words (empty file); {fix}")
    return words


class Vocabulary:
    """Words in order of first appearance; ``ids()`` maps unseen words to ``<unk>`` if it exists."""

    def __init__(self) -> None:
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
            raise ToolkitError(
                f"{origin}: {unseen} word(s) not in the training vocabulary and it has no "
                f"{UNK} to map them to (e.g. {', '.join(map(repr, missing))}); {fix}"
            )
        return torch.from_numpy(out), unseen


def _download(directory: Path, names: Sequence[str], *, timeout: float = 60.0) -> None:
    """Fetch the named PTB files into ``directory`` (mirrors, MD5 check, atomic: see ``download``)."""
    dl.download_missing(dl.SOURCES["ptb"], directory, names, timeout=timeout)


def load_corpus(data_dir: str | None, split: str, vocab_mode: str, *, download: bool = False) -> dict:
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
                f"task.download=true to fetch them into {directory} (needs a network)"
            )
    else:
        directory = Path(os.path.expanduser(data_dir))
        if not directory.is_dir() and not download:
            raise ToolkitError(f"task.data_dir {data_dir!r} is not a directory; give the folder holding {expected}")
        directory = _archive_data_dir(directory)
    missing = [k for k in need if find_file(directory, k) is None]
    if missing and download:
        _download(directory, [FILE_NAMES[k][1] for k in missing])
        missing = [k for k in need if find_file(directory, k) is None]
    if missing:
        names = ", ".join(FILE_NAMES[k][0] for k in missing)
        hint = ""
        if "train" in missing and find_file(directory, "valid") and find_file(directory, "test"):
            hint = (
                "; only valid.txt and test.txt are there: task.split=valid-test trains on valid.txt and "
                "evaluates on test.txt (PTB-small)"
            )
        raise ToolkitError(
            f"{names} not found in {directory} (task.split={split} needs {expected}); copy "
            f"the file(s) there or set task.download=true{hint}"
        )
    paths = {k: cast(Path, find_file(directory, k)) for k in need}  # (none missing: checked above)
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
    return {
        "train": train_ids,
        "test": test_ids,
        "vocab": vocab,
        "unk_test": unk,
        "files": {k: str(p) for k, p in paths.items()},
    }


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

    def __init__(
        self,
        stream: torch.Tensor,
        bptt: int,
        *,
        variable: bool,
        seed: int = 0,
        columns: tuple[int, int] = (0, -1),
        epoch_fn: Callable[[], int] | None = None,
        skip_fn: Callable[[], int] | None = None,
    ):
        lo, hi = columns
        self.stream = stream[:, lo : (hi if hi >= 0 else stream.shape[1])]
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
            self._plans = {
                key: window_plan(self.stream.shape[0], self.bptt, variable=self.variable, seed=self.seed, epoch=key)
            }
        return self._plans[key]

    def __len__(self) -> int:
        return len(self.plan(self.epoch_fn()))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        skip = 0
        if self._resume_pending:
            self._resume_pending = False
            skip = max(0, int(self.skip_fn()))
        epoch = self.epoch_fn()
        plan = self.plan(epoch)
        for k in range(skip, len(plan)):
            i, n = plan[k]
            x = self.stream[i : i + n].t().contiguous()
            y = self.stream[i + 1 : i + 1 + n].t().contiguous()
            yield x, y, torch.tensor([epoch, k, n, len(plan)], dtype=torch.long)

    def state_dict(self) -> dict:
        return {"seed": self.seed, "bptt": self.bptt, "columns": int(self.stream.shape[1])}

    def load_state_dict(self, state: dict) -> None:
        self._resume_pending = True
