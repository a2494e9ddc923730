#!/usr/bin/env bash
# The checks that need an accelerator, in one go (under 8 minutes on one H100/H200), results under OUT:
#   bash bench/gpu_check.sh [--smoke] [OUT]      # OUT default: runs/gpu_check (not committed; copy what you quote)
# 1. bench/gpu_steps.py: VIM-Base bf16 training step time and MFU, eager and torch.compile; a 1-GPU FSDP2 step
#    (only once vimtool.train.distributed exists); KV-cached decode tokens/s at batch 1 and 64   -> gpu_steps.json
# 2. bench/bench_plan.py --device cuda: peak memory and FLOPs against `vimtool plan` at the papers' shapes
#                                                                                                -> plan_check_gpu.json
# 3. bench/bench_fid.py --device cuda: Inception feature throughput (vs pytorch-fid when installed) -> fid.json
# Without CUDA (or with --smoke) it is a smoke run: the CUDA-only parts print "skipped: ... (needs CUDA)", and
# gpu_steps and bench_fid run at their --smoke sizes on the CPU (seconds), so the script itself stays tested
# (tests/test_gpu_check.py). Each part has its own time limit; a failed part is reported and the rest still run.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
SMOKE=""
if [[ "${1:-}" == "--smoke" ]]; then SMOKE="--smoke"; shift; fi
OUT="${1:-$REPO/runs/gpu_check}"
mkdir -p "$OUT"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
PY="${PYTHON:-python}"
if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  DEVICE=cuda
  echo "gpu_check: $("$PY" -c "import torch; print(torch.cuda.get_device_name(), 'torch', torch.__version__)")"
else
  DEVICE=cpu
  SMOKE="--smoke"
  echo "gpu_check: no CUDA device: smoke run on the CPU"
fi
failed=()
part() {  # NAME SECONDS COMMAND...: run one part under a time limit; remember failures
  local name="$1" limit="$2" start=$SECONDS
  shift 2
  echo "== $name (limit ${limit} s): $*"
  if timeout "$limit" "$@"; then
    echo "== $name: done in $((SECONDS - start)) s"
  else
    echo "== $name: FAILED or timed out (exit $?) after $((SECONDS - start)) s"
    failed+=("$name")
  fi
}
part "training steps and decoding" 210 "$PY" "$HERE/gpu_steps.py" --device "$DEVICE" $SMOKE --out "$OUT"
if [[ "$DEVICE" == cuda ]]; then
  part "plan vs measured memory" 180 "$PY" "$HERE/bench_plan.py" --device cuda $SMOKE --out "$OUT"
else
  echo "skipped: plan vs measured peak memory at the papers' shapes, bench_plan.py --device cuda (needs CUDA)"
fi
part "FID feature throughput" 60 "$PY" "$HERE/bench_fid.py" --device "$DEVICE" $SMOKE --out "$OUT"
echo "gpu_check: results in $OUT"
if ((${#failed[@]})); then
  echo "gpu_check: failed: ${failed[*]}"
  exit 1
fi
