#!/usr/bin/env bash
# Every benchmark and paper-claim study of docs/BENCHMARKS.md, one after the other; tables and plots land in
# bench/results/ and each study's wall time in bench/results/run_all_times.txt.
#
#   bash bench/run_all.sh            # default sizes (issue 8: within about an hour on a 2-core CPU; see BENCHMARKS.md)
#   bash bench/run_all.sh --smoke    # seconds each: what CI may run (writes smoke_* files)
#   ONLY="peers noble" bash bench/run_all.sh     # a subset
#
# The peer comparison creates bench/.peer-venv (parti-pytorch in its own venv) on first use: a large download.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SMOKE="${1:-}"
ONLY="${ONLY:-peers scaling tokenizer probe guidance noble}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
mkdir -p "$HERE/results"
times="$HERE/results/${SMOKE:+smoke_}run_all_times.txt"
: > "$times"
for name in $ONLY; do
  case "$name" in
    peers) script="$HERE/bench_peers.py" ;;
    *) script="$HERE/study_${name}.py" ;;
  esac
  start=$(date +%s)
  echo "[run_all] $name: python $script $SMOKE" >&2
  python "$script" $SMOKE
  echo "$name $(( $(date +%s) - start )) s (load $(cut -d' ' -f1 /proc/loadavg))" | tee -a "$times" >&2
done
