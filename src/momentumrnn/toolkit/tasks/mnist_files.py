"""MNIST-format data files: the bundled .npz subset, IDX folders (raw or gzipped) and MNIST CSVs.

Every reader returns ``(train, test)`` :class:`~momentumrnn.toolkit.loaders.Split` of uint8
pixels ``(N, 784)`` and int64 labels 0..9; every error names the file and what to do about it.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import cast

import numpy as np
import torch

from ..errors import ToolkitError
from ..loaders import Split


def load_npz(path: Path) -> tuple[Split, Split]:
    path = Path(path)
    if not path.exists():
        raise ToolkitError(f"data file {str(path)!r} not found; reinstall momentumrnn or set task.data_file")
    try:
        with np.load(path, allow_pickle=False) as d:
            arrays = {k: np.asarray(d[k]) for k in ("x_train", "y_train", "x_test", "y_test")}
    except KeyError as e:
        raise ToolkitError(
            f"data file {str(path)!r} lacks array {e}; expected x_train, y_train, x_test, y_test"
        ) from None
    except Exception as e:
        raise ToolkitError(
            f"data file {str(path)!r} is corrupt or not an .npz archive ({type(e).__name__}); "
            "restore it (make_demo_subset.py rebuilds the bundled one)"
        ) from None
    return _mnist_splits(arrays, str(path))


def _mnist_splits(a: dict, origin: str) -> tuple[Split, Split]:
    out = []
    for s in ("train", "test"):
        x, y = a[f"x_{s}"], a[f"y_{s}"]
        if x.ndim == 3:
            x = x.reshape(x.shape[0], -1)
        if x.ndim != 2 or x.shape[1] != 784 or y.shape != (x.shape[0],) or x.shape[0] == 0:
            raise ToolkitError(
                f"{origin}: {s} images must be (N, 784) or (N, 28, 28) with N labels, got {x.shape} and {y.shape}"
            )
        if x.dtype != np.uint8:
            raise ToolkitError(f"{origin}: x_{s} must be uint8 pixels 0..255, got {x.dtype}")
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() > 9:
            raise ToolkitError(
                f"{origin}: y_{s} must hold integer labels 0..9 (got {y.dtype}, range {y.min()}..{y.max()})"
            )
        out.append(Split(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y.astype(np.int64))))
    return out[0], out[1]


IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
IDX_FIX = "delete it and run again with `--set task.download=true` to download it again"


def idx_candidates(directory: Path, stem: str) -> list[Path]:
    """The names a file may have: raw or gzipped, ``-idx`` or ``.idx`` (as some mirrors spell it)."""
    alt = stem.replace("-idx", ".idx")
    return [directory / stem, directory / f"{stem}.gz", directory / alt, directory / f"{alt}.gz"]


def find_idx_files(directory: Path) -> dict[str, Path | None]:
    """Key (x_train, ...) -> the file present in ``directory``, or None."""
    return {
        key: next((p for p in idx_candidates(Path(directory), stem) if p.is_file()), None)
        for key, stem in IDX_FILES.items()
    }


def _read_bytes(path: Path, fix: str) -> bytes:
    """The content of a file, gunzipped when it starts with the gzip magic (whatever its name)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ToolkitError(f"cannot read {path} ({e.strerror or e}); check that it exists and is readable") from None
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise ToolkitError(f"{path} is a corrupt or truncated gzip file ({e}); {fix}") from None
    return data


def read_idx(path: Path, ndim: int | None = None, fix: str = IDX_FIX) -> np.ndarray:
    """An IDX file (MNIST format, optionally gzipped) as a uint8 array; ``ndim``: the expected number
    of dimensions (3 for images, 1 for labels). Every error names the file and ``fix``."""
    path = Path(path)
    data = _read_bytes(path, fix)
    if not data:
        raise ToolkitError(f"{path} is empty; {fix}")
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ToolkitError(
            f"{path} is not an unsigned-byte IDX file (bad magic number "
            f"{data[:4].hex()}, expected 0000080{ndim or 'N'}); {fix}"
        )
    nd = data[3]
    if ndim is not None and nd != ndim:
        what = "images" if ndim == 3 else "labels"
        raise ToolkitError(
            f"{path} holds {nd}-dimensional data but {what} need {ndim} dimensions (are the "
            f"image and label files swapped?); {fix}"
        )
    header = 4 + 4 * nd
    if len(data) < header:
        raise ToolkitError(f"{path} is truncated (incomplete header); {fix}")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(nd)]
    size = int(np.prod(dims)) if dims else 0
    if len(data) != header + size:
        how = "too short" if len(data) < header + size else "too long"
        raise ToolkitError(
            f"{path} is truncated or corrupt: {len(data) - header} bytes of data for shape {tuple(dims)} ({how}); {fix}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def load_idx_dir(
    directory: str | os.PathLike, *, missing_fix: str | None = None, fix: str | None = None
) -> tuple[Split, Split]:
    """The four MNIST-format IDX files of ``directory`` as (train, test). ``missing_fix`` / ``fix``:
    what the error messages tell the user to do about missing / corrupt files."""
    d = Path(os.path.expanduser(str(directory)))
    missing_fix = missing_fix or (f"copy them into {d}, or add `--set task.download=true` to download them there")
    fix = fix or f"{IDX_FIX} (or copy a good copy into {d})"
    if not d.exists():
        raise ToolkitError(
            f"task.data_dir {str(directory)!r} is not a directory (it does not exist); it must hold "
            f"the four MNIST-format IDX files (train-images-idx3-ubyte[.gz], ...): {missing_fix}"
        )
    if not d.is_dir():
        raise ToolkitError(
            f"task.data_dir {str(directory)!r} is a file, not a directory; give the folder holding "
            "the four MNIST-format IDX files (train-images-idx3-ubyte[.gz], ...)"
        )
    paths = find_idx_files(d)
    missing = [IDX_FILES[k] for k, p in paths.items() if p is None]
    if missing:
        names = ", ".join(f"{s}[.gz]" for s in missing)
        raise ToolkitError(
            f"{d} lacks {names} ({4 - len(missing)} of the 4 MNIST-format IDX files are there); {missing_fix}"
        )
    # (none missing: checked above)
    arrays = {k: read_idx(cast(Path, p), 3 if k.startswith("x") else 1, fix) for k, p in paths.items()}
    for s in ("train", "test"):
        x, y = arrays[f"x_{s}"], arrays[f"y_{s}"]
        px, py = paths[f"x_{s}"], paths[f"y_{s}"]
        if x.shape[1:] != (28, 28):
            raise ToolkitError(f"{px} holds images of {x.shape[1]}x{x.shape[2]} pixels, not 28x28; {fix}")
        if len(x) != len(y):
            both = fix.replace("delete it and", "delete both and").replace("download it again", "download them again")
            raise ToolkitError(
                f"{px} holds {len(x)} images but {py} holds {len(y)} labels; one of them is "
                f"truncated or from another data set: {both}"
            )
        if len(x) == 0:
            raise ToolkitError(f"{px} holds no images; {fix}")
        if y.max() > 9:
            raise ToolkitError(
                f"{py} holds labels up to {int(y.max())} ({int((y > 9).sum())} above 9), "
                f"not a 10-class MNIST-format label file; {fix}"
            )
    return _mnist_splits(arrays, str(d))


# -- CSV: one image a row, 784 pixels then the label ----------------------------------------------

CSV_SPLIT_SEED = 20200617  # the split of make_demo_subset.py: the bundled subset of mnist_5k.csv.gz
CSV_TEST_FRACTION = 0.2
CSV_FIX = "fix the file (784 integer pixels 0..255, then an integer label 0..9, per row)"


def _csv_where(path: Path, line: int) -> str:
    return f"{path}, line {line}"


def read_mnist_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """An MNIST CSV (optionally gzipped): 785 integer columns per row, the 784 pixels (0..255,
    row-major 28x28) then the label (0..9). An optional header row is skipped; a header naming its
    first column ``label`` puts the label first (the Kaggle layout). Returns uint8 (N, 784), (N,)."""
    path = Path(path)
    raw = _read_bytes(path, CSV_FIX)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ToolkitError(
            f"{path} is not a text CSV file; give a CSV of 785 integer columns (784 pixels then the label)"
        ) from None
    lines = text.splitlines()
    numbers = [i for i, ln in enumerate(lines, 1) if ln.strip()]
    if not numbers:
        raise ToolkitError(f"{path} is empty; give a CSV of 785 integer columns (784 pixels then the label)")
    label_first = False
    first = [t.strip().lower() for t in lines[numbers[0] - 1].split(",")]
    if not all(t.lstrip("+-").isdigit() for t in first):  # a header row
        if first[0] == "label":
            label_first = True
        elif first[-1] != "label":
            raise ToolkitError(
                f"{_csv_where(path, numbers[0])}: a header row without a 'label' column as first "
                f"or last column ({', '.join(first[:3])}, ...); remove it or name the label "
                "column 'label'"
            )
        numbers = numbers[1:]
        if not numbers:
            raise ToolkitError(f"{path} has a header row but no data rows")
    body = [lines[i - 1] for i in numbers]
    try:
        rows = np.loadtxt(body, delimiter=",", dtype=np.int64, ndmin=2, comments=None)
        bad = None if rows.shape[1] == 785 else 0
    except ValueError:
        rows, bad = None, 0
    if bad is not None:  # find the first bad row to name it
        for ln, row in zip(numbers, body):
            toks = row.split(",")
            if len(toks) != 785:
                raise ToolkitError(
                    f"{_csv_where(path, ln)}: {len(toks)} columns, expected 785 (784 pixels then the label); {CSV_FIX}"
                )
            for j, t in enumerate(toks, 1):
                try:
                    int(t.strip())
                except ValueError:
                    raise ToolkitError(
                        f"{_csv_where(path, ln)}, column {j}: {t.strip()!r} is not an integer; {CSV_FIX}"
                    ) from None
        raise ToolkitError(f"{path} cannot be read as a CSV of integers; {CSV_FIX}")
    assert rows is not None  # (read: bad is None)
    if label_first:
        labels, pixels = rows[:, 0], rows[:, 1:]
    else:
        pixels, labels = rows[:, :784], rows[:, 784]
    out = (pixels < 0) | (pixels > 255)
    if out.any():
        r, c = np.argwhere(out)[0]
        raise ToolkitError(
            f"{_csv_where(path, numbers[r])}: pixel {c + 1} is {int(pixels[r, c])}, outside 0..255; {CSV_FIX}"
        )
    out = (labels < 0) | (labels > 9)
    if out.any():
        r = int(np.flatnonzero(out)[0])
        raise ToolkitError(f"{_csv_where(path, numbers[r])}: label {int(labels[r])} is outside 0..9; {CSV_FIX}")
    return pixels.astype(np.uint8), labels.astype(np.uint8)


def split_per_class(
    labels: np.ndarray, test_fraction: float = CSV_TEST_FRACTION, seed: int = CSV_SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic class-stratified split (the procedure of ``make_demo_subset.py``): per class,
    a fixed pseudo-random order, the first ``round(fraction * n_class)`` go to the test set; each
    set is then put in a fixed pseudo-random order. Returns (train indices, test indices)."""
    rng = np.random.Generator(np.random.PCG64(seed))
    train, test = [], []
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        k = round(test_fraction * len(idx))
        test.append(idx[:k])
        train.append(idx[k:])
    train_idx, test_idx = np.concatenate(train), np.concatenate(test)
    return train_idx[rng.permutation(len(train_idx))], test_idx[rng.permutation(len(test_idx))]


def load_csv(path: Path) -> tuple[Split, Split]:
    """An MNIST CSV split per class 80/20 into (train, test), deterministically (for
    ``mnist_5k.csv.gz`` this is exactly the bundled subset)."""
    x, y = read_mnist_csv(path)
    tr, te = split_per_class(y)
    if len(tr) == 0 or len(te) == 0:
        raise ToolkitError(
            f"{path} has too few rows ({len(y)}) for a train/test split (20% of each class "
            "goes to the test set); give at least 3 rows per class"
        )
    return _mnist_splits({"x_train": x[tr], "y_train": y[tr], "x_test": x[te], "y_test": y[te]}, str(path))


def load_data_file(path: str | os.PathLike) -> tuple[Split, Split]:
    """``task.data_file``: an .npz (x_train, y_train, x_test, y_test) or an MNIST .csv / .csv.gz."""
    p = Path(os.path.expanduser(str(path)))
    name = p.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        if not p.is_file():
            raise ToolkitError(
                f"task.data_file {str(path)!r} not found; give an existing MNIST CSV "
                "(785 integer columns: 784 pixels then the label)"
            )
        return load_csv(p)
    if name.endswith(".npz"):
        return load_npz(p)
    raise ToolkitError(
        f"task.data_file {str(path)!r}: expected an .npz (x_train, y_train, x_test, y_test) "
        "or an MNIST .csv / .csv.gz file"
    )


# -- subsets for CPU-budget runs ----------------------------------------------------------------
