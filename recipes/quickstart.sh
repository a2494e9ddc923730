#!/usr/bin/env bash
# Pictures from words on a laptop: the whole text-to-image pipeline on the built-in `shapes` set, CPU only.
#
#   bash recipes/quickstart.sh [OUT_DIR]          (default OUT_DIR: runs/quickstart)
#
# 1. train a ViT-VQGAN image tokenizer on 32x32 shapes       (recipes/parti_shapes_tokenizer.yaml)
# 2. tokenize the training images into captioned token shards
# 3. train a tiny Parti on (caption, tokens)                 (recipes/parti_shapes.yaml)
# 4. sample prompts of SEEN colour+shape combinations and of combinations HELD OUT of training
#    (red triangle, blue circle, green square), with and without classifier-free guidance, 16 samples per prompt
#    at temperature 0.85, reranked by the model's own likelihood of each picture given its prompt, and grade
#    every picture with the shapes checker.
# Prints the prompt-adherence table and where the pictures are; every stage logs its progress on stderr.
# Runtime: ~10 CPU-minutes on one core (tokenizer ~4, Parti ~5, sampling + grading ~1.3). Measured 2026-11-24 on
# this project's 2-core machine shared with other jobs (load ~2.5): 10 min 23 s wall, 10.1 CPU-min (user+sys), end
# to end into a fresh folder. On a quiet 2-core laptop expect ~10-11 min. Rerunning is cheap: finished stages are
# resumed, not redone.
# Measured result (128 prompts x 16 samples per row; shapes checker pass rate; reranking = model likelihood):
#   prompts   guidance     all samples  first sample  reranked best
#   seen      guided (1.5)       67.8%         68.0%          78.9%
#   seen      unguided (1)       59.4%         60.2%          76.6%
#   heldout   guided (1.5)       40.2%         46.1%          43.0%
#   heldout   unguided (1)       31.5%         32.0%          29.7%
# A second run of this recipe (library code changed by other work in between) read 85.2% / 76.6% on seen prompts.
# The tokenizer passes the checker on ~85% of its reconstructions of real val images
# (recipes/parti_shapes_tokenizer.yaml; small squares with soft edges read as circles), the ceiling for the table.
# Before (1600 tokenizer steps, 32 prompts x 8 samples, temperature 1): 68.8% seen, guided, reranked.
set -euo pipefail

OUT="${1:-runs/quickstart}"
HOLDOUT="red+triangle;blue+circle;green+square"
DATA="shapes:size=32,objects=1,n=6000,holdout=${HOLDOUT}"
TOK_STEPS="${QS_TOKENIZER_STEPS:-3200}"
PARTI_STEPS="${QS_PARTI_STEPS:-1500}"
PROMPTS="${QS_PROMPTS:-128}"  # 128 not 32: at 32 one prompt is 3.1 points and two runs of this script read 66% and 84%
SAMPLES="${QS_SAMPLES:-16}"  # 16 not 8: on the tuning prompts below, reranked 75.0% vs 71.9% with guidance (+25 CPU-s)
# 0.85, not the paper's 1.0: chosen on 32 OTHER seen prompts (caption seed 2, not the graded seed 1), where 1.0 / 0.85
# / 0.7 / 0.5 gave 65.6 / 71.9 / 68.8 / 78.1% reranked with guidance, but only at 0.85 did guidance beat no guidance
# on all three columns and reranking beat the first sample (at 0.5 it picked worse: 90.6% first, 78.1% reranked).
TEMPERATURE="${QS_TEMPERATURE:-0.85}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# More threads than free cores slows torch down many-fold on a shared machine; 1-2 is right for a laptop.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
mkdir -p "$OUT"
start=$(date +%s)
stage() { echo "[quickstart $(( $(date +%s) - start ))s] $*" >&2; }

stage "1/4 training the image tokenizer (${TOK_STEPS} steps)"
TOK=$(vimtool train-tokenizer --config "$HERE/parti_shapes_tokenizer.yaml" --data "$DATA" --steps "$TOK_STEPS" \
      --out-dir "$OUT/tokenizer" --resume)

stage "2/4 tokenizing the training images"
vimtool tokenize-dataset --tokenizer "$TOK" --data "$DATA" --out "$OUT/shards" > "$OUT/shards.txt"

stage "3/4 training Parti (${PARTI_STEPS} steps)"
PARTI=$(vimtool train-t2i --shards - --config "$HERE/parti_shapes.yaml" --steps "$PARTI_STEPS" \
        --out-dir "$OUT/parti" --resume < "$OUT/shards.txt")

stage "4/4 sampling seen and held-out prompts (temperature ${TEMPERATURE})"
python - "$OUT" "$PROMPTS" "$HOLDOUT" <<'EOF'
import sys
from vimtool.data.shapes import captions
out, n, holdout = sys.argv[1], int(sys.argv[2]), sys.argv[3]
# "val" never contains a held-out combination; "holdout" always does (vimtool/data/shapes.py)
for group, split in (("seen", "val"), ("heldout", "holdout")):
    with open(f"{out}/prompts_{group}.txt", "w", encoding="utf-8") as f:
        f.write("\n".join(captions(n, split, seed=1, objects=(1,), holdout=holdout)) + "\n")
EOF
for group in seen heldout; do
  for mode in guided unguided; do
    scale=$([ "$mode" = guided ] && echo "" || echo "--guidance-scale 1")
    # shellcheck disable=SC2086
    vimtool sample -c "$PARTI" --prompts-file "$OUT/prompts_${group}.txt" --samples-per-prompt "$SAMPLES" $scale \
      --temperature "$TEMPERATURE" \
      --checker shapes --out "$OUT/samples/${group}_${mode}" --device cpu > /dev/null
  done
done

python - "$OUT" "$(( $(date +%s) - start ))" <<'EOF'
import json, sys
out, seconds = sys.argv[1], int(sys.argv[2])
print(f"\nPrompt adherence (shapes checker pass rate), {seconds // 60} min {seconds % 60} s in all")
print(f"{'prompts':<10}{'guidance':<12}{'all samples':>12}{'first sample':>14}{'reranked best':>15}")
for group in ("seen", "heldout"):
    for mode in ("guided", "unguided"):
        rec = json.load(open(f"{out}/samples/{group}_{mode}/sampling.json"))
        a, s = rec["adherence"], rec["settings"]["guidance_scale"]
        print(f"{group:<10}{mode + f' ({s:g})':<12}{a['all_samples']:>12.1%}{a['first_sample']:>14.1%}{a['reranked_best']:>15.1%}")
print(f"\nPictures: {out}/samples/*/grid.png (one row per prompt, best first); images in {out}/samples/*/images/")
print(f"Try your own: vimtool sample -c {out}/parti/final --prompt 'a large purple triangle in the top right' --out {out}/mine")
EOF
