#!/usr/bin/env bash
# The package as users get it: build the sdist, then the wheel from the sdist (python -m build),
# install the wheel into a fresh virtual environment in a temporary directory (outside the
# checkout), and run the quick start there from a directory outside the checkout:
#   1. import, version, a MomentumLSTM forward, the console script's hint without the toolkit;
#   2. an AdamLSTM forward + backward that builds the C++ time loop at first use into an empty
#      temporary MOMENTUMRNN_EXTENSIONS_DIR, with no warning;
#   3. the same with no compiler to be found (CXX pointing to nothing, PATH without c++ / g++ /
#      clang++): one RuntimeWarning, and the same numbers from the Python loop.
# Also checks that the sdist and the wheel hold the C++ source, the recipes, the bundled data and
# py.typed. Needs network access to the package index only as pip does (torch==2.13.0, numpy,
# setuptools for the isolated build).
# Python: $MOMENTUMRNN_PYTHON (with `build` installed), else .venv/bin/python.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${MOMENTUMRNN_PYTHON:-.venv/bin/python}
BASE_PY=$("$PY" -c 'import sys; print(getattr(sys, "_base_executable", sys.executable))')
WORK=$(mktemp -d "${TMPDIR:-/tmp}/momentumrnn-wheel.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
say() { echo "check_wheel: $*"; }

say "building the sdist and, from it, the wheel"
"$PY" -m build --outdir "$WORK/dist" . >"$WORK/build.log" 2>&1 || { tail -n 40 "$WORK/build.log"; exit 1; }
sdist=$(ls "$WORK"/dist/momentumrnn-*.tar.gz)
wheel=$(ls "$WORK"/dist/momentumrnn-*.whl)
say "$(basename "$sdist"), $(basename "$wheel")"

# What the installed package needs besides its .py files, as tracked in this checkout.
mapfile -t needed < <(git ls-files --cached --others --exclude-standard 'src/momentumrnn/**/*.cpp' \
                             'src/momentumrnn/**/*.yaml' 'src/momentumrnn/**/*.npz' 'src/momentumrnn/py.typed')
[ "${#needed[@]}" -ge 4 ] || { say "expected package data files, found ${#needed[@]}"; exit 1; }
tar -tzf "$sdist" | sed 's|^[^/]*/||' | sort >"$WORK/sdist.txt"
"$BASE_PY" -m zipfile -l "$wheel" | awk 'NR > 1 {print $1}' | sort >"$WORK/wheel.txt"
missing=0
for f in "${needed[@]}"; do
    grep -qxF "$f" "$WORK/sdist.txt" || { say "sdist lacks $f"; missing=1; }
    grep -qxF "${f#src/}" "$WORK/wheel.txt" || { say "wheel lacks ${f#src/}"; missing=1; }
done
[ "$missing" = 0 ] || exit 1
say "sdist and wheel hold the ${#needed[@]} data files (C++ source, recipes, bundled data, py.typed)"

say "installing the wheel into a fresh virtual environment"
"$BASE_PY" -m venv "$WORK/venv"
VPY=$WORK/venv/bin/python
"$VPY" -m pip install --quiet --disable-pip-version-check torch==2.13.0
"$VPY" -m pip install --quiet --disable-pip-version-check "$wheel"

mkdir -p "$WORK/run" "$WORK/nobin"
cd "$WORK/run"  # outside the checkout: nothing of it can be imported
unset PYTHONPATH
export PYTHONNOUSERSITE=1 MOMENTUMRNN_EXTENSIONS_DIR=$WORK/ext
unset MOMENTUMRNN_NO_EXTENSION

cat >quickstart.py <<'PYEOF'
import os, sys, warnings
from importlib import metadata

import torch

import momentumrnn as mr
from momentumrnn.backends import _build, compiled

calls = [0]  # calls into the compiled operator: the C++ loop ran, not the Python one
_call = compiled.call_gated_loop
def counting(*a, **k):
    calls[0] += 1
    return _call(*a, **k)
compiled.call_gated_loop = counting

mode = sys.argv[1]
venv = os.environ["CHECK_VENV"]
assert mr.__file__.startswith(venv), f"imported {mr.__file__}, not the installed wheel"
assert mr.__version__ == metadata.version("momentumrnn"), (mr.__version__, metadata.version("momentumrnn"))

torch.manual_seed(0)
lstm = mr.MomentumLSTM(input_size=1, hidden_size=16, batch_first=True, mu=0.6, epsilon=0.6)
layer = mr.AdamLSTM(3, 8, num_layers=2, dtype=torch.float64)
x = torch.randn(30, 2, 3, dtype=torch.float64, requires_grad=True)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    out = lstm(torch.randn(4, 50, 1))[0]  # heavy ball: the C++ loop too (else the native kernel)
    assert out.shape == (4, 50, 16), out.shape
    outs = []
    for _ in range(2):  # the second call must not warn again
        y = layer(x)[0]
        grads = torch.autograd.grad(y.square().sum(), [x, *layer.parameters()])
        outs.append([y.detach(), *grads, out.detach()])
ours = [str(w.message) for w in caught if "momentumrnn" in str(w.message)]
status = _build.status()
if mode == "compiled":
    assert status["available"], status
    assert status["path"].startswith(os.environ["MOMENTUMRNN_EXTENSIONS_DIR"]), status
    assert not ours, ours
    assert calls[0] > 0, "the compiled loop did not run"
    torch.save(outs[0], "compiled.pt")
else:
    assert not status["available"] and "no C++ compiler found" in status["reason"], status
    assert len(ours) == 1 and "Python loop (same results" in ours[0], ours
    assert calls[0] == 0, calls
    for a, b in zip(torch.load("compiled.pt"), outs[0]):  # (the heavy-ball output in float32)
        torch.testing.assert_close(b, a, **({} if b.dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-12}))
for a, b in zip(*outs):
    assert torch.equal(a, b)
print(f"{mode}: ok ({status['reason']})")
PYEOF

say "quick start (import, MomentumLSTM and AdamLSTM, building the C++ loop at first use)"
start=$(date +%s)
CHECK_VENV=$WORK/venv "$VPY" quickstart.py compiled
say "  first use, build included: $(( $(date +%s) - start )) s"
ls "$MOMENTUMRNN_EXTENSIONS_DIR"/gated_loop_*.so >/dev/null

say "quick start with no C++ compiler on PATH and CXX pointing to nothing (the fallback)"
MOMENTUMRNN_EXTENSIONS_DIR=$WORK/ext-none CXX=$WORK/nobin/no-such-compiler PATH=$WORK/nobin \
    CHECK_VENV=$WORK/venv "$VPY" quickstart.py fallback

say "the console script without the toolkit's extra: a one-line hint, exit code 2"
set +e
hint=$("$WORK/venv/bin/momentumrnn" list 2>&1); rc=$?
set -e
[ "$rc" = 2 ] && [[ "$hint" == *"pip install 'momentumrnn[train]'"* ]] || { say "unexpected ($rc): $hint"; exit 1; }

cd "$ROOT"
say "ok"
