"""Today's (before the switch to soundfile / scipy) audio code of the TIMIT task, kept verbatim as
a reference: ``test_audio_reference.py`` checks that the library-based pipeline of
``momentumrnn.toolkit.audio`` gives the same samples, resampling, STFT and features on the fixture."""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

RATE = 8000
N_FFT = 256
HOP = 128
LOG_FLOOR = 1e-5


class RefError(Exception):
    pass


def _read_bytes(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise RefError(
            f"cannot read {path} ({e.strerror or e}); check the file or restore it from the TIMIT distribution"
        ) from None


def parse_sphere(data: bytes, path: Any = "<bytes>") -> tuple[np.ndarray, int]:
    """A NIST SPHERE file (``NIST_1A`` header, usually 1024 bytes, then 16-bit PCM samples) as
    ``(samples in [-1, 1) float64, mono, sample rate)``."""
    fix = "restore the file from the TIMIT distribution"
    if not data.startswith(b"NIST_1A"):
        raise RefError(f"{path} is not a NIST SPHERE file (no NIST_1A header); {fix}")
    parts = data.split(b"\n", 2)
    try:
        size = int(parts[1].strip())
    except (IndexError, ValueError):
        raise RefError(f"{path}: truncated or corrupt SPHERE header (no header size); {fix}") from None
    if size < 16 or len(data) < size:
        raise RefError(f"{path}: truncated SPHERE header ({len(data)} bytes, the header announces {size}); {fix}")
    header = data[:size].decode("latin-1")
    if "end_head" not in header:
        raise RefError(f"{path}: truncated or corrupt SPHERE header (no end_head); {fix}")
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
            raise RefError(f"{path}: corrupt SPHERE header field {name!r} ({value!r}); {fix}") from None
    rate = fields.get("sample_rate")
    if not isinstance(rate, int) or rate <= 0:
        raise RefError(f"{path}: the SPHERE header has no valid sample_rate; {fix}")
    coding = str(fields.get("sample_coding", "pcm")).strip().lower()
    convert = (
        f"convert it to 16-bit PCM first (e.g. `sph2pipe -f wav {Path(str(path)).name} out.wav` or sox) "
        "or use the uncompressed LDC release"
    )
    if not coding.startswith("pcm") or any(w in coding for w in ("shorten", "wavpack", "shortpack")):
        raise RefError(
            f"{path}: SPHERE sample_coding {coding!r} is not supported (compressed or non-PCM audio); {convert}"
        )
    width = fields.get("sample_n_bytes", 2)
    if width != 2:
        raise RefError(f"{path}: {width}-byte samples (sample_n_bytes); only 16-bit PCM is supported; {convert}")
    order = str(fields.get("sample_byte_format", "01")).strip()
    if order not in ("01", "10"):
        raise RefError(f"{path}: unsupported SPHERE sample_byte_format {order!r} (expected 01 or 10); {convert}")
    channels = fields.get("channel_count", 1)
    if not isinstance(channels, int) or channels < 1:
        raise RefError(f"{path}: bad SPHERE channel_count {channels!r}; {fix}")
    body = data[size:]
    frame_bytes = 2 * channels
    count = fields.get("sample_count")
    if count is None:
        count = len(body) // frame_bytes
    if not isinstance(count, int) or count < 0:
        raise RefError(f"{path}: bad SPHERE sample_count {count!r}; {fix}")
    if len(body) < count * frame_bytes:
        raise RefError(
            f"{path} is truncated: its header announces {count} samples, the file holds "
            f"{len(body) // frame_bytes}; {fix}"
        )
    dtype = np.dtype("<i2" if order == "01" else ">i2")
    pcm = np.frombuffer(body, dtype=dtype, count=count * channels).astype(np.float64) / 32768.0
    return pcm.reshape(-1, channels).mean(axis=1), rate


def parse_riff(data: bytes, path: Any = "<bytes>") -> tuple[np.ndarray, int]:
    """A RIFF WAV file with 16-bit PCM samples as ``(samples in [-1, 1) float64, mono, rate)``."""
    fix = "convert it to 16-bit PCM WAV (e.g. with sox) or restore it"
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise RefError(f"{path} is not a RIFF WAV file; {fix}")
    pos, fmt, pcm = 12, None, None
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        body = data[pos + 8 : pos + 8 + size]
        if cid == b"fmt ":
            if len(body) < 16:
                raise RefError(f"{path}: truncated WAV fmt chunk; {fix}")
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
            if tag == 0xFFFE and len(body) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the sub-format's first two bytes
                tag = int.from_bytes(body[24:26], "little")
            fmt = (tag, channels, rate, bits)
        elif cid == b"data":
            if len(body) < size:
                raise RefError(
                    f"{path} is truncated: its data chunk announces {size} bytes, the file holds "
                    f"{len(body)}; restore it"
                )
            pcm = body
        pos += 8 + size + (size & 1)
    if fmt is None or pcm is None:
        raise RefError(
            f"{path}: WAV file without {'fmt' if fmt is None else 'data'} chunk (truncated or corrupt); {fix}"
        )
    tag, channels, rate, bits = fmt
    if tag != 1 or bits != 16:
        what = "floating-point" if tag == 3 else f"{bits}-bit" if tag == 1 else f"format tag {tag}"
        raise RefError(f"{path}: {what} WAV samples; only 16-bit PCM is supported; {fix}")
    if channels < 1 or rate <= 0:
        raise RefError(f"{path}: bad WAV header ({channels} channels, {rate} Hz); {fix}")
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
        raise RefError(f"{path} is empty or truncated (not a SPHERE or WAV file); restore it")
    raise RefError(f"{path} is neither a NIST SPHERE nor a RIFF WAV file; restore it from the TIMIT distribution")


# ---------------------------------------------------------------------------------------------
# signal processing (numpy / torch only)


def resample(
    x: np.ndarray, orig: int, new: int, *, zeros: int = 32, rolloff: float = 0.92, beta: float = 8.6
) -> np.ndarray:
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
    fc = rolloff * low / 2 / up  # cycles per upsampled sample
    half = math.ceil(zeros * up / low)
    n = np.arange(-half, half + 1, dtype=np.float64)
    h = 2 * fc * np.sinc(2 * fc * n) * np.kaiser(2 * half + 1, beta) * L
    if L == 1:  # integer decimation (16 -> 8 kHz): a direct convolution, every M-th output kept
        return np.convolve(x, h)[half : half + x.size : M]
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
