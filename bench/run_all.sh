#!/usr/bin/env bash
# The default-size peer comparison, scaling benchmark and paper-claim studies of docs/BENCHMARKS.md; tables and plots
# land in bench/results/ and bench/studies/results/, each one's wall and CPU time in bench/results/run_all_times.txt.
# Then `python bench/make_docs.py` regenerates docs/BENCHMARKS.md from them.
#
#   bash bench/run_all.sh            # default sizes (within an hour on a 2-core CPU; see docs/BENCHMARKS.md)
#   bash bench/run_all.sh --smoke    # seconds each: what CI may run (writes smoke_* files)
#   ONLY="peers noble" bash bench/run_all.sh     # a subset (peers scaling tokenizer_lookup probe guidance noble)
#   (noble, the resumable NOBLE study, takes many CPU-hours: it runs only when named in ONLY)
#   JOBS=1 bash bench/run_all.sh     # one study at a time (default: one per core, at most 2)
#
# Every study runs torch on ONE thread (their --threads default), so on a 2-core machine two studies side by side
# use the machine fully; the timings inside each study are CPU-clock or medians of repeats, and the peer
# comparison reports ratios measured within one process, so running two at once changes the wall time, not the
# ratios. For timing tables you will quote, prefer JOBS=1 on a quiet machine.
# The peer comparison creates bench/.peer-venv (parti-pytorch in its own venv) on first use: a large download.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SMOKE="${1:-}"
ONLY="${ONLY:-peers scaling tokenizer_lookup probe guidance}"
cores=$(nproc 2>/dev/null || echo 1)
JOBS="${JOBS:-$(( cores < 2 ? 1 : 2 ))}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
mkdir -p "$HERE/results"
times="$HERE/results/${SMOKE:+smoke_}run_all_times.txt"
logs="$HERE/results/${SMOKE:+smoke_}run_all_logs"
mkdir -p "$logs"
: > "$times"
run_one() {  # NAME: run one study, append "NAME wall s, cpu s (load)" to the times file; its output goes to logs/
  local name="$1" script start cpu
  case "$name" in
    peers|scaling) script="$HERE/bench_${name}.py" ;;
    *) script="$HERE/studies/${name}.py" ;;
  esac
  start=$(date +%s)
  echo "[run_all] $name: python $script $SMOKE   (log: $logs/$name.log)" >&2
  # /usr/bin/time -f "%U %S" gives user+system CPU seconds of the study and every process it starts
  if ! /usr/bin/time -o "$logs/$name.cpu" -f "%U %S" python "$script" $SMOKE > "$logs/$name.log" 2>&1; then
    echo "[run_all] $name FAILED: see $logs/$name.log" >&2
    tail -5 "$logs/$name.log" >&2
    echo "$name" >> "$logs/FAILED"
    return 1
  fi
  cpu=$(awk '{printf "%d", $1 + $2}' "$logs/$name.cpu")
  echo "$name: wall $(( $(date +%s) - start )) s, cpu $cpu s (load $(cut -d' ' -f1 /proc/loadavg))" | tee -a "$times" >&2
}
start_all=$(date +%s)
rm -f "$logs/FAILED"
for name in $ONLY; do
  while (( $(jobs -rp | wc -l) >= JOBS )); do wait -n || true; done
  run_one "$name" &
done
wait || true
echo "all ($JOBS at a time): wall $(( $(date +%s) - start_all )) s" | tee -a "$times" >&2
if [[ -f "$logs/FAILED" ]]; then echo "[run_all] failed: $(tr '\n' ' ' < "$logs/FAILED")" >&2; exit 1; fi
