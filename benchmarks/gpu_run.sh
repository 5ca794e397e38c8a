#!/usr/bin/env bash
# GPU extraction throughput, old batching (fixed count) against the new (token budget, packing), for the
# Llama-3.2-1B, Llama-3.2-3B and Llama-3.1-8B shapes (random weights, bf16), then the lambda sweep and the
# capability cost's stacked greedy generations. About 5-6 minutes on an H200 before the generation check was
# added (2026-12-06; not yet timed on a GPU: give each shape up to 200 s).
#
#   bash benchmarks/gpu_run.sh            (from the repository root; writes $OUT/gpu_check.txt when OUT is set)
#   SHAPES=tiny DEVICE=cpu N_TEXTS=48 MAX_LENGTH=64 bash benchmarks/gpu_run.sh     (dry run of the code path on a CPU)
#
# Each shape runs in its own process under a timeout and its lines are written as they come, so a failure or a
# timeout in one shape loses nothing of the others.
set -u -o pipefail
set -x
cd "$(dirname "$0")/.."
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY="${PYTHON:-python3}"
SHAPES="${SHAPES:-llama-1b llama-3b llama-8b}"
DEVICE="${DEVICE:-cuda}"
N_TEXTS="${N_TEXTS:-512}"
MAX_LENGTH="${MAX_LENGTH:-512}"
PER_SHAPE_TIMEOUT="${PER_SHAPE_TIMEOUT:-200}"
TABLE="${OUT:-.}/gpu_check.txt"
LOG="${OUT:-.}/gpu_check.log"
mkdir -p "$(dirname "$TABLE")"
: > "$TABLE"
{
  echo "# gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "(no nvidia-smi)"
  "$PY" -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__)'
} 2>&1 | tee -a "$TABLE"
status=0
for shape in $SHAPES; do
  timeout -k 10 "$PER_SHAPE_TIMEOUT" "$PY" benchmarks/gpu_check.py --shape "$shape" --device "$DEVICE" \
      --n-texts "$N_TEXTS" --max-length "$MAX_LENGTH" --table "$TABLE" 2>&1 | tee -a "$LOG"
  rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "!! $shape failed or timed out (exit $rc); see $LOG" | tee -a "$TABLE"
    status=1
  fi
done
set +x
echo; echo "==== table ($TABLE) ===="; cat "$TABLE"
exit $status
