#!/usr/bin/env bash
# One device call (<= 8 minutes), nothing installed from the network:
#   1. the tests that need CUDA (pytest -m cuda), 2. training and every attack timed on the
#   GPU and on this machine's CPU. Results (markdown + logs) go to $OUT (default ./gpu-check).
#
#   run: bash scripts/gpu_check.sh          (from the repository root)
#   BUDGET=60 TESTS_S=90 bash scripts/gpu_check.sh   (a shorter call: seconds for the timings / the tests)
set -u
OUT=${OUT:-gpu-check}
BUDGET=${BUDGET:-220}
TESTS_S=${TESTS_S:-200}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" ANNT_OFFLINE=1
{
  echo "## environment"; date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
  python3 - <<'PY'
import importlib
missing = [m for m in ("numpy", "yaml", "pydantic", "safetensors", "tqdm", "matplotlib", "PIL", "pytest")
           if importlib.util.find_spec(m) is None]
print("missing python modules:", ", ".join(missing) or "none")
PY
} > "$OUT/environment.txt" 2>&1
cat "$OUT/environment.txt"

# 1. CUDA tests (skipped elsewhere); -p no:cacheprovider: write nothing into the tree
timeout "$TESTS_S" python3 -m pytest -q -m cuda tests/engine/test_cuda.py -p no:cacheprovider -x \
  > "$OUT/pytest_cuda.txt" 2>&1
echo "pytest -m cuda: exit $?" | tee -a "$OUT/pytest_cuda.txt"
tail -5 "$OUT/pytest_cuda.txt"

# 2. timings GPU vs CPU (stops itself before the time is up)
timeout $((BUDGET + 20)) python3 scripts/gpu_check.py --out "$OUT/gpu_timings.md" --budget "$BUDGET" 2>&1 | tee "$OUT/gpu_timings.log"
echo "gpu_check.py: exit ${PIPESTATUS[0]}"
