#!/usr/bin/env bash
# The GPU check: the tests marked `gpu` (tests/gpu), then benchmarks/gpu.py --quick. Under 8 minutes on one
# GPU (each part has its own time limit); on a machine without CUDA both run with the GPU parts skipped.
#
#   benchmarks/gpu_check.sh                 # results in benchmarks/results/gpu.quick.json
#   PYTHON=/path/to/python OUT=/tmp/r benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
OUT="${OUT:-benchmarks/results}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" -c 'import torch; print("cuda:", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'
echo "== tests/gpu (pytest -m gpu)"
timeout 240 "$PYTHON" -m pytest -q -p no:cacheprovider -m gpu -rs tests/gpu
echo "== benchmarks/gpu.py --quick"
timeout 220 "$PYTHON" benchmarks/gpu.py --quick --out "$OUT"
