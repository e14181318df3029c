"""Build the MNIST subset bundled with the toolkit (``mnist_demo.npz``).

Source: the 5,000 real MNIST digits of ``shared/data/mnist-5k/mnist_5k.csv.gz`` (500 per class;
785 integer columns per row: 784 pixels 0-255 row-major, then the label).

Split (deterministic, no randomness from the machine): per class, the digits are put in a
fixed pseudo-random order (numpy PCG64, seed 20200617); the first 100 of each class go to the
test set and the other 400 to the training set. Each set is then put in a fixed pseudo-random
order (same generator), so any prefix of it (``task.train_size`` / ``task.test_size``) is close to
class-balanced. Images are stored as uint8 ``(N, 784)``, labels as uint8 ``(N,)``.

Usage::

    python -m momentumrnn.toolkit.data.make_demo_subset [CSV_GZ] [OUT_NPZ]

Re-running it on the same CSV gives a byte-identical array content (the npz container itself
carries no timestamps that matter to the loader).
"""

from __future__ import annotations

import gzip
import hashlib
import sys
from pathlib import Path
from typing import Any

import numpy as np

SEED = 20200617
TEST_PER_CLASS = 100
DEFAULT_CSV = Path(__file__).resolve().parents[4] / ".." / "shared" / "data" / "mnist-5k" / "mnist_5k.csv.gz"
DEFAULT_OUT = Path(__file__).resolve().parent / "mnist_demo.npz"


def build(csv_gz: Path) -> dict[str, np.ndarray]:
    with gzip.open(csv_gz, "rt") as f:
        rows = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if rows.ndim != 2 or rows.shape[1] != 785:
        raise ValueError(f"{csv_gz}: expected 785 columns per row, got shape {rows.shape}")
    pixels, labels = rows[:, :784], rows[:, 784]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"{csv_gz}: pixel or label out of range")
    rng = np.random.Generator(np.random.PCG64(SEED))
    train_parts, test_parts = [], []
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        test_parts.append(idx[:TEST_PER_CLASS])
        train_parts.append(idx[TEST_PER_CLASS:])
    train_idx = np.concatenate(train_parts)
    test_idx = np.concatenate(test_parts)
    train_idx = train_idx[rng.permutation(len(train_idx))]
    test_idx = test_idx[rng.permutation(len(test_idx))]
    return {
        "x_train": pixels[train_idx].astype(np.uint8),
        "y_train": labels[train_idx].astype(np.uint8),
        "x_test": pixels[test_idx].astype(np.uint8),
        "y_test": labels[test_idx].astype(np.uint8),
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    csv_gz = Path(argv[0]) if len(argv) > 0 else DEFAULT_CSV.resolve()
    out = Path(argv[1]) if len(argv) > 1 else DEFAULT_OUT
    arrays: dict[str, Any] = build(csv_gz)  # (Any: numpy's savez types **kwargs against allow_pickle)
    np.savez_compressed(out, **arrays)
    digest = hashlib.sha256(b"".join(a.tobytes() for a in arrays.values())).hexdigest()[:16]
    print(
        f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB): "
        f"{len(arrays['y_train'])} train / {len(arrays['y_test'])} test images, content sha256 {digest}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
