"""TIMIT data for task ``timit``: the corpus in the LDC layout (scan, the authors' splits,
preprocessing with a cache) and the authors' preprocessed tensors; :class:`FrameStore` holds a
split's utterances without padding. Audio decoding and features are :mod:`..audio`'s."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from ..audio import BINS, HOP, LOG_FLOOR, N_FFT, RATE, preprocess, read_audio
from ..errors import ToolkitError
from ..runfiles import atomic_write

PREP_VERSION = 1  # bump when the preprocessing changes (invalidates caches)
#: the 50 speakers of the standard TIMIT development set (Halberstadt; Kaldi's conf/dev_spk.list)
DEV_SPEAKERS = frozenset(
    """
faks0 fdac1 fjem0 mgwt0 mjar0 mmdb1 mmdm2 mpdf0 fcmh0 fkms0 mbdg0 mbwm0 mcsh0 fadg0 fdms0 fedw0
mgjf0 mglb0 mrtk0 mtaa0 mtdt0 mthc0 mwjg0 fnmr0 frew0 fsem0 mbns0 mmjr0 mdls0 mdlf0 mdvc0 mers0
fmah0 fdrw0 mrcs0 mrjm4 fcal1 mmwh0 fjsj0 majc0 mjsw0 mreb0 fgjd0 fjmg0 mroa0 mteb0 mjfc0 mrjr0
fmml0 mrws1""".upper().split()
)
#: the 24 speakers of the TIMIT core test set
CORE_TEST_SPEAKERS = frozenset(
    """
mdab0 mwbt0 felc0 mtas1 mwew0 fpas0 mjmp0 mlnt0 fpkt0 mlll0 mtls0 fjlm0 mbpm0 mklt0 fnlp0 mcmj0
mjdh0 fmgd0 mgrt0 mnjm0 fdhc0 mjln0 mpam0 fmld0""".upper().split()
)
SPLITS = ("train", "val", "test")

FIXTURE_HINT = (
    "no TIMIT at hand? `momentumrnn make-fixture DIR` writes a small "
    "synthetic corpus in the LDC layout (or set task.fixture: true)"
)


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/momentumrnn`` (``~/.cache/momentumrnn`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "momentumrnn"


# ---------------------------------------------------------------------------------------------
# the corpus in the LDC layout


@dataclass(frozen=True)
class Utterance:
    split: str  # train, val, test
    speaker: str  # FCJF0
    name: str  # SX307
    path: Path
    rel: str  # path relative to the corpus root, as found (TRAIN/DR1/FCJF0/SX307.WAV)


def _child(d: Path, name: str) -> Path | None:
    try:
        for p in d.iterdir():
            if p.name.lower() == name.lower() and p.is_dir():
                return p
    except OSError:
        return None
    return None


def timit_root(directory: Any) -> Path:
    """The folder holding TRAIN/ and TEST/ (any case); also accepts its parent (``TIMIT/TIMIT``,
    ``data/``)."""
    d = Path(os.path.expanduser(str(directory)))
    if not d.is_dir():
        raise ToolkitError(
            f"task.data_dir {str(directory)!r} is not a directory; give the TIMIT folder that holds "
            f"TRAIN/ and TEST/ (or the authors' training.pt, val.pt, test.pt); {FIXTURE_HINT}"
        )
    for cand in (d, _child(d, "timit"), _child(d, "data")):
        if cand is not None and _child(cand, "train") is not None and _child(cand, "test") is not None:
            return cand
    raise ToolkitError(
        f"{d} holds neither TIMIT's TRAIN/ and TEST/ folders (LDC layout, e.g. "
        "TRAIN/DR1/FCJF0/SX307.WAV) nor the authors' preprocessed training.pt, val.pt, test.pt; "
        f"point task.data_dir at one of them; {FIXTURE_HINT}"
    )


def scan_timit(directory: Any, *, authors_train_filter: bool = False) -> dict[str, list[Utterance]]:
    """The utterances of each split (sorted by path). SA sentences are left out; ``val`` = the
    core-test speakers, ``test`` = the development-set speakers, other TEST speakers are unused.
    A file is any ``*.wav`` (any case; ``SX307.WAV.wav`` copies of ``SX307.WAV`` count once)."""
    root = timit_root(directory)
    out: dict[str, list[Utterance]] = {s: [] for s in SPLITS}
    seen: dict[tuple, Utterance] = {}
    found = 0
    for part in ("train", "test"):
        base = cast(Path, _child(root, part))  # (timit_root found both)
        for p in sorted(base.rglob("*")):
            if not p.name.lower().endswith(".wav") or not p.is_file():
                continue
            found += 1
            speaker, name = p.parent.name.upper(), p.name.split(".")[0].upper()
            if name.startswith("SA"):
                continue
            rel = p.relative_to(root).as_posix()
            if part == "train":
                if authors_train_filter and "sa" in rel.lower():
                    continue  # the authors' `'sa' in path.lower()` test drops speakers like FSAH0 too
                split = "train"
            elif speaker in CORE_TEST_SPEAKERS:
                split = "val"
            elif speaker in DEV_SPEAKERS:
                split = "test"
            else:
                continue
            key = (split, speaker, name)
            if key in seen and len(seen[key].path.name) <= len(p.name):
                continue  # SX307.WAV wins over its converted copy SX307.WAV.wav
            seen[key] = Utterance(split, speaker, name, p, rel)
    if found == 0:
        raise ToolkitError(
            f"no .WAV files under {root}/TRAIN and {root}/TEST; the LDC layout is "
            f"TRAIN/DR1/FCJF0/SX307.WAV; {FIXTURE_HINT}"
        )
    for u in sorted(seen.values(), key=lambda u: u.rel):
        out[u.split].append(u)
    for split, what in (
        ("train", "TRAIN (SA sentences excluded)"),
        ("val", "TEST from the 24 core-test speakers (MDAB0, FELC0, ...)"),
        ("test", "TEST from the 50 development-set speakers (FAKS0, MGWT0, ...)"),
    ):
        if not out[split]:
            raise ToolkitError(
                f"{root}: the {split} split is empty: no utterance in {what}; is this the full "
                f"TIMIT corpus in the LDC layout? {FIXTURE_HINT}"
            )
    return out


# ---------------------------------------------------------------------------------------------
# preprocessing with a cache


@dataclass
class Frames:
    """The frames of one split without padding: ``data (sum(lengths), C)``, ``lengths (n,)``."""

    data: torch.Tensor
    lengths: torch.Tensor
    ids: list

    def head(self, n: int | None) -> Frames:
        if n is None or n >= len(self.lengths):
            return self
        stop = int(self.lengths[:n].sum())
        return Frames(self.data[:stop], self.lengths[:n], self.ids[:n])

    def keep(self, mask: torch.Tensor) -> Frames:
        if bool(mask.all()):
            return self
        rows = torch.repeat_interleave(mask, self.lengths)
        return Frames(self.data[rows], self.lengths[mask], [i for i, k in zip(self.ids, mask.tolist()) if k])


def _cache_key(utts: dict[str, list[Utterance]]) -> str:
    items = []
    for split in SPLITS:
        for u in utts[split]:
            st = u.path.stat()
            items.append([split, u.rel, st.st_size, st.st_mtime_ns])
    params = {"version": PREP_VERSION, "rate": RATE, "n_fft": N_FFT, "hop": HOP, "floor": LOG_FLOOR}
    blob = json.dumps({"params": params, "files": items}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def _load_cache(path: Path, key: str) -> dict[str, Frames] | None:
    try:
        with np.load(path, allow_pickle=False) as d:
            if str(d["key"]) != key:
                return None
            out = {}
            for s in SPLITS:
                data, lengths = np.asarray(d[f"{s}_frames"]), np.asarray(d[f"{s}_lengths"])
                if data.ndim != 2 or data.shape[1] != BINS or lengths.sum() != data.shape[0]:
                    return None
                out[s] = Frames(
                    torch.from_numpy(data.astype(np.float32)),
                    torch.from_numpy(lengths.astype(np.int64)),
                    [str(i) for i in d[f"{s}_ids"]],
                )
            return out
    except Exception:
        return None


def load_raw(
    directory: Any,
    *,
    cache_dir: Any | None = None,
    authors_train_filter: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, Frames]:
    """The preprocessed frames (dB, not normalised) of every split of a raw TIMIT folder, from the
    cache when it is up to date (else computed and cached)."""
    utts = scan_timit(directory, authors_train_filter=authors_train_filter)
    key = _cache_key(utts)
    cdir = Path(os.path.expanduser(str(cache_dir))) if cache_dir else cache_root() / "timit"
    path = cdir / f"timit-{key}.npz"
    if path.exists():
        cached = _load_cache(path, key)
        if cached is not None:
            return cached
        if log:
            log(f"note: {path} is corrupt or stale; recomputing it")
    total = sum(len(v) for v in utts.values())
    if log:
        log(f"preprocessing {total} TIMIT utterances (once; cached in {cdir})")
    out: dict[str, Frames] = {}
    for s in SPLITS:
        feats = [preprocess(*read_audio(u.path)) for u in utts[s]]
        lengths = torch.tensor([f.shape[0] for f in feats], dtype=torch.int64)
        out[s] = Frames(torch.from_numpy(np.concatenate(feats)), lengths, [f"{u.speaker}_{u.name}" for u in utts[s]])
    arrays: dict[str, Any] = {"key": np.array(key)}  # (Any: numpy's savez types **kwargs against allow_pickle)
    for s in SPLITS:
        arrays[f"{s}_frames"] = out[s].data.numpy()
        arrays[f"{s}_lengths"] = out[s].lengths.numpy()
        arrays[f"{s}_ids"] = np.array(out[s].ids, dtype=str)
    try:
        atomic_write(path, lambda f: np.savez(f, **arrays))
    except OSError as e:
        if log:
            log(f"note: cannot write the cache {path} ({e.strerror or e}); set task.cache_dir to a writable folder")
    return out


# ---------------------------------------------------------------------------------------------
# the authors' preprocessed tensors

TENSOR_FILES = {"train": "training.pt", "val": "val.pt", "test": "test.pt"}
NPY_FILES = {
    "train": ("train_x.npy", "train_z.npy", "lens_train.npy"),
    "val": ("eval_x.npy", "eval_z.npy", "lens_eval.npy"),
    "test": ("test_x.npy", "test_z.npy", "lens_test.npy"),
}


def tensor_layout(d: Path) -> str | None:
    """``"pt"`` (training.pt, ...), ``"npy"`` (train_x.npy, ...) or None."""
    if any((d / f).exists() for f in TENSOR_FILES.values()):
        return "pt"
    if any((d / f).exists() for names in NPY_FILES.values() for f in names):
        return "npy"
    return None


def _check_triple(x: Any, y: Any, lens: Any, *, origin: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    fix = (
        "re-create it (expRNN's README: timit_prediction.py, then torch.save((x, y, lens))) or point "
        "task.data_dir at the raw TIMIT folders"
    )
    if not all(isinstance(t, torch.Tensor) for t in (x, y, lens)):
        raise ToolkitError(f"{origin} must hold three tensors (x, y, lengths); {fix}")
    if x.ndim != 3 or x.shape[-1] != BINS or tuple(y.shape) != tuple(x.shape):
        raise ToolkitError(
            f"{origin}: x and y must both be (N, T, {BINS}), got {tuple(x.shape)} and {tuple(y.shape)}; {fix}"
        )
    if lens.ndim != 1 or lens.shape[0] != x.shape[0] or lens.is_floating_point() or lens.is_complex():
        raise ToolkitError(
            f"{origin}: lengths must be N = {x.shape[0]} integers, got {tuple(lens.shape)} {lens.dtype}; {fix}"
        )
    if x.shape[0] == 0 or int(lens.min()) < 1 or int(lens.max()) > x.shape[1]:
        raise ToolkitError(f"{origin}: lengths must be between 1 and T = {x.shape[1]}; {fix}")
    if not (x.is_floating_point() and y.is_floating_point()):
        raise ToolkitError(f"{origin}: x and y must be floating-point log-spectra; {fix}")
    return x, y, lens.long()


def load_tensor_split(d: Path, split: str, layout: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if layout == "pt":
        path = d / TENSOR_FILES[split]
        if not path.exists():
            raise ToolkitError(
                f"{path} not found: the authors' layout needs {', '.join(TENSOR_FILES.values())} "
                "in one folder (expRNN's timit_loader)"
            )
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ToolkitError(
                f"{path} is corrupt or not a torch.save-d (x, y, lengths) tuple "
                f"({type(e).__name__}); re-create it (expRNN's README) or point task.data_dir at "
                "the raw TIMIT folders"
            ) from None
        if not isinstance(obj, (tuple, list)) or len(obj) != 3:
            raise ToolkitError(
                f"{path} must hold a tuple (x, y, lengths) as expRNN's TIMIT loader reads it; "
                "re-create it (expRNN's README)"
            )
        return _check_triple(*obj, origin=str(path))
    arrays = []
    for name in NPY_FILES[split]:
        path = d / name
        if not path.exists():
            raise ToolkitError(
                f"{path} not found: the .npy layout needs {', '.join(NPY_FILES[split])} for the "
                f"{split} split (the files of expRNN's README)"
            )
        try:
            arrays.append(torch.from_numpy(np.load(path, allow_pickle=False)))
        except Exception as e:
            raise ToolkitError(
                f"{path} is corrupt or not a .npy array ({type(e).__name__}); re-create it or "
                "point task.data_dir at the raw TIMIT folders"
            ) from None
    return _check_triple(*arrays, origin=f"{d}/{NPY_FILES[split][0]}")


def _unpad(t: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
    mask = torch.arange(t.shape[1])[None, :] < lens[:, None]
    return t[mask].float()


# ---------------------------------------------------------------------------------------------
# in-memory store: utterances without padding, indexed like a padded tensor


class FrameStore:
    """One split: frames of all utterances back to back (``data (sum(lengths), C)``), indexed like
    a tensor of shape ``(n, T, C + 1)``: ``store[idx]`` pads the selected utterances to their longest
    one (not the split's) and appends the valid-frame mask as the last channel."""

    def __init__(self, data: torch.Tensor, lengths: torch.Tensor):
        self.data = data.contiguous()
        self.lengths = lengths.long()
        self.offsets = torch.cumsum(self.lengths, 0) - self.lengths

    @property
    def shape(self) -> tuple[int, int, int]:
        T = int(self.lengths.max()) if len(self.lengths) else 0
        return (len(self.lengths), T, self.data.shape[1] + 1)

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, index: Any) -> torch.Tensor:
        n = len(self.lengths)
        single = isinstance(index, int)
        if single:
            rows = torch.tensor([index])
        elif isinstance(index, slice):
            rows = torch.arange(*index.indices(n))
        else:
            rows = torch.as_tensor(index, dtype=torch.int64).reshape(-1)
        if rows.numel() and (int(rows.min()) < -n or int(rows.max()) >= n):
            raise IndexError(f"index out of range for {n} utterances")
        rows = rows % max(n, 1)
        lens = self.lengths[rows]
        T = max(int(lens.max()), 1) if rows.numel() else 1
        t = torch.arange(T)
        valid = t[None, :] < lens[:, None]
        src = (self.offsets[rows][:, None] + t[None, :]).clamp(max=max(self.data.shape[0] - 1, 0))
        out = torch.zeros(rows.numel(), T, self.data.shape[1] + 1)
        out[..., :-1] = torch.where(valid[..., None], self.data[src], 0.0)
        out[..., -1] = valid.float()
        return out[0] if single else out
