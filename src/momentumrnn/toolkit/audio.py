"""Audio I/O and speech features (the TIMIT task's preprocessing), on well-kept libraries.

* Decoding: ``soundfile`` (libsndfile reads NIST SPHERE, TIMIT's ``.WAV``, and RIFF WAV, either
  byte order). What we keep of our own is a check of the header *before* decoding, for two
  measured reasons: libsndfile silently returns the samples that are there when a file is
  truncated (a SPHERE file announcing 400 samples with 150 present decodes as 150; a RIFF data
  chunk cut short likewise), and it accepts a SPHERE header without ``end_head``; and its errors
  ("Format not recognised", "unimplemented format", "Unspecified internal error") do not say what
  is wrong with a TIMIT file nor how to convert it (``sph2pipe``), which ours do.
* Resampling: ``scipy.signal.resample_poly`` with a Kaiser-windowed sinc low-pass designed by
  ``scipy.signal.firwin`` (129 taps at 16 -> 8 kHz, cut-off 3.68 kHz, Kaiser beta 8.6: more than
  80 dB down from 4.02 kHz, so nothing folds back below 4 kHz).
* STFT: ``scipy.signal.stft`` with the periodic Hann window, 256-sample frames every 128, no
  centring, the last frame zero-padded.

Checked against the toolkit's former hand-written readers, resampler and STFT on the synthetic
TIMIT fixture: identical samples, features equal to 1e-15 (``tests/toolkit/test_audio_reference.py``).
"""

from __future__ import annotations

import io
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import scipy.signal as signal
import soundfile

from .errors import ToolkitError

RATE = 8000  # Hz, after resampling
N_FFT = 256  # 32 ms frames at 8 kHz
HOP = 128  # 50 % overlap
BINS = N_FFT // 2 + 1  # 129
LOG_FLOOR = 1e-5  # 10 log10(|X|^2 + 1e-5): -50 dB floor
PAD_DB = 10.0 * math.log10(LOG_FLOOR)


# ---------------------------------------------------------------------------------------------
# reading: header checks (clear errors, truncation), then libsndfile decodes


def _read_bytes(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ToolkitError(
            f"cannot read {path} ({e.strerror or e}); check the file or restore it from the TIMIT distribution"
        ) from None


def sphere_header(data: bytes, path: Any = "<bytes>") -> tuple[int, int]:
    """Check a NIST SPHERE header (``NIST_1A``, 16-bit PCM, complete) and return ``(sample_count,
    channels)``; anything TIMIT's files are not raises ToolkitError with the conversion to do."""
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
    convert = (
        f"convert it to 16-bit PCM first (e.g. `sph2pipe -f wav {Path(str(path)).name} out.wav` or sox) "
        "or use the uncompressed LDC release"
    )
    if not coding.startswith("pcm") or any(w in coding for w in ("shorten", "wavpack", "shortpack")):
        raise ToolkitError(
            f"{path}: SPHERE sample_coding {coding!r} is not supported (compressed or non-PCM audio); {convert}"
        )
    width = fields.get("sample_n_bytes", 2)
    if width != 2:
        raise ToolkitError(f"{path}: {width}-byte samples (sample_n_bytes); only 16-bit PCM is supported; {convert}")
    order = str(fields.get("sample_byte_format", "01")).strip()
    if order not in ("01", "10"):
        raise ToolkitError(f"{path}: unsupported SPHERE sample_byte_format {order!r} (expected 01 or 10); {convert}")
    channels = fields.get("channel_count", 1)
    if not isinstance(channels, int) or channels < 1:
        raise ToolkitError(f"{path}: bad SPHERE channel_count {channels!r}; {fix}")
    frame_bytes = 2 * channels
    count = fields.get("sample_count")
    if count is None:
        count = (len(data) - size) // frame_bytes
    if not isinstance(count, int) or count < 0:
        raise ToolkitError(f"{path}: bad SPHERE sample_count {count!r}; {fix}")
    if len(data) - size < count * frame_bytes:
        raise ToolkitError(
            f"{path} is truncated: its header announces {count} samples, the file holds "
            f"{(len(data) - size) // frame_bytes}; {fix}"
        )
    return count, channels


def riff_header(data: bytes, path: Any = "<bytes>") -> int:
    """Check a RIFF WAV header (16-bit PCM, complete data chunk); returns the number of frames."""
    fix = "convert it to 16-bit PCM WAV (e.g. with sox) or restore it"
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ToolkitError(f"{path} is not a RIFF WAV file; {fix}")
    pos, fmt, size_pcm = 12, None, None
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        body = data[pos + 8 : pos + 8 + size]
        if cid == b"fmt ":
            if len(body) < 16:
                raise ToolkitError(f"{path}: truncated WAV fmt chunk; {fix}")
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
            if tag == 0xFFFE and len(body) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the sub-format's first two bytes
                tag = int.from_bytes(body[24:26], "little")
            fmt = (tag, channels, rate, bits)
        elif cid == b"data":
            if len(body) < size:
                raise ToolkitError(
                    f"{path} is truncated: its data chunk announces {size} bytes, the file holds "
                    f"{len(body)}; restore it"
                )
            size_pcm = size
        pos += 8 + size + (size & 1)
    if fmt is None or size_pcm is None:
        raise ToolkitError(
            f"{path}: WAV file without {'fmt' if fmt is None else 'data'} chunk (truncated or corrupt); {fix}"
        )
    tag, channels, rate, bits = fmt
    if tag != 1 or bits != 16:
        what = "floating-point" if tag == 3 else f"{bits}-bit" if tag == 1 else f"format tag {tag}"
        raise ToolkitError(f"{path}: {what} WAV samples; only 16-bit PCM is supported; {fix}")
    if channels < 1 or rate <= 0:
        raise ToolkitError(f"{path}: bad WAV header ({channels} channels, {rate} Hz); {fix}")
    return size_pcm // (2 * channels)


def _decode(data: bytes, path: Any, frames: int) -> tuple[np.ndarray, int]:
    """libsndfile's samples (float64 in [-1, 1), channels averaged) and rate."""
    try:
        x, rate = soundfile.read(io.BytesIO(data), dtype="float64", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as e:
        raise ToolkitError(
            f"{path}: libsndfile cannot decode it ({e}); restore it or convert it to 16-bit PCM WAV (sox)"
        ) from None
    if x.shape[0] < frames:
        raise ToolkitError(
            f"{path} is truncated: its header announces {frames} samples, {x.shape[0]} decode; restore it"
        )
    return x[:frames].mean(axis=1), int(rate)


def parse_sphere(data: bytes, path: Any = "<bytes>") -> tuple[np.ndarray, int]:
    """A NIST SPHERE file's bytes as ``(samples in [-1, 1) float64, mono, sample rate)``."""
    count, _ = sphere_header(data, path)
    return _decode(data, path, count)


def parse_riff(data: bytes, path: Any = "<bytes>") -> tuple[np.ndarray, int]:
    """A 16-bit PCM RIFF WAV file's bytes as ``(samples in [-1, 1) float64, mono, rate)``."""
    return _decode(data, path, riff_header(data, path))


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """A SPHERE or RIFF WAV file (told apart by content, not by name) as mono samples and rate."""
    data = _read_bytes(path)
    if data.startswith(b"NIST_1A"):
        return parse_sphere(data, path)
    if data.startswith(b"RIFF"):
        return parse_riff(data, path)
    if len(data) < 8:
        raise ToolkitError(f"{path} is empty or truncated (not a SPHERE or WAV file); restore it")
    raise ToolkitError(f"{path} is neither a NIST SPHERE nor a RIFF WAV file; restore it from the TIMIT distribution")


# ---------------------------------------------------------------------------------------------
# features


def resample(
    x: np.ndarray, orig: int, new: int, *, zeros: int = 32, rolloff: float = 0.92, beta: float = 8.6
) -> np.ndarray:
    """Band-limited resampling by ``new / orig`` (``scipy.signal.resample_poly``): a Kaiser-windowed
    sinc low-pass at ``rolloff * min(orig, new) / 2`` spanning ``zeros`` zero crossings of the lower
    rate on each side (Kaiser ``beta`` 8.6: about 85 dB of stop-band attenuation). 16 kHz -> 8 kHz:
    129 taps, cut-off 3.68 kHz, pass band to about 3.35 kHz, stop band from about 4.02 kHz. Output
    sample ``j`` is at time ``j / new`` (no delay); the length is ``ceil(len(x) * new / orig)``."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if orig <= 0 or new <= 0:
        raise ValueError(f"sample rates must be positive, got {orig} and {new}")
    if orig == new or x.size == 0:
        return x.copy()
    g = math.gcd(int(orig), int(new))
    up, down = int(new) // g, int(orig) // g
    low = min(orig, new)
    half = math.ceil(zeros * orig * up / low)
    taps = signal.firwin(2 * half + 1, rolloff * low / 2, window=("kaiser", beta), fs=orig * up, scale=False)
    return signal.resample_poly(x, up, down, window=taps)  # resample_poly itself applies the gain `up`


def hann(n: int = N_FFT) -> np.ndarray:
    """The periodic Hann window ``0.5 - 0.5 cos(2 pi k / n)`` (scipy's ``get_window('hann', n)``)."""
    return signal.get_window("hann", n)


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
    if x.size < n_fft:  # one zero-padded frame (scipy would shrink the window instead)
        x = np.pad(x, (0, n_fft - x.size))
    w = hann(n_fft)
    _, _, spec = signal.stft(
        x,
        window=w,
        nperseg=n_fft,
        noverlap=n_fft - hop,
        boundary=None,
        padded=True,
        detrend=False,
        return_onesided=True,
        scaling="spectrum",
    )
    return spec.T * w.sum()  # scipy scales by 1 / sum(w): undo it for the plain DFT of each frame


def log_magnitude(spec: np.ndarray) -> np.ndarray:
    """``10 log10(|X|^2 + 1e-5)`` (dB, -50 dB floor) as float32."""
    return (10.0 * np.log10(np.abs(spec) ** 2 + LOG_FLOOR)).astype(np.float32)


def preprocess(samples: np.ndarray, rate: int) -> np.ndarray:
    """Samples at any rate -> ``(frames, 129)`` log-magnitude frames at 8 kHz."""
    return log_magnitude(stft(resample(samples, rate, RATE)))
