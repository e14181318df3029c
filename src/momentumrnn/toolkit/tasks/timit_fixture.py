"""A small synthetic TIMIT (the tests' fixture, and ``task.fixture: true``): harmonic "vowels",
noise bursts and pauses written in TIMIT's LDC layout (16 kHz NIST SPHERE ``.WAV`` files with
TIMIT's header fields; one speaker as RIFF WAV, one big-endian, one converted ``.WAV.wav`` copy)
and the same data in the authors' preprocessed layout. ``momentumrnn make-fixture DIR`` writes one.

The SPHERE writer is ours: libsndfile writes its own header fields, not TIMIT's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..audio import BINS, PAD_DB, preprocess, read_audio
from ..errors import ToolkitError
from .timit_data import TENSOR_FILES, scan_timit

FIXTURE_VERSION = 1

TRAIN_SPEAKERS = (
    "DR1/FCJF0",
    "DR1/MDPK0",
    "DR1/FSAH0",
    "DR1/MRCG0",
    "DR2/FAEM0",
    "DR2/MTAT0",
    "DR2/FDXW0",
    "DR2/MWSB0",
    "DR3/FALK0",
    "DR3/MJMM0",
    "DR3/FCKE0",
    "DR3/MRTJ0",
    "DR4/FALR0",
    "DR4/MTRC0",
    "DR4/FBAS0",
    "DR4/MSFH0",
)
FIXTURE_DEV = ("DR1/FAKS0", "DR4/MGWT0")  # development-set speakers -> "test"
FIXTURE_CORE = ("DR1/MDAB0", "DR1/FELC0")  # core-test speakers -> "val"
FIXTURE_OTHER = ("DR2/MZZZ9",)  # other TEST speakers: unused


def sphere_bytes(samples: np.ndarray, rate: int, *, byte_order: str = "01", utterance: str = "") -> bytes:
    """16-bit PCM samples in a NIST SPHERE file (1024-byte header, as TIMIT's .WAV files)."""
    pcm = np.asarray(samples, dtype=np.int16)
    lines = ["NIST_1A", "   1024", "database_id -s5 TIMIT", "database_version -s3 1.0"]
    if utterance:
        lines.append(f"utterance_id -s{len(utterance)} {utterance}")
    lo, hi = (int(pcm.min()), int(pcm.max())) if pcm.size else (0, 0)
    lines += [
        "channel_count -i 1",
        f"sample_count -i {pcm.size}",
        f"sample_rate -i {rate}",
        f"sample_min -i {lo}",
        f"sample_max -i {hi}",
        "sample_n_bytes -i 2",
        f"sample_byte_format -s2 {byte_order}",
        "sample_sig_bits -i 16",
        "end_head",
    ]
    header = ("\n".join(lines) + "\n").encode("ascii")
    header += b" " * (1024 - len(header))
    return header + pcm.astype("<i2" if byte_order == "01" else ">i2").tobytes()


def riff_bytes(samples: np.ndarray, rate: int) -> bytes:
    """16-bit PCM mono samples in a RIFF WAV file."""
    pcm = np.asarray(samples, dtype="<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, rate, 2 * rate, 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(pcm))
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", len(pcm))
        + pcm
    )


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


def make_fixture(
    directory: Any,
    *,
    train_speakers: int = 8,
    utterances: int = 4,
    seconds: tuple[float, float] = (0.5, 1.2),
    seed: int = 0,
    tensors: bool = True,
) -> dict:
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
                path.write_bytes(riff_bytes(pcm, 16000))  # a RIFF file named .WAV
            else:
                order = "10" if part == "TRAIN" and i == 2 else "01"  # one big-endian speaker
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
                x[k, : len(f) - 1] = torch.from_numpy(f[1:])  # Wisdom's targets: the next frame
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
            shutil.rmtree(tmp, ignore_errors=True)
    return final


# ---------------------------------------------------------------------------------------------
# momentumrnn make-fixture DIR (and python -m momentumrnn.toolkit.tasks.timit_fixture make-fixture DIR)


def add_fixture_arguments(f: argparse.ArgumentParser) -> None:
    """The options of ``make-fixture`` (also a sub-command of ``momentumrnn``)."""
    f.add_argument("dir", help="output folder (DIR/timit and DIR/tensors are created)")
    f.add_argument("--train-speakers", type=int, default=8, help=f"training speakers (1..{len(TRAIN_SPEAKERS)})")
    f.add_argument("--utterances", type=int, default=4, help="SI/SX sentences per speaker (plus SA1, SA2)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--no-tensors", action="store_true", help="skip the authors' preprocessed tensors")


def run_make_fixture(args: argparse.Namespace) -> int:
    """Write the fixture of parsed ``make-fixture`` arguments; ToolkitError on bad values."""
    out = make_fixture(
        args.dir,
        train_speakers=args.train_speakers,
        utterances=args.utterances,
        seed=args.seed,
        tensors=not args.no_tensors,
    )
    print(f"wrote {out['files']} audio files in the LDC layout: {out['timit']}")
    if "tensors" in out:
        counts = ", ".join(f"{k} {v}" for k, v in out["utterances"].items())
        print(f"and the authors' preprocessed tensors: {out['tensors']} ({counts} utterances)")
    print(f"try: momentumrnn train timit-small --set task.data_dir={out['timit']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m momentumrnn.toolkit.tasks.timit_fixture make-fixture DIR`` (= ``momentumrnn
    make-fixture DIR``)."""
    p = argparse.ArgumentParser(prog="momentumrnn", description="TIMIT helpers of the momentumrnn toolkit.")
    sub = p.add_subparsers(dest="command", required=True)
    add_fixture_arguments(
        sub.add_parser("make-fixture", help="write a small synthetic TIMIT (LDC layout + the authors' tensors)")
    )
    args = p.parse_args(argv)
    try:
        return run_make_fixture(args)
    except ToolkitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
