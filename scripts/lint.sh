#!/usr/bin/env bash
# Lint, format and type checks, as configured in pyproject.toml: ruff (lint), ruff format, mypy.
#   bash scripts/lint.sh           run all three; exit 1 if any has a finding
#   bash scripts/lint.sh --report  run all three, print the findings per rule / error code, exit 0
#                                  (to list what to fix; .ci/run runs the strict form)
#   bash scripts/lint.sh --fix     apply ruff's safe fixes and the formatter, then run all three
# Python: $MOMENTUMRNN_PYTHON, else .venv/bin/python (bash scripts/setup.sh makes it).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${MOMENTUMRNN_PYTHON:-.venv/bin/python}
mode=${1:-check}
case "$mode" in check|--report|--fix) ;; *) echo "usage: bash scripts/lint.sh [--report|--fix]" >&2; exit 2;; esac

if [ "$mode" = --fix ]; then
    "$PY" -m ruff check --fix --quiet . || true
    "$PY" -m ruff format --quiet .
fi

failed=()
echo "== ruff check"
if [ "$mode" = --report ]; then
    "$PY" -m ruff check --statistics . || failed+=("ruff check")
else
    "$PY" -m ruff check . || failed+=("ruff check")
fi
echo "== ruff format --check"
if [ "$mode" = --report ]; then
    out=$("$PY" -m ruff format --check . 2>&1) || failed+=("ruff format")
    echo "$out" | tail -n 1
else
    "$PY" -m ruff format --check . || failed+=("ruff format")
fi
echo "== mypy"
if [ "$mode" = --report ]; then
    out=$("$PY" -m mypy 2>&1) || failed+=("mypy")
    echo "$out" | grep -o '\[[a-z-]*\]$' | sort | uniq -c | sort -rn
    echo "$out" | tail -n 1
else
    "$PY" -m mypy || failed+=("mypy")
fi

if [ ${#failed[@]} -gt 0 ]; then
    echo "lint: findings in: ${failed[*]}"
    [ "$mode" = --report ] && exit 0
    exit 1
fi
echo "lint: clean"
