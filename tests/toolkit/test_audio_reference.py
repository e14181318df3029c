"""The library-based audio pipeline (soundfile, scipy.signal) against the toolkit's former
hand-written readers, resampler, window and STFT (kept verbatim in audio_reference.py), on the
synthetic TIMIT fixture."""

from __future__ import annotations

import audio_reference as ref
import numpy as np
import pytest

from momentumrnn.toolkit import audio
from momentumrnn.toolkit.tasks.timit_fixture import make_fixture


@pytest.fixture(scope="module")
def wav_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("fx")
    make_fixture(root, train_speakers=3, utterances=2, tensors=False)
    files = sorted(p for p in (root / "timit").rglob("*") if p.is_file())
    assert len(files) > 20  # SPHERE little- and big-endian, RIFF, a .WAV.wav copy
    return files


def test_samples_features_and_resampling_equal_the_former_implementation(wav_files):
    kinds = set()
    for path in wav_files:
        data = path.read_bytes()
        kinds.add(data[:4] + (b"-be" if b"sample_byte_format -s2 10" in data[:1024] else b""))
        old_x, old_rate = (ref.parse_sphere if data.startswith(b"NIST") else ref.parse_riff)(data, path)
        x, rate = audio.read_audio(path)
        assert rate == old_rate == 16000
        np.testing.assert_array_equal(x, old_x)  # libsndfile decodes the very same samples
        np.testing.assert_allclose(audio.resample(x, rate, 8000), ref.resample(x, rate, 8000), rtol=0, atol=1e-12)
        spec, old_spec = audio.stft(ref.resample(x, rate, 8000)), ref.stft(ref.resample(x, rate, 8000))
        np.testing.assert_allclose(spec, old_spec, rtol=0, atol=1e-10)
        np.testing.assert_allclose(audio.preprocess(x, rate), ref.preprocess(old_x, old_rate), rtol=0, atol=1e-4)
    assert kinds == {b"NIST", b"NIST-be", b"RIFF"}


def test_window_frames_and_other_rates_equal_the_former_implementation():
    rng = np.random.default_rng(1)
    np.testing.assert_allclose(audio.hann(256), ref.hann(256), rtol=0, atol=1e-15)
    for n in (0, 1, 100, 256, 257, 385, 5000):
        x = rng.standard_normal(n)
        assert audio.frame_count(n) == ref.frame_count(n)
        np.testing.assert_allclose(audio.stft(x), ref.stft(x), rtol=0, atol=1e-10)
    x = rng.standard_normal(3001)
    for orig, new in ((12000, 8000), (8000, 16000), (44100, 8000), (16000, 8000)):
        np.testing.assert_allclose(audio.resample(x, orig, new), ref.resample(x, orig, new), rtol=0, atol=1e-10)
