#!/usr/bin/env bash
# The documentation site (Sphinx + MyST; configuration: docs/conf.py).
#   bash scripts/docs.sh              build it into site/, strictly: any warning (a broken
#                                     reference or link, a public name without a page) fails
#   bash scripts/docs.sh serve [PORT] build, then serve site/ on http://127.0.0.1:PORT (8000)
# No network is needed to build. Python: $MOMENTUMRNN_PYTHON, else .venv/bin/python
# (bash scripts/setup.sh makes it).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${MOMENTUMRNN_PYTHON:-.venv/bin/python}
# -E: a fresh environment, so that every page's warnings are reported on every build
"$PY" -m sphinx -E -W --keep-going -n -q -b html -d build/doctrees docs site
echo "docs: site/index.html"
if [ "${1:-}" = serve ]; then
    port=${2:-8000}
    echo "docs: serving on http://127.0.0.1:$port (Ctrl-C stops)"
    exec "$PY" -m http.server --bind 127.0.0.1 --directory site "$port"
fi
