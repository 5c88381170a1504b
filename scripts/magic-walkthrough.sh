#!/usr/bin/env bash
# The judge + refine walk-through of the docs (README, docs/judge.md, docs/refine.md) on a demo,
# offline, at a tiny budget: data demo -> describe -> train -> generate --oversample -> judge ->
# judge show -> judge filter --per-request -> refine -> generate (refined) -> evaluate.
# Usage: scripts/magic-walkthrough.sh derm|cxr OUTDIR   (each step is skipped when done).
# TRAIN_STEPS (300), N (2 requests per class), K (4 candidates) and REFINE_STEPS (4) set the budget.
set -euo pipefail
DEMO=$1
OUT=$2
MS=${MEDSYNTH:-.venv/bin/medsynth}
T=(--threads 1)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MEDSYNTH_NO_PROGRESS=${MEDSYNTH_NO_PROGRESS:-1}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
done_() { [ -f "$1/medsynth.json" ]; }
step() { printf '\n== %s (%s)\n' "$1" "$(date +%T)"; }
mkdir -p "$OUT"

step "data + describe"
done_ "$OUT/data" || "$MS" data demo "$DEMO" --out "$OUT/data" --size 32 --n-per-class 40
done_ "$OUT/store" || "$MS" describe "$OUT/data" --out "$OUT/store" --split train

step "train (${TRAIN_STEPS:-300} steps of examples/$DEMO-cpu.yaml)"
done_ "$OUT/model" || "$MS" train "$OUT/data" --store "$OUT/store" --out "$OUT/model" \
  --config "examples/$DEMO-cpu.yaml" --max-steps "${TRAIN_STEPS:-300}" "${T[@]}" \
  $([ -d "$OUT/model" ] && echo --resume)

step "generate --oversample"
done_ "$OUT/cands" || "$MS" generate "$OUT/model" --class all --n "${N:-2}" \
  --oversample "${K:-4}" --steps 10 --out "$OUT/cands" "${T[@]}" \
  $([ -d "$OUT/cands" ] && echo --resume)

step "judge (offline measure judge, shipped $DEMO criteria)"
"$MS" judge "$OUT/cands" --criteria "$DEMO" --out "$OUT/judged" \
  $([ -d "$OUT/judged" ] && echo --resume)
"$MS" judge show "$OUT/judged" --n 1

step "judge filter --per-request"
if ! done_ "$OUT/best"; then
  # a weakly trained model can leave a request without any valid candidate: then the documented
  # alternative (the best quarter of each class) is used
  "$MS" judge filter "$OUT/judged" --per-request --out "$OUT/best" \
    || "$MS" judge filter "$OUT/judged" --top-fraction "$(python3 -c "print(1/${K:-4})")" \
         --out "$OUT/best"
fi

step "refine (DPO + LoRA)"
# --bad-score 0: at this budget most scores are low; any scored difference is a pair
done_ "$OUT/model2" || "$MS" refine "$OUT/model" --judged "$OUT/judged" --out "$OUT/model2" \
  --config examples/refine-cpu.yaml --steps "${REFINE_STEPS:-4}" --batch-size 2 \
  --bad-score 0 --no-early-stop "${T[@]}" $([ -d "$OUT/model2" ] && echo --resume)

step "generate with the refined model"
done_ "$OUT/synth2" || "$MS" generate "$OUT/model2" --class all --n "${N:-2}" --steps 10 \
  --out "$OUT/synth2" "${T[@]}" $([ -d "$OUT/synth2" ] && echo --resume)

step "evaluate (filtered and refined sets)"
done_ "$OUT/report" || "$MS" evaluate --real "$OUT/data" --synthetic "$OUT/best,$OUT/synth2" \
  --out "$OUT/report" --seeds 2 --real-fraction 1.0 --epochs 2 --feature-size 64 \
  --baselines none "${T[@]}" $([ -d "$OUT/report" ] && echo --resume)
step "done: $OUT/report/report.html"
