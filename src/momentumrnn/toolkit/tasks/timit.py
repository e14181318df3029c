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

No TIMIT at hand: ``momentumrnn make-fixture DIR`` writes a small synthetic
corpus in both layouts (the tests use it), and ``task.fixture: true`` makes one automatically.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import ClassVar

import torch

from ..audio import BINS
from ..errors import ToolkitError
from ..loaders import Split
from ..options import Opt
from .base import Task, register
from .timit_data import (
    FIXTURE_HINT,
    TENSOR_FILES,
    Frames,
    FrameStore,
    _unpad,
    cache_root,
    load_raw,
    load_tensor_split,
    tensor_layout,
)
from .timit_fixture import ensure_fixture


@register
class TIMITTask(Task):
    name = "timit"
    summary = (
        "TIMIT next-frame prediction: 129 log-magnitude STFT bins (8 kHz, 256-point Hann frames, 50% "
        "overlap), predict frame t+1 from frames <= t; MSE over valid frames (lower is better); raw LDC "
        "TIMIT or the authors' training.pt/val.pt/test.pt (licensed data: task.fixture for a synthetic one)"
    )
    kind = "regression"
    input_size = BINS
    num_outputs = BINS
    metric = "loss"
    default_target = None
    options: ClassVar[dict[str, Opt]] = {
        "data_dir": Opt(
            "str",
            None,
            "TIMIT folder (TRAIN/ and TEST/, LDC layout) or the folder of the authors' "
            "training.pt, val.pt, test.pt (or train_x.npy, ...)",
            nullable=True,
        ),
        "fixture": Opt(
            "bool",
            False,
            "with data_dir null: a small synthetic corpus in TIMIT's layout, generated "
            "once into the cache (to try the pipeline without TIMIT)",
        ),
        "format": Opt(
            "choice",
            "auto",
            "auto, raw (LDC .WAV files) or tensors (the authors' preprocessed files)",
            choices=("auto", "raw", "tensors"),
        ),
        "pairing": Opt(
            "choice",
            "next_frame",
            "next_frame: predict y[t+1] from y[<=t]; stored (tensors only): the "
            "authors' loop, input x scored against y as stored",
            choices=("next_frame", "stored"),
        ),
        "eval_split": Opt(
            "choice",
            "test",
            "the evaluated split: test (400 utterances, development-set speakers) "
            "or val (192, core-test speakers), the authors' names",
            choices=("test", "val"),
        ),
        "normalize": Opt(
            "bool",
            True,
            "per-bin mean / std of the training frames applied to all splits "
            "(false: dB as stored, the scale of the paper's MSEs)",
        ),
        "train_size": Opt("int", None, "use the first N training utterances (null: all)", lo=1, nullable=True),
        "test_size": Opt("int", None, "use the first N evaluated utterances (null: all)", lo=1, nullable=True),
        "authors_train_filter": Opt(
            "bool",
            False,
            "raw: drop every training file whose path contains 'sa' (the "
            "authors' filter, which also drops speakers like FSAH0: 3640 utterances, "
            "not 3696)",
        ),
        "cache_dir": Opt(
            "str",
            None,
            "where preprocessed raw TIMIT (and the fixture) are cached (null: ~/.cache/momentumrnn)",
            nullable=True,
        ),
    }

    def __init__(self, opts: dict):
        super().__init__(opts)
        self.stats: tuple[torch.Tensor, torch.Tensor] | None = None
        self.source = ""
        self.log = lambda msg: print(msg, file=sys.stderr)

    @property
    def stored(self) -> bool:
        return self.opts.get("pairing", "next_frame") == "stored"

    def check_run(self, cfg: dict) -> None:
        if (cfg.get("model") or {}).get("bidirectional"):
            raise ToolkitError(
                "task timit: a bidirectional layer reads the frames it has to predict (its backward "
                "direction runs from the future); next-frame prediction needs a causal model: remove "
                "model.bidirectional"
            )

    # -- data ------------------------------------------------------------------------------------
    def _source(self) -> tuple[Path, str]:
        data_dir = self.opts.get("data_dir")
        fmt = self.opts.get("format", "auto")
        if not data_dir:
            if not self.opts.get("fixture"):
                raise ToolkitError(
                    "TIMIT is licensed (LDC93S1) and not bundled: set task.data_dir to your copy "
                    "(TRAIN/ and TEST/, or the authors' training.pt, val.pt, test.pt); to try the "
                    "pipeline without it set task.fixture: true (a synthetic corpus) or run "
                    "`momentumrnn make-fixture DIR`"
                )
            root = ensure_fixture(self._cache_base())
            return (root / "timit", "raw") if fmt != "tensors" else (root / "tensors", "tensors")
        d = Path(os.path.expanduser(str(data_dir)))
        if not d.is_dir():
            raise ToolkitError(
                f"task.data_dir {str(data_dir)!r} is not a directory; give the TIMIT folder (TRAIN/ "
                f"and TEST/) or the folder of the authors' training.pt, val.pt, test.pt; {FIXTURE_HINT}"
            )
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
                raise ToolkitError(
                    "task.pairing=stored applies to the authors' preprocessed tensors only; raw "
                    "TIMIT is always next-frame prediction (pairing: next_frame)"
                )
            cache = self.opts.get("cache_dir")
            frames = load_raw(
                d,
                cache_dir=Path(os.path.expanduser(str(cache))) / "timit" if cache else None,
                authors_train_filter=bool(self.opts.get("authors_train_filter")),
                log=self.log,
            )
            self.source = f"raw TIMIT in {d}"
            sel = {s: frames[s] for s in need}
            return sel, sel
        layout = tensor_layout(d)
        if layout is None:
            raise ToolkitError(
                f"{d} holds none of the authors' files ({', '.join(TENSOR_FILES.values())}, or "
                "train_x.npy, train_z.npy, lens_train.npy, ...); set task.format=raw for the LDC "
                f"layout; {FIXTURE_HINT}"
            )
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
            tgt, w = x[..., BINS : 2 * BINS], valid
        else:
            tgt, w = x[:, 1:, :BINS], valid[:, 1:]
        tgt = torch.where(w[..., None], tgt, 0.0).float()
        weight = w.float() * y.float().reshape(-1, 1)
        return torch.cat([tgt, weight[..., None]], dim=-1)

    def head_input(self, output: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
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
