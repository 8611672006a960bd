#!/usr/bin/env bash
# One go on a lent GPU box (no network, at most 8 minutes), from the repo root:
#   1. the GPU tests: `pytest -m gpu tests/gpu` when pytest is installed, else the same cases
#      through scripts/gpu_check_runner.py (plain python)
#   2. the engine benchmark at Dream-7B and LLaDA-8B shapes with random bf16 weights
#      (context 2048, block 32), plus the Dream step with the torch kernels for comparison
#   3. a short table against issue 5's targets: $OUT/gpu_report.md
#
#   bash scripts/gpu_check.sh             on the GPU box ($OUT defaults to ./gpu_out)
#   bash scripts/gpu_check.sh --dry-run   the same plumbing on a CPU with tiny shapes (for CI)
#
# Needs: python3 with torch, numpy (and cupy-cuda12x/13x for the fused kernels). The model
# configs come from tests/fixtures/model_configs (or $MODEL_CONFIGS).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-./gpu_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
CONFIGS=${MODEL_CONFIGS:-tests/fixtures/model_configs}
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
START=$(date +%s)
log() { echo "[gpu_check $(( $(date +%s) - START ))s] $*" | tee -a "$OUT/gpu_check.log"; }

# ---- 0. what machine is this --------------------------------------------------------------------
{
  echo "date: $(date -u +%FT%TZ)"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$PY" - <<'EOF'
import importlib, sys
print("python", sys.version.split()[0])
for name in ("torch", "cupy", "numpy", "pytest"):
    try:
        m = importlib.import_module(name)
        print(name, getattr(m, "__version__", "?"))
    except Exception as exc:
        print(name, "missing:", type(exc).__name__, exc)
import torch
print("cuda available:", torch.cuda.is_available(), torch.version.cuda)
if torch.cuda.is_available():
    print("device:", torch.cuda.get_device_name(0))
EOF
} > "$OUT/env.txt" 2>&1
log "environment: $(tr '\n' ';' < "$OUT/env.txt")"

# ---- 1. GPU tests -------------------------------------------------------------------------------
if [ "$DRY" = 1 ]; then
  log "dry run: checks on the CPU with the torch reference standing in for the fused kernels"
  DLLM_CHECKS_DEVICE=cpu timeout 300 "$PY" scripts/gpu_check_runner.py --quick --json "$OUT/gpu_tests.json" \
    > "$OUT/gpu_tests.txt" 2>&1
  TESTS_RC=$?
elif "$PY" -c "import pytest" 2>/dev/null; then
  log "pytest -m gpu tests/gpu"
  timeout 200 "$PY" -m pytest -m gpu tests/gpu -q -rs -p no:cacheprovider --junitxml="$OUT/gpu_tests.xml" \
    > "$OUT/gpu_tests.txt" 2>&1
  TESTS_RC=$?
else
  log "no pytest here: the same cases through scripts/gpu_check_runner.py"
  timeout 200 "$PY" scripts/gpu_check_runner.py --deadline 180 --json "$OUT/gpu_tests.json" \
    > "$OUT/gpu_tests.txt" 2>&1
  TESTS_RC=$?
fi
log "tests exit code $TESTS_RC: $(tail -n 1 "$OUT/gpu_tests.txt")"

# ---- 2. benchmark ---------------------------------------------------------------------------------
bench() {  # name, timeout, args...
  local name=$1 limit=$2
  shift 2
  log "bench $name: $*"
  timeout "$limit" "$PY" -m engine.bench.steps "$@" --out "$OUT/bench_$name.json" > "$OUT/bench_$name.txt" 2>&1
  log "bench $name exit code $?"
}
if [ "$DRY" = 1 ]; then
  TINY=(--layers 1 --hidden 128 --vocab 4096 --context 96 --span 8 --block 4 --reps 2 --bw-mib 16)
  bench dream 120 --random-weights "$CONFIGS/dream-v0-7b.json" "${TINY[@]}" --policies "quota k=1,quota k=2,threshold 0.9"
  bench llada 120 --random-weights "$CONFIGS/llada-8b.json" "${TINY[@]}" --sections step,kernels
  bench dream_torch_kernels 60 --random-weights "$CONFIGS/dream-v0-7b.json" "${TINY[@]}" --sections step --kernels torch
else
  REAL=(--context 2048 --span 32 --block 32 --dtype bfloat16 --reps 20 --cuda-graphs on)
  bench dream 150 --random-weights "$CONFIGS/dream-v0-7b.json" "${REAL[@]}"
  bench llada 150 --random-weights "$CONFIGS/llada-8b.json" "${REAL[@]}"
  bench dream_torch_kernels 60 --random-weights "$CONFIGS/dream-v0-7b.json" "${REAL[@]}" --sections step --kernels torch
fi

# ---- 3. report ------------------------------------------------------------------------------------
"$PY" scripts/gpu_report.py "$OUT" > "$OUT/gpu_report.md" 2>> "$OUT/gpu_check.log"
log "report written to $OUT/gpu_report.md"
cat "$OUT/gpu_report.md"
exit "$TESTS_RC"
