#!/usr/bin/env bash
# GPU extraction with the decoder blocks compiled (torch.compile) against the same packed batches run eagerly, and the
# 5-lambda sweep both ways, for the Llama-3.2-1B, Llama-3.2-3B and Llama-3.1-8B shapes (random weights, bf16, one
# token budget). At most about 4 minutes on an H200, compile time included (per-shape timeouts add up to 225 s).
#
#   OUT=/some/dir bash benchmarks/gpu_run2.sh     (from the repository root; writes $OUT/gpu_check2.txt, default ./)
#   SHAPES=tiny DEVICE=cpu N_TEXTS=48 MAX_LENGTH=64 TOKENS=1024 bash benchmarks/gpu_run2.sh   (dry run on a CPU)
#
# Each shape runs in its own process under its own timeout (8B last) and its lines are written as they come, so a
# failure or a timeout in one shape loses nothing of the others. Per shape: packed eager (timed), the compiled path's
# first run on all texts (compile + run, printed apart), compiled (timed), then the sweep eager and compiled.
set -u -o pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY="${PYTHON:-python3}"
SHAPES="${SHAPES:-llama-1b llama-3b llama-8b}"
DEVICE="${DEVICE:-cuda}"
N_TEXTS="${N_TEXTS:-512}"
MAX_LENGTH="${MAX_LENGTH:-512}"
TOKENS="${TOKENS:-65536}"
SWEEP_TEXTS="${SWEEP_TEXTS:-256}"
COMPILE_MODE="${COMPILE_MODE:-}"          # e.g. max-autotune-no-cudagraphs (slower to compile)
COMPILE_DYNAMIC="${COMPILE_DYNAMIC:-auto}"
TABLE="${OUT:-.}/gpu_check2.txt"
LOG="${OUT:-.}/gpu_check2.log"
mkdir -p "$(dirname "$TABLE")"
: > "$TABLE"
: > "$LOG"
# one inductor cache for the three processes (kernels that recur are compiled once)
export TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-${TMPDIR:-/tmp}/gpu_run2-inductor-cache}"
{
  echo "# gpu_check2 $(date -u +%Y-%m-%dT%H:%M:%SZ): packed eager vs compiled, $TOKENS tokens per batch"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "(no nvidia-smi)"
  "$PY" -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__)'
} 2>&1 | tee -a "$TABLE"
timeout_for() {
  case "$1" in
    llama-1b) echo "${TIMEOUT_1B:-65}" ;;
    llama-3b) echo "${TIMEOUT_3B:-70}" ;;
    llama-8b) echo "${TIMEOUT_8B:-90}" ;;
    *) echo "${TIMEOUT_OTHER:-150}" ;;
  esac
}
status=0
start=$(date +%s)
for shape in $SHAPES; do
  limit=$(timeout_for "$shape")
  t0=$(date +%s)
  mode_args=()
  [ -n "$COMPILE_MODE" ] && mode_args=(--compile-mode "$COMPILE_MODE")
  timeout -k 5 "$limit" "$PY" benchmarks/gpu_check.py --shape "$shape" --device "$DEVICE" \
      --n-texts "$N_TEXTS" --max-length "$MAX_LENGTH" --paths packed compiled --tokens-per-batch "$TOKENS" \
      --bare-batch 0 --sweep-texts "$SWEEP_TEXTS" --sweep-settings all --no-independent \
      --compile-dynamic "$COMPILE_DYNAMIC" "${mode_args[@]}" --table "$TABLE" >> "$LOG" 2>&1
  rc=$?
  echo "($shape: exit $rc after $(( $(date +%s) - t0 ))s of $limit s)" | tee -a "$TABLE"
  if [ "$rc" -ne 0 ]; then
    echo "!! $shape failed or timed out (exit $rc); last log lines:" | tee -a "$TABLE"
    tail -n 8 "$LOG" | tee -a "$TABLE"
    status=1
  fi
done
echo "# total $(( $(date +%s) - start ))s" | tee -a "$TABLE"
echo; echo "==== table ($TABLE) ===="; cat "$TABLE"
exit $status
