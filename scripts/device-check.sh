#!/usr/bin/env bash
# The GPU checks of issue 11 on one CUDA GPU, in under 8 minutes: the CUDA tests (tests/test_gpu.py,
# float64 against the CPU, graph capture and replay), then the GPU benchmark (benchmarks/gpu.py).
# Uses the Python that holds a CUDA build of torch: $PYTHON, else python3 (the repository's .venv
# holds the CPU build). Logs go to $OUT (default /tmp/device-check).
#
#   bash scripts/device-check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/device-check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
status=0

nvidia-smi -L 2>&1 | tee "$OUT/device.txt"
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' \
    2>&1 | tee -a "$OUT/device.txt"
"$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' || {
    echo "device-check: no CUDA device visible to $PY"; exit 2; }

echo "== CUDA tests (limit 240 s)"
timeout 240 "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_gpu_paths.py 2>&1 \
    | tee "$OUT/tests.log" || status=1

echo "== GPU benchmark, every shape (limit 150 s)"
timeout 150 "$PY" benchmarks/gpu.py --markdown --repeat 3 2>&1 | tee "$OUT/gpu-benchmark.md" || status=1

echo "== GPU benchmark, the other backends at two shapes (limit 60 s)"
timeout 60 "$PY" benchmarks/gpu.py --shapes smnist128,ptb --alternatives --no-authors --markdown --repeat 3 2>&1 \
    | tee "$OUT/gpu-alternatives.md" || status=1

echo "device-check: exit $status (logs in $OUT)"
exit $status
