"""TIMIT next-frame prediction (the speech benchmark of the orthogonal-RNN papers and MomentumRNN).

Each utterance becomes a sequence of 129 log-magnitude STFT bins per frame; the model reads the
frames ``0..t`` and predicts frame ``t + 1`` (a linear head on every step); the loss is the squared
error over the valid (unpadded) frames, averaged over the 129 bins. Two sources:

* **raw TIMIT** in the LDC layout (``TRAIN/DR1/FCJF0/SX307.WAV``: NIST SPHERE files, read by our own
  parser; RIFF WAV files are accepted too), preprocessed here: 16 kHz -> 8 kHz (Kaiser-windowed
  sinc low-pass, cut-off 3.68 kHz, more than 80 dB down from 4.02 kHz on), frames of 256 samples (32 ms)
  with a periodic Hann window and 50 % overlap (hop 128), 129 bins of ``10 log10(|X|^2 + 1e-5)``
  (dB, samples scaled to [-1, 1)). That is the log-magnitude of Wisdom et al.'s
  ``timit_prediction.py`` (``data_transform=logmag``), which produced the tensors the expRNN and
  MomentumRNN authors trained on, so both sources share one scale; the ``1e-5`` floor (-50 dB)
  keeps digital silence finite, where ``log |X|`` would be -inf and ``log(1 + |X|)`` would be
  nearly linear (not logarithmic) for the small magnitudes of quiet frames.
  Splits (the authors' ``timit_trainNoSA_dev_coreTest``): ``train`` = every TRAIN utterance but
  the SA sentences (3696; the papers report 3640, see ``authors_train_filter``), ``test`` = the 400
  SI/SX utterances of the 50 speakers of the standard development set, ``val`` = the 192 SI/SX
  utterances of the 24 core-test speakers (the authors' names: their 400-utterance "test" file is
  the development set and their 192-utterance "validation" file is the core test set).
  Preprocessing is cached (``task.cache_dir``, default ``~/.cache/momentumrnn/timit``; written
  atomically, keyed by the file list, sizes and times and the preprocessing settings).
* **the authors' preprocessed tensors**: ``training.pt``, ``val.pt``, ``test.pt`` as read by
  expRNN's ``timit_loader.TIMIT`` (each a ``torch.save``-d tuple ``(x, y, lengths)``, ``x`` and ``y``
  padded ``(N, T, 129)``), or the ``.npy`` files they are made from (``train_x.npy``,
  ``train_z.npy``, ``lens_train.npy``, ``eval_*``, ``test_*``; MomentumRNN's
  ``make_timit_data4loader.py``). ``y`` (``*_z.npy``) holds the frames; ``x`` holds the targets of
  Wisdom's script (the frames one step ahead). The authors' loop feeds ``x`` and scores the output
  against ``y``, i.e. it reproduces frame ``t`` after having read frame ``t + 1``: ``pairing:
  stored`` does exactly that (to compare with their numbers), the default ``pairing:
  next_frame`` predicts ``y[t + 1]`` from ``y[<= t]``, the task as described in the papers.

Normalisation (``normalize: true``, default): per-bin mean and standard deviation of the valid
frames of the training split, applied to every split (inputs and targets); the MSE is then in
units of those standard deviations. ``normalize: false`` keeps dB (the authors' tensors are not
normalised: their MSEs are in dB^2).

Loss weighting: every valid frame of the split weighs ``1 / (B * Lbar)`` in a batch of ``B``
utterances, ``Lbar`` being the split's mean number of valid frames per utterance. The test MSE is
therefore exactly the mean over all valid frames (and bins) of the test split, as the authors'
one-batch evaluation; a training batch's loss is its summed frame error over its expected frame
count (every frame of an epoch counts the same; not the batch's own frame mean, which would weigh
frames of batches of short utterances more). Padding never counts and never reaches a valid output
(padding only follows the valid frames and the models are causal; bidirectional layers would see
the future and must not be used here).

No TIMIT at hand: ``python -m momentumrnn.toolkit.speech make-fixture DIR`` writes a small synthetic
corpus in both layouts (the tests use it), and ``task.fixture: true`` makes one automatically.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import struct
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .config import Opt
from .errors import ToolkitError
from .runfiles import atomic_write
from .tasks import Split, Task, register

RATE = 8000                 # Hz, after resampling
N_FFT = 256                 # 32 ms frames at 8 kHz
HOP = 128                   # 50 % overlap
BINS = N_FFT // 2 + 1       # 129
LOG_FLOOR = 1e-5            # 10 log10(|X|^2 + 1e-5): -50 dB floor
PAD_DB = 10.0 * math.log10(LOG_FLOOR)
PREP_VERSION = 1            # bump when the preprocessing changes (invalidates caches)
FIXTURE_VERSION = 1

#: the 50 speakers of the standard TIMIT development set (Halberstadt; Kaldi's conf/dev_spk.list)
DEV_SPEAKERS = frozenset("""
faks0 fdac1 fjem0 mgwt0 mjar0 mmdb1 mmdm2 mpdf0 fcmh0 fkms0 mbdg0 mbwm0 mcsh0 fadg0 fdms0 fedw0
mgjf0 mglb0 mrtk0 mtaa0 mtdt0 mthc0 mwjg0 fnmr0 frew0 fsem0 mbns0 mmjr0 mdls0 mdlf0 mdvc0 mers0
fmah0 fdrw0 mrcs0 mrjm4 fcal1 mmwh0 fjsj0 majc0 mjsw0 mreb0 fgjd0 fjmg0 mroa0 mteb0 mjfc0 mrjr0
fmml0 mrws1""".upper().split())
#: the 24 speakers of the TIMIT core test set
CORE_TEST_SPEAKERS = frozenset("""
mdab0 mwbt0 felc0 mtas1 mwew0 fpas0 mjmp0 mlnt0 fpkt0 mlll0 mtls0 fjlm0 mbpm0 mklt0 fnlp0 mcmj0
mjdh0 fmgd0 mgrt0 mnjm0 fdhc0 mjln0 mpam0 fmld0""".upper().split())
SPLITS = ("train", "val", "test")

FIXTURE_HINT = ("no TIMIT at hand? `python -m momentumrnn.toolkit.speech make-fixture DIR` writes a small "
                "synthetic corpus in the LDC layout (or set task.fixture: true)")


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/momentumrnn`` (``~/.cache/momentumrnn`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "momentumrnn"


# ---------------------------------------------------------------------------------------------
# audio files: NIST SPHERE (TIMIT's .WAV) and RIFF WAV, 16-bit PCM

def _read_bytes(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ToolkitError(f"cannot read {path} ({e.strerror or e}); check the file or restore it from "
                           "the TIMIT distribution") from None


def parse_sphere(data: bytes, path: Any = "<bytes>") -> tuple[np.ndarray, int]:
    """A NIST SPHERE file (``NIST_1A`` header, usually 1024 bytes, then 16-bit PCM samples) as
    ``(samples in [-1, 1) float64, mono, sample rate)``."""
    fix = "restore the file from the TIMIT distribution"
    if not data.startswith(b"NIST_1A"):
        raise ToolkitError(f"{path} is not a NIST SPHERE file (no NIST_1A header); {fix}")
    parts = data.split(b"\n", 2)
    try:
        size = int(parts[1].strip())
    except (IndexError, ValueError):
        raise ToolkitError(f"{path}: truncated or corrupt SPHERE header (no header size); {fix}") from None
    if size < 16 or len(data) < size:
        raise ToolkitError(f"{path}: truncated SPHERE header ({len(data)} bytes, the header announces {size}); {fix}")
    header = data[:size].decode("latin-1")
    if "end_head" not in header:
        raise ToolkitError(f"{path}: truncated or corrupt SPHERE header (no end_head); {fix}")
    fields: dict[str, Any] = {}
    for line in header.split("end_head", 1)[0].splitlines()[2:]:
        bits = line.split(None, 2)
        if len(bits) < 3:
            continue
        name, kind, value = bits
        try:
            if kind == "-i":
                fields[name] = int(value)
            elif kind == "-r":
                fields[name] = float(value)
            elif kind.startswith("-s"):
                fields[name] = value[: int(kind[2:])] if kind[2:].isdigit() else value
        except ValueError:
            raise ToolkitError(f"{path}: corrupt SPHERE header field {name!r} ({value!r}); {fix}") from None
    rate = fields.get("sample_rate")
    if not isinstance(rate, int) or rate <= 0:
        raise ToolkitError(f"{path}: the SPHERE header has no valid sample_rate; {fix}")
    coding = str(fields.get("sample_coding", "pcm")).strip().lower()
    convert = (f"convert it to 16-bit PCM first (e.g. `sph2pipe -f wav {Path(str(path)).name} out.wav` or sox) "
               "or use the uncompressed LDC release")
    if not coding.startswith("pcm") or any(w in coding for w in ("shorten", "wavpack", "shortpack")):
        raise ToolkitError(f"{path}: SPHERE sample_coding {coding!r} is not supported (compressed or non-PCM "
                           f"audio); {convert}")
    width = fields.get("sample_n_bytes", 2)
    if width != 2:
        raise ToolkitError(f"{path}: {width}-byte samples (sample_n_bytes); only 16-bit PCM is supported; {convert}")
    order = str(fields.get("sample_byte_format", "01")).strip()
    if order not in ("01", "10"):
        raise ToolkitError(f"{path}: unsupported SPHERE sample_byte_format {order!r} (expected 01 or 10); {convert}")
    channels = fields.get("channel_count", 1)
    if not isinstance(channels, int) or channels < 1:
        raise ToolkitError(f"{path}: bad SPHERE channel_count {channels!r}; {fix}")
    body = data[size:]
    frame_bytes = 2 * channels
    count = fields.get("sample_count")
    if count is None:
        count = len(body) // frame_bytes
    if not isinstance(count, int) or count < 0:
        raise ToolkitError(f"{path}: bad SPHERE sample_count {count!r}; {fix}")
    if len(body) < count * frame_bytes:
        raise ToolkitError(f"{path} is truncated: its header announces {count} samples, the file holds "
                           f"{len(body) // frame_bytes}; {fix}")
    dtype = np.dtype("<i2" if order == "01" else ">i2")
    pcm = np.frombuffer(body, dtype=dtype, count=count * channels).astype(np.float64) / 32768.0
    return pcm.reshape(-1, channels).mean(axis=1), rate


def parse_riff(data: bytes, path: Any = "<bytes>") -> tuple[np.ndarray, int]:
    """A RIFF WAV file with 16-bit PCM samples as ``(samples in [-1, 1) float64, mono, rate)``."""
    fix = "convert it to 16-bit PCM WAV (e.g. with sox) or restore it"
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ToolkitError(f"{path} is not a RIFF WAV file; {fix}")
    pos, fmt, pcm = 12, None, None
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        body = data[pos + 8:pos + 8 + size]
        if cid == b"fmt ":
            if len(body) < 16:
                raise ToolkitError(f"{path}: truncated WAV fmt chunk; {fix}")
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
            if tag == 0xFFFE and len(body) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the sub-format's first two bytes
                tag = int.from_bytes(body[24:26], "little")
            fmt = (tag, channels, rate, bits)
        elif cid == b"data":
            if len(body) < size:
                raise ToolkitError(f"{path} is truncated: its data chunk announces {size} bytes, the file holds "
                                   f"{len(body)}; restore it")
            pcm = body
        pos += 8 + size + (size & 1)
    if fmt is None or pcm is None:
        raise ToolkitError(f"{path}: WAV file without {'fmt' if fmt is None else 'data'} chunk (truncated or "
                           f"corrupt); {fix}")
    tag, channels, rate, bits = fmt
    if tag != 1 or bits != 16:
        what = "floating-point" if tag == 3 else f"{bits}-bit" if tag == 1 else f"format tag {tag}"
        raise ToolkitError(f"{path}: {what} WAV samples; only 16-bit PCM is supported; {fix}")
    if channels < 1 or rate <= 0:
        raise ToolkitError(f"{path}: bad WAV header ({channels} channels, {rate} Hz); {fix}")
    n = len(pcm) // (2 * channels)
    x = np.frombuffer(pcm, dtype="<i2", count=n * channels).astype(np.float64) / 32768.0
    return x.reshape(-1, channels).mean(axis=1), rate


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """A SPHERE or RIFF WAV file (told apart by content, not by name) as mono samples and rate."""
    data = _read_bytes(path)
    if data.startswith(b"NIST_1A"):
        return parse_sphere(data, path)
    if data.startswith(b"RIFF"):
        return parse_riff(data, path)
    if len(data) < 8:
        raise ToolkitError(f"{path} is empty or truncated (not a SPHERE or WAV file); restore it")
    raise ToolkitError(f"{path} is neither a NIST SPHERE nor a RIFF WAV file; restore it from the TIMIT "
                       "distribution")


# ---------------------------------------------------------------------------------------------
# signal processing (numpy / torch only)

def resample(x: np.ndarray, orig: int, new: int, *, zeros: int = 32, rolloff: float = 0.92,
             beta: float = 8.6) -> np.ndarray:
    """Band-limited resampling by ``new / orig`` (rational): zero-stuffing by ``L``, a Kaiser-windowed
    sinc low-pass at ``rolloff * min(orig, new) / 2`` (``zeros`` zero crossings of the lower rate on
    each side, Kaiser ``beta`` 8.6: about 85 dB of stop-band attenuation), keeping every ``M``-th
    sample. 16 kHz -> 8 kHz: a 129-tap filter, cut-off 3.68 kHz, pass band to about 3.35 kHz, stop
    band (more than 80 dB down) from about 4.02 kHz: nothing folds back into the pass band. Output sample ``j`` is at
    time ``j / new``; the length is ``ceil(len(x) * new / orig)``."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if orig <= 0 or new <= 0:
        raise ValueError(f"sample rates must be positive, got {orig} and {new}")
    if orig == new or x.size == 0:
        return x.copy()
    g = math.gcd(int(orig), int(new))
    L, M = int(new) // g, int(orig) // g
    up = orig * L
    low = min(orig, new)
    fc = rolloff * low / 2 / up                                  # cycles per upsampled sample
    half = int(math.ceil(zeros * up / low))
    n = np.arange(-half, half + 1, dtype=np.float64)
    h = 2 * fc * np.sinc(2 * fc * n) * np.kaiser(2 * half + 1, beta) * L
    if L == 1:  # integer decimation (16 -> 8 kHz): a direct convolution, every M-th output kept
        return np.convolve(x, h)[half: half + x.size: M]
    u = torch.zeros(1, 1, x.size * L, dtype=torch.float64)
    u[0, 0, ::L] = torch.from_numpy(x)
    y = F.conv1d(u, torch.from_numpy(h).view(1, 1, -1), padding=half, stride=M)
    return y.view(-1).numpy()


def hann(n: int = N_FFT) -> np.ndarray:
    """The periodic Hann window (``scipy.signal.hann(n, sym=False)``): ``0.5 - 0.5 cos(2 pi k / n)``."""
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)


def frame_count(n_samples: int, n_fft: int = N_FFT, hop: int = HOP) -> int:
    """Frames of ``n_fft`` samples every ``hop`` samples, the last one zero-padded (at least 1)."""
    if n_samples <= n_fft:
        return 1
    return 1 + -(-(n_samples - n_fft) // hop)


def stft(x: np.ndarray, n_fft: int = N_FFT, hop: int = HOP) -> np.ndarray:
    """Short-time Fourier transform ``(frames, n_fft // 2 + 1)``: frame ``m`` is
    ``x[m hop : m hop + n_fft]`` (zero-padded at the end) times the periodic Hann window;
    ``X[m, k] = sum_n w[n] x[m hop + n] exp(-2 pi i k n / n_fft)`` (no centring, no edge padding)."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    frames = frame_count(x.size, n_fft, hop)
    padded = np.zeros((frames - 1) * hop + n_fft)
    padded[: x.size] = x
    idx = np.arange(frames)[:, None] * hop + np.arange(n_fft)[None, :]
    return np.fft.rfft(padded[idx] * hann(n_fft), axis=1)


def log_magnitude(spec: np.ndarray) -> np.ndarray:
    """``10 log10(|X|^2 + 1e-5)`` (dB, -50 dB floor) as float32."""
    return (10.0 * np.log10(np.abs(spec) ** 2 + LOG_FLOOR)).astype(np.float32)


def preprocess(samples: np.ndarray, rate: int) -> np.ndarray:
    """Samples at any rate -> ``(frames, 129)`` log-magnitude frames at 8 kHz."""
    return log_magnitude(stft(resample(samples, rate, RATE)))


# ---------------------------------------------------------------------------------------------
# the corpus in the LDC layout

@dataclass(frozen=True)
class Utterance:
    split: str       # train, val, test
    speaker: str     # FCJF0
    name: str        # SX307
    path: Path
    rel: str         # path relative to the corpus root, as found (TRAIN/DR1/FCJF0/SX307.WAV)


def _child(d: Path, name: str) -> Optional[Path]:
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
        raise ToolkitError(f"task.data_dir {str(directory)!r} is not a directory; give the TIMIT folder that holds "
                           f"TRAIN/ and TEST/ (or the authors' training.pt, val.pt, test.pt); {FIXTURE_HINT}")
    for cand in (d, _child(d, "timit"), _child(d, "data")):
        if cand is not None and _child(cand, "train") is not None and _child(cand, "test") is not None:
            return cand
    raise ToolkitError(f"{d} holds neither TIMIT's TRAIN/ and TEST/ folders (LDC layout, e.g. "
                       "TRAIN/DR1/FCJF0/SX307.WAV) nor the authors' preprocessed training.pt, val.pt, test.pt; "
                       f"point task.data_dir at one of them; {FIXTURE_HINT}")


def scan_timit(directory: Any, *, authors_train_filter: bool = False) -> dict[str, list[Utterance]]:
    """The utterances of each split (sorted by path). SA sentences are left out; ``val`` = the
    core-test speakers, ``test`` = the development-set speakers, other TEST speakers are unused.
    A file is any ``*.wav`` (any case; ``SX307.WAV.wav`` copies of ``SX307.WAV`` count once)."""
    root = timit_root(directory)
    out: dict[str, list[Utterance]] = {s: [] for s in SPLITS}
    seen: dict[tuple, Utterance] = {}
    found = 0
    for part in ("train", "test"):
        base = _child(root, part)
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
        raise ToolkitError(f"no .WAV files under {root}/TRAIN and {root}/TEST; the LDC layout is "
                           f"TRAIN/DR1/FCJF0/SX307.WAV; {FIXTURE_HINT}")
    for u in sorted(seen.values(), key=lambda u: u.rel):
        out[u.split].append(u)
    for split, what in (("train", "TRAIN (SA sentences excluded)"),
                        ("val", "TEST from the 24 core-test speakers (MDAB0, FELC0, ...)"),
                        ("test", "TEST from the 50 development-set speakers (FAKS0, MGWT0, ...)")):
        if not out[split]:
            raise ToolkitError(f"{root}: the {split} split is empty: no utterance in {what}; is this the full "
                               f"TIMIT corpus in the LDC layout? {FIXTURE_HINT}")
    return out


# ---------------------------------------------------------------------------------------------
# preprocessing with a cache

@dataclass
class Frames:
    """The frames of one split without padding: ``data (sum(lengths), C)``, ``lengths (n,)``."""

    data: torch.Tensor
    lengths: torch.Tensor
    ids: list

    def head(self, n: Optional[int]) -> "Frames":
        if n is None or n >= len(self.lengths):
            return self
        stop = int(self.lengths[:n].sum())
        return Frames(self.data[:stop], self.lengths[:n], self.ids[:n])

    def keep(self, mask: torch.Tensor) -> "Frames":
        if bool(mask.all()):
            return self
        rows = torch.repeat_interleave(mask, self.lengths)
        return Frames(self.data[rows], self.lengths[mask],
                      [i for i, k in zip(self.ids, mask.tolist()) if k])


def _cache_key(utts: dict[str, list[Utterance]]) -> str:
    items = []
    for split in SPLITS:
        for u in utts[split]:
            st = u.path.stat()
            items.append([split, u.rel, st.st_size, st.st_mtime_ns])
    params = {"version": PREP_VERSION, "rate": RATE, "n_fft": N_FFT, "hop": HOP, "floor": LOG_FLOOR}
    blob = json.dumps({"params": params, "files": items}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def _load_cache(path: Path, key: str) -> Optional[dict[str, Frames]]:
    try:
        with np.load(path, allow_pickle=False) as d:
            if str(d["key"]) != key:
                return None
            out = {}
            for s in SPLITS:
                data, lengths = np.asarray(d[f"{s}_frames"]), np.asarray(d[f"{s}_lengths"])
                if data.ndim != 2 or data.shape[1] != BINS or lengths.sum() != data.shape[0]:
                    return None
                out[s] = Frames(torch.from_numpy(data.astype(np.float32)), torch.from_numpy(lengths.astype(np.int64)),
                                [str(i) for i in d[f"{s}_ids"]])
            return out
    except Exception:
        return None


def load_raw(directory: Any, *, cache_dir: Optional[Any] = None, authors_train_filter: bool = False,
             log=None) -> dict[str, Frames]:
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
    arrays = {"key": np.array(key)}
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
NPY_FILES = {"train": ("train_x.npy", "train_z.npy", "lens_train.npy"),
             "val": ("eval_x.npy", "eval_z.npy", "lens_eval.npy"),
             "test": ("test_x.npy", "test_z.npy", "lens_test.npy")}


def tensor_layout(d: Path) -> Optional[str]:
    """``"pt"`` (training.pt, ...), ``"npy"`` (train_x.npy, ...) or None."""
    if any((d / f).exists() for f in TENSOR_FILES.values()):
        return "pt"
    if any((d / f).exists() for names in NPY_FILES.values() for f in names):
        return "npy"
    return None


def _check_triple(x: Any, y: Any, lens: Any, origin: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    fix = ("re-create it (expRNN's README: timit_prediction.py, then torch.save((x, y, lens))) or point "
           "task.data_dir at the raw TIMIT folders")
    if not all(isinstance(t, torch.Tensor) for t in (x, y, lens)):
        raise ToolkitError(f"{origin} must hold three tensors (x, y, lengths); {fix}")
    if x.ndim != 3 or x.shape[-1] != BINS or tuple(y.shape) != tuple(x.shape):
        raise ToolkitError(f"{origin}: x and y must both be (N, T, {BINS}), got {tuple(x.shape)} and "
                           f"{tuple(y.shape)}; {fix}")
    if lens.ndim != 1 or lens.shape[0] != x.shape[0] or lens.is_floating_point() or lens.is_complex():
        raise ToolkitError(f"{origin}: lengths must be N = {x.shape[0]} integers, got {tuple(lens.shape)} "
                           f"{lens.dtype}; {fix}")
    if x.shape[0] == 0 or int(lens.min()) < 1 or int(lens.max()) > x.shape[1]:
        raise ToolkitError(f"{origin}: lengths must be between 1 and T = {x.shape[1]}; {fix}")
    if not (x.is_floating_point() and y.is_floating_point()):
        raise ToolkitError(f"{origin}: x and y must be floating-point log-spectra; {fix}")
    return x, y, lens.long()


def load_tensor_split(d: Path, split: str, layout: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if layout == "pt":
        path = d / TENSOR_FILES[split]
        if not path.exists():
            raise ToolkitError(f"{path} not found: the authors' layout needs {', '.join(TENSOR_FILES.values())} "
                               "in one folder (expRNN's timit_loader)")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ToolkitError(f"{path} is corrupt or not a torch.save-d (x, y, lengths) tuple "
                               f"({type(e).__name__}); re-create it (expRNN's README) or point task.data_dir at "
                               "the raw TIMIT folders") from None
        if not isinstance(obj, (tuple, list)) or len(obj) != 3:
            raise ToolkitError(f"{path} must hold a tuple (x, y, lengths) as expRNN's TIMIT loader reads it; "
                               "re-create it (expRNN's README)")
        return _check_triple(*obj, origin=str(path))
    arrays = []
    for name in NPY_FILES[split]:
        path = d / name
        if not path.exists():
            raise ToolkitError(f"{path} not found: the .npy layout needs {', '.join(NPY_FILES[split])} for the "
                               f"{split} split (the files of expRNN's README)")
        try:
            arrays.append(torch.from_numpy(np.load(path, allow_pickle=False)))
        except Exception as e:
            raise ToolkitError(f"{path} is corrupt or not a .npy array ({type(e).__name__}); re-create it or "
                               "point task.data_dir at the raw TIMIT folders") from None
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


# ---------------------------------------------------------------------------------------------
# the task

@register
class TIMITTask(Task):
    name = "timit"
    summary = ("TIMIT next-frame prediction: 129 log-magnitude STFT bins (8 kHz, 256-point Hann frames, 50% "
               "overlap), predict frame t+1 from frames <= t; MSE over valid frames (lower is better); raw LDC "
               "TIMIT or the authors' training.pt/val.pt/test.pt (licensed data: task.fixture for a synthetic one)")
    kind = "regression"
    input_size = BINS
    num_outputs = BINS
    metric = "loss"
    default_target = None
    options = {
        "data_dir": Opt("str", None, "TIMIT folder (TRAIN/ and TEST/, LDC layout) or the folder of the authors' "
                        "training.pt, val.pt, test.pt (or train_x.npy, ...)", nullable=True),
        "fixture": Opt("bool", False, "with data_dir null: a small synthetic corpus in TIMIT's layout, generated "
                       "once into the cache (to try the pipeline without TIMIT)"),
        "format": Opt("choice", "auto", "auto, raw (LDC .WAV files) or tensors (the authors' preprocessed files)",
                      choices=("auto", "raw", "tensors")),
        "pairing": Opt("choice", "next_frame", "next_frame: predict y[t+1] from y[<=t]; stored (tensors only): the "
                       "authors' loop, input x scored against y as stored", choices=("next_frame", "stored")),
        "eval_split": Opt("choice", "test", "the evaluated split: test (400 utterances, development-set speakers) "
                          "or val (192, core-test speakers), the authors' names", choices=("test", "val")),
        "normalize": Opt("bool", True, "per-bin mean / std of the training frames applied to all splits "
                         "(false: dB as stored, the scale of the paper's MSEs)"),
        "train_size": Opt("int", None, "use the first N training utterances (null: all)", lo=1, nullable=True),
        "test_size": Opt("int", None, "use the first N evaluated utterances (null: all)", lo=1, nullable=True),
        "authors_train_filter": Opt("bool", False, "raw: drop every training file whose path contains 'sa' (the "
                                    "authors' filter, which also drops speakers like FSAH0: 3640 utterances, "
                                    "not 3696)"),
        "cache_dir": Opt("str", None, "where preprocessed raw TIMIT (and the fixture) are cached (null: "
                         "~/.cache/momentumrnn)", nullable=True),
    }

    def __init__(self, opts: dict):
        super().__init__(opts)
        self.stats: Optional[tuple[torch.Tensor, torch.Tensor]] = None
        self.source = ""
        self.log = lambda msg: print(msg, file=sys.stderr)

    @property
    def stored(self) -> bool:
        return self.opts.get("pairing", "next_frame") == "stored"

    def check_run(self, cfg: dict) -> None:
        if (cfg.get("model") or {}).get("bidirectional"):
            raise ToolkitError("task timit: a bidirectional layer reads the frames it has to predict (its backward "
                               "direction runs from the future); next-frame prediction needs a causal model: remove "
                               "model.bidirectional")

    # -- data ------------------------------------------------------------------------------------
    def _source(self) -> tuple[Path, str]:
        data_dir = self.opts.get("data_dir")
        fmt = self.opts.get("format", "auto")
        if not data_dir:
            if not self.opts.get("fixture"):
                raise ToolkitError("TIMIT is licensed (LDC93S1) and not bundled: set task.data_dir to your copy "
                                   "(TRAIN/ and TEST/, or the authors' training.pt, val.pt, test.pt); to try the "
                                   "pipeline without it set task.fixture: true (a synthetic corpus) or run "
                                   "`python -m momentumrnn.toolkit.speech make-fixture DIR`")
            root = ensure_fixture(self._cache_base())
            return (root / "timit", "raw") if fmt != "tensors" else (root / "tensors", "tensors")
        d = Path(os.path.expanduser(str(data_dir)))
        if not d.is_dir():
            raise ToolkitError(f"task.data_dir {str(data_dir)!r} is not a directory; give the TIMIT folder (TRAIN/ "
                               f"and TEST/) or the folder of the authors' training.pt, val.pt, test.pt; {FIXTURE_HINT}")
        if fmt == "auto":
            fmt = "tensors" if tensor_layout(d) else "raw"
        return d, fmt

    def _cache_base(self) -> Path:
        c = self.opts.get("cache_dir")
        return Path(os.path.expanduser(str(c))) if c else cache_root()

    def _load_frames(self) -> tuple[dict[str, Frames], dict[str, Frames]]:
        """(input frames, target frames) of the splits needed (targets None-equivalent: same)."""
        d, fmt = self._source()
        need = ("train", self.opts.get("eval_split", "test"))
        if fmt == "raw":
            if self.stored:
                raise ToolkitError("task.pairing=stored applies to the authors' preprocessed tensors only; raw "
                                   "TIMIT is always next-frame prediction (pairing: next_frame)")
            cache = self.opts.get("cache_dir")
            frames = load_raw(d, cache_dir=Path(os.path.expanduser(str(cache))) / "timit" if cache else None,
                              authors_train_filter=bool(self.opts.get("authors_train_filter")), log=self.log)
            self.source = f"raw TIMIT in {d}"
            sel = {s: frames[s] for s in need}
            return sel, sel
        layout = tensor_layout(d)
        if layout is None:
            raise ToolkitError(f"{d} holds none of the authors' files ({', '.join(TENSOR_FILES.values())}, or "
                               "train_x.npy, train_z.npy, lens_train.npy, ...); set task.format=raw for the LDC "
                               f"layout; {FIXTURE_HINT}")
        inputs, targets = {}, {}
        for s in need:
            x, y, lens = load_tensor_split(d, s, layout)
            ids = [f"{s}{i}" for i in range(len(lens))]
            targets[s] = Frames(_unpad(y, lens), lens, ids)
            inputs[s] = Frames(_unpad(x, lens), lens, ids) if self.stored else targets[s]
        self.source = f"the authors' tensors in {d} ({layout})"
        return inputs, targets

    def load(self) -> tuple[Split, Split]:
        inputs, targets = self._load_frames()
        ev = self.opts.get("eval_split", "test")
        sizes = {"train": self.opts.get("train_size"), ev: self.opts.get("test_size")}
        for s in inputs:
            inputs[s], targets[s] = inputs[s].head(sizes[s]), targets[s].head(sizes[s])
            keep = targets[s].lengths >= (1 if self.stored else 2)  # next frame: at least one (input, target) pair
            inputs[s], targets[s] = inputs[s].keep(keep), targets[s].keep(keep)
            if not len(targets[s].lengths):
                raise ToolkitError(f"the {s} split of {self.source} has no utterance of at least 2 frames")
        tr = targets["train"].data.double()
        if self.opts.get("normalize", True):
            mean, std = tr.mean(0), tr.std(0, unbiased=False).clamp_min(1e-3)
            self.stats = (mean.float(), std.float())
        return self._split(inputs["train"], targets["train"]), self._split(inputs[ev], targets[ev])

    def _norm(self, data: torch.Tensor) -> torch.Tensor:
        if self.stats is None:
            return data.float()
        mean, std = self.stats
        return (data.float() - mean) / std

    def _split(self, inp: Frames, tgt: Frames) -> Split:
        if self.stored:
            data = torch.cat([self._norm(inp.data), self._norm(tgt.data)], dim=1)
            steps = tgt.lengths.sum()
        else:
            data = self._norm(tgt.data)
            steps = (tgt.lengths - 1).sum()
        n = len(tgt.lengths)
        scale = torch.full((n,), n / float(steps), dtype=torch.float32)  # 1 / (mean valid steps per utterance)
        return Split(FrameStore(data, tgt.lengths), scale)

    # -- model input and targets -----------------------------------------------------------------
    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Padded batch ``(B, T, C + 1)`` -> frames ``0..T-2`` (next frame) or the stored inputs;
        padded steps are zero."""
        valid = x[..., -1:] > 0
        frames = torch.where(valid, x[..., :BINS], 0.0).float()
        return frames if self.stored else frames[:, :-1]

    def targets(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``(B, T', 130)``: the target frames and, last, each step's weight (``1 / Lbar`` on valid
        steps, 0 on padding; ``y`` holds ``1 / Lbar``)."""
        valid = x[..., -1] > 0
        if self.stored:
            tgt, w = x[..., BINS:2 * BINS], valid
        else:
            tgt, w = x[:, 1:, :BINS], valid[:, 1:]
        tgt = torch.where(w[..., None], tgt, 0.0).float()
        weight = w.float() * y.float().reshape(-1, 1)
        return torch.cat([tgt, weight[..., None]], dim=-1)

    def head_input(self, output: torch.Tensor) -> torch.Tensor:
        return output  # a prediction at every step

    def per_sample_loss(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Sum over valid steps of the squared error averaged over the 129 bins, times ``1 / Lbar``."""
        target, weight = y[..., :-1], y[..., -1]
        err = (pred.float() - target).pow(2).mean(-1)
        return torch.where(weight > 0, err * weight, 0.0).sum(1)

    def per_sample_stats(self, pred: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> dict:
        return {"loss": loss.detach()}


def masked_mse(pred: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reference: the mean squared error over the first ``lengths[i]`` steps of each sequence and all
    bins (expRNN's ``masked_loss`` with ``nn.MSELoss``)."""
    mask = torch.arange(pred.shape[1], device=pred.device)[None, :] < lengths[:, None]
    return ((pred - target) ** 2)[mask].mean()


# ---------------------------------------------------------------------------------------------
# the synthetic fixture (same layouts as TIMIT and the authors' tensors)

TRAIN_SPEAKERS = ("DR1/FCJF0", "DR1/MDPK0", "DR1/FSAH0", "DR1/MRCG0", "DR2/FAEM0", "DR2/MTAT0", "DR2/FDXW0",
                  "DR2/MWSB0", "DR3/FALK0", "DR3/MJMM0", "DR3/FCKE0", "DR3/MRTJ0", "DR4/FALR0", "DR4/MTRC0",
                  "DR4/FBAS0", "DR4/MSFH0")
FIXTURE_DEV = ("DR1/FAKS0", "DR4/MGWT0")      # development-set speakers -> "test"
FIXTURE_CORE = ("DR1/MDAB0", "DR1/FELC0")     # core-test speakers -> "val"
FIXTURE_OTHER = ("DR2/MZZZ9",)                # other TEST speakers: unused


def sphere_bytes(samples: np.ndarray, rate: int, *, byte_order: str = "01", utterance: str = "") -> bytes:
    """16-bit PCM samples in a NIST SPHERE file (1024-byte header, as TIMIT's .WAV files)."""
    pcm = np.asarray(samples, dtype=np.int16)
    lines = ["NIST_1A", "   1024", "database_id -s5 TIMIT", "database_version -s3 1.0"]
    if utterance:
        lines.append(f"utterance_id -s{len(utterance)} {utterance}")
    lo, hi = (int(pcm.min()), int(pcm.max())) if pcm.size else (0, 0)
    lines += ["channel_count -i 1", f"sample_count -i {pcm.size}", f"sample_rate -i {rate}",
              f"sample_min -i {lo}", f"sample_max -i {hi}",
              "sample_n_bytes -i 2", f"sample_byte_format -s2 {byte_order}", "sample_sig_bits -i 16", "end_head"]
    header = ("\n".join(lines) + "\n").encode("ascii")
    header += b" " * (1024 - len(header))
    return header + pcm.astype("<i2" if byte_order == "01" else ">i2").tobytes()


def riff_bytes(samples: np.ndarray, rate: int) -> bytes:
    """16-bit PCM mono samples in a RIFF WAV file."""
    pcm = np.asarray(samples, dtype="<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, rate, 2 * rate, 2, 16)
    return (b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(pcm)) + b"WAVE"
            + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(pcm)) + pcm)


def synth_utterance(rng: np.random.Generator, seconds: float, rate: int = 16000) -> np.ndarray:
    """A speech-like int16 signal: voiced segments (harmonics of a gliding pitch shaped by three
    formants), noise bursts with energy up to 7 kHz (fricatives), pauses."""
    n = int(seconds * rate)
    t = np.arange(n) / rate
    out = np.zeros(n)
    pos = int(rng.uniform(0.02, 0.06) * rate)
    while pos < n:
        seg = int(rng.uniform(0.08, 0.25) * rate)
        end = min(n, pos + seg)
        m = end - pos
        env = np.sin(np.pi * np.arange(m) / max(m, 1)) ** 2
        kind = rng.uniform()
        if kind < 0.7:
            f0 = rng.uniform(90, 240) * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(2, 5) * t[pos:end]))
            phase = 2 * np.pi * np.cumsum(f0) / rate
            formants = rng.uniform([250, 900, 2300], [800, 2200, 3200])
            sig = np.zeros(m)
            for k in range(1, int(3800 / f0.mean())):
                amp = sum(np.exp(-0.5 * ((k * f0.mean() - fm) / 120.0) ** 2) for fm in formants) + 0.02
                sig += amp * np.sin(k * phase)
            out[pos:end] += rng.uniform(0.2, 0.6) * env * sig / max(np.abs(sig).max(), 1e-9)
        elif kind < 0.9:
            noise = rng.standard_normal(m)
            hf = np.sin(2 * np.pi * rng.uniform(4500, 7000) * t[pos:end])
            out[pos:end] += rng.uniform(0.02, 0.1) * env * (noise + 2 * hf)
        pos = end + int(rng.uniform(0.0, 0.08) * rate)
    out += 1e-4 * rng.standard_normal(n)
    return np.clip(np.round(out * 32767 * 0.8), -32768, 32767).astype(np.int16)


def make_fixture(directory: Any, *, train_speakers: int = 8, utterances: int = 4, seconds: Sequence[float] = (0.5, 1.2),
                 seed: int = 0, tensors: bool = True) -> dict:
    """Write a small synthetic TIMIT: ``DIR/timit`` in the LDC layout (SPHERE .WAV files at 16 kHz,
    SA1/SA2 plus ``utterances`` SI/SX sentences per speaker; one speaker as RIFF WAV, one as
    big-endian SPHERE, one ``.WAV.wav`` copy; dev-set, core-test and other TEST speakers), and, with
    ``tensors``, ``DIR/tensors/{training,val,test}.pt`` in the authors' layout made from it (x = the
    frames one step ahead, y = the frames, padded with -50 dB). Returns the paths and counts."""
    root = Path(os.path.expanduser(str(directory)))
    if not 1 <= train_speakers <= len(TRAIN_SPEAKERS):
        raise ToolkitError(f"train_speakers must be between 1 and {len(TRAIN_SPEAKERS)}")
    if utterances < 1:
        raise ToolkitError("utterances must be >= 1")
    rng = np.random.Generator(np.random.PCG64(seed))
    corpus = root / "timit"
    written = 0
    plan = [("TRAIN", s) for s in TRAIN_SPEAKERS[:train_speakers]]
    plan += [("TEST", s) for s in FIXTURE_DEV + FIXTURE_CORE + FIXTURE_OTHER]
    for i, (part, spk) in enumerate(plan):
        d = corpus / part / spk
        d.mkdir(parents=True, exist_ok=True)
        names = ["SA1", "SA2"] + [f"{'SI' if j % 2 else 'SX'}{100 + 7 * i + j}" for j in range(utterances)]
        for j, name in enumerate(names):
            pcm = synth_utterance(rng, rng.uniform(*seconds))
            path = d / f"{name}.WAV"
            if part == "TRAIN" and i == 1:
                path.write_bytes(riff_bytes(pcm, 16000))             # a RIFF file named .WAV
            else:
                order = "10" if part == "TRAIN" and i == 2 else "01"     # one big-endian speaker
                uid = f"{spk[4:].lower()}_{name.lower()}"
                path.write_bytes(sphere_bytes(pcm, 16000, byte_order=order, utterance=uid))
            if part == "TRAIN" and i == 0 and j == 2:
                (d / f"{name}.WAV.wav").write_bytes(riff_bytes(pcm, 16000))  # a converted copy: counted once
            written += 1
    out = {"timit": corpus, "files": written}
    if tensors:
        tdir = root / "tensors"
        tdir.mkdir(parents=True, exist_ok=True)
        utts = scan_timit(corpus)
        for split, fname in TENSOR_FILES.items():
            feats = [preprocess(*read_audio(u.path)) for u in utts[split]]
            T = max(f.shape[0] for f in feats)
            y = torch.full((len(feats), T, BINS), PAD_DB)
            x = torch.full((len(feats), T, BINS), PAD_DB)
            for k, f in enumerate(feats):
                y[k, : len(f)] = torch.from_numpy(f)
                x[k, : len(f) - 1] = torch.from_numpy(f[1:])   # Wisdom's targets: the next frame
            lens = torch.tensor([f.shape[0] for f in feats], dtype=torch.long)
            torch.save((x, y, lens), tdir / fname)
        out["tensors"] = tdir
        out["utterances"] = {s: len(v) for s, v in utts.items()}
    return out


def ensure_fixture(cache: Path) -> Path:
    """The default fixture under ``cache/timit-fixture-v<N>`` (made once, atomically)."""
    final = Path(cache) / f"timit-fixture-v{FIXTURE_VERSION}"
    if (final / "timit").is_dir() and (final / "tensors" / "test.pt").exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".timit-fixture.", dir=final.parent))
    try:
        make_fixture(tmp, train_speakers=16, utterances=10)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "tensors" / "test.pt").exists():
                raise
    finally:
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return final


# ---------------------------------------------------------------------------------------------
# python -m momentumrnn.toolkit.speech make-fixture DIR

def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m momentumrnn.toolkit.speech",
                                description="TIMIT helpers of the momentumrnn toolkit.")
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("make-fixture", help="write a small synthetic TIMIT (LDC layout + the authors' tensors)")
    f.add_argument("dir", help="output folder (DIR/timit and DIR/tensors are created)")
    f.add_argument("--train-speakers", type=int, default=8, help=f"training speakers (1..{len(TRAIN_SPEAKERS)})")
    f.add_argument("--utterances", type=int, default=4, help="SI/SX sentences per speaker (plus SA1, SA2)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--no-tensors", action="store_true", help="skip the authors' preprocessed tensors")
    args = p.parse_args(argv)
    try:
        out = make_fixture(args.dir, train_speakers=args.train_speakers, utterances=args.utterances,
                           seed=args.seed, tensors=not args.no_tensors)
    except ToolkitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out['files']} audio files in the LDC layout: {out['timit']}")
    if "tensors" in out:
        counts = ", ".join(f"{k} {v}" for k, v in out["utterances"].items())
        print(f"and the authors' preprocessed tensors: {out['tensors']} ({counts} utterances)")
    print(f"try: momentumrnn train timit-small --set task.data_dir={out['timit']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
