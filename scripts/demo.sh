#!/usr/bin/env bash
# End-to-end run on the built-in phantom data: data -> describe -> train -> generate -> evaluate.
# Usage: scripts/demo.sh [OUTDIR]   (make demo). Each stage resumes if OUTDIR already has its output.
set -euo pipefail
OUT=${1:-demo-run}
MS=${MEDSYNTH:-.venv/bin/medsynth}
RECIPE=${RECIPE:-examples/derm-demo.yaml}
# The generator starts from a shipped prior pretrained on another site's phantoms
# (examples/priors/README.md); PRIOR= (empty) trains from scratch.
PRIOR=${PRIOR-examples/priors/derm-site-b}
mkdir -p "$OUT"
has() { "$MS" "$1" --help >/dev/null 2>&1; }
TIMES=()
last=""; tl=$(date +%s); t0=$tl
stage() {
  local now; now=$(date +%s)
  [ -n "$last" ] && TIMES+=("$last=$((now - tl))")
  last=$1; tl=$now
  printf '\n\033[1m== %s\033[0m (%s)\n' "$2" "$(date +%T)"
}

stage data "1/5 data: derm phantoms"
# 500 per class: 170 train, 30 val and a held-out test split of 300 per class, big enough for
# evaluate to detect a 5-point gain; seed 1 draws the extra real images of the oracle baseline.
if [ ! -f "$OUT/data/medsynth.json" ]; then
  "$MS" data demo derm --out "$OUT/data" --n-per-class "${N_PER_CLASS:-500}" --size "${SIZE:-32}" \
    --seed 0 --val-fraction 0.06 --test-fraction 0.6
fi
if [ ! -f "$OUT/extra-real/medsynth.json" ]; then
  "$MS" data demo derm --out "$OUT/extra-real" --n-per-class "${N_SYNTH:-60}" --size "${SIZE:-32}" \
    --seed 1
fi
"$MS" data info "$OUT/data"

if has describe; then
  stage describe "2/5 describe (offline attributes backend)"
  "$MS" describe "$OUT/data" --out "$OUT/store" --backend attributes --split train --resume
  "$MS" describe show "$OUT/store" --n 2
else echo "describe: not built yet, skipped"; fi

if has train; then
  stage train "3/5 train ($RECIPE)"
  STORE_OPT=(); [ -f "$OUT/store/medsynth.json" ] && STORE_OPT=(--store "$OUT/store")
  if [ -f "$OUT/model/medsynth.json" ] && [ -d "$OUT/model/unet" ]; then
    echo "model already trained: $OUT/model"
  else
    RESUME=(); [ -d "$OUT/model/checkpoints" ] && RESUME=(--resume)
    INIT=(); [ -n "$PRIOR" ] && INIT=(--init "$PRIOR")
    "$MS" train "$OUT/data" "${STORE_OPT[@]}" --out "$OUT/model" --config "$RECIPE" "${INIT[@]}" \
      "${RESUME[@]}"
  fi
else echo "train: not built yet, skipped"; fi

if has generate && [ -f "$OUT/model/medsynth.json" ]; then
  stage generate "4/5 generate"
  STORE_OPT=(); [ -f "$OUT/store/medsynth.json" ] && STORE_OPT=(--store "$OUT/store")
  "$MS" generate "$OUT/model" --class all --n "${N_SYNTH:-60}" "${STORE_OPT[@]}" --out "$OUT/synth" \
    --format png,dicom,nifti --steps 20 --resume
else echo "generate: not built yet, skipped"; fi

if has evaluate && [ -f "$OUT/synth/medsynth.json" ]; then
  stage evaluate "5/5 evaluate"
  # A prior trained on another dataset: evaluate cannot prove from the manifests that it never saw
  # the test images, so the demo vouches for it (other-site phantoms of another seed).
  INDEPENDENT=(); [ -n "$PRIOR" ] && INDEPENDENT=(--independent-model)
  "$MS" evaluate --real "$OUT/data" --synthetic "$OUT/synth" --out "$OUT/report" --resume \
    --seeds "${SEEDS:-5}" --real-fraction 1.0,0.1 --baselines augment,oracle \
    --extra-real "$OUT/extra-real" "${INDEPENDENT[@]}"
  echo "report: $OUT/report/report.html"
else echo "evaluate: not built yet, skipped"; fi

stage done "done"
echo "demo finished in $(( $(date +%s) - t0 )) s; outputs in $OUT/"
echo "[demo-timing] total=$(( $(date +%s) - t0 )) ${TIMES[*]}"
