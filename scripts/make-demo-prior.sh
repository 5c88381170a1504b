#!/usr/bin/env bash
# The prior that `make demo` adapts (examples/priors/derm-site-b): the demo recipe's network,
# pretrained on 300 phantoms per class from ANOTHER acquisition site (site b, seed 2: other
# colour calibration, illumination, noise and skin-tone mix; docs/demo-data.md), never on the
# demo's own site-a images. Usage: scripts/make-demo-prior.sh [OUTDIR] (default: a fresh
# examples/priors/derm-site-b). About 8 min on an idle 2-core machine (3,000 steps, 2 threads).
set -euo pipefail
OUT=${1:-examples/priors/derm-site-b}
MS=${MEDSYNTH:-.venv/bin/medsynth}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$MS" data demo derm --out "$WORK/public" --site b --seed 2 --n-per-class 300 --size 32 \
  --val-fraction 0.1 --test-fraction 0.1
"$MS" describe "$WORK/public" --out "$WORK/store" --backend attributes --split all
"$MS" train "$WORK/public" --store "$WORK/store" --out "$WORK/prior" \
  --config examples/derm-demo.yaml --max-steps 3000 --splits train,val --sample-every 0
rm -rf "$WORK/prior/checkpoints"  # 71 MB of optimizer state; --init needs only the weights
rm -rf "$OUT" && mkdir -p "$(dirname "$OUT")" && cp -r "$WORK/prior" "$OUT"
sha256sum "$OUT/unet/diffusion_pytorch_model.safetensors"
