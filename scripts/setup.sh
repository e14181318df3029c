#!/usr/bin/env bash
# Set up a virtual environment in .venv with everything the project needs (idempotent): the
# library (editable), the toolkit, the test, docs and lint tools (extra `dev`).
# torch is pinned to the 2.13.0 CPU build: an unpinned torch would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
if ! .venv/bin/python -c 'import momentumrnn.toolkit, lightning, pytest, xdist, sphinx, myst_parser, mypy, ruff, build' \
       >/dev/null 2>&1 \
   || [ pyproject.toml -nt .venv/.installed ]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
    touch .venv/.installed
fi
