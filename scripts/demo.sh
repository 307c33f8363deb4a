#!/usr/bin/env bash
# The main job, end to end on a fresh machine: set up the venv, generate the default synthetic H&E
# data set, train the he_tissue_classification bundle for a short CPU schedule, evaluate the
# untrained and the trained model on the held-out slides, run inference, print where outputs went.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
VENV="${VENV:-.venv}"
OUT="${OUT:-outputs/demo}"
N="${N:-480}"
EPOCHS="${EPOCHS:-8}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
BUNDLE=bundles/he_tissue_classification
DATA="$OUT/data"
[ -d "$DATA" ] || "$VENV/bin/monai-ext" synth he_patches "$DATA" --n "$N" --seed 0
run() { "$VENV/bin/python" -m monai.bundle run --bundle_root "$OUT" --dataset_dir "$DATA" \
        --logging_file "$BUNDLE/configs/logging.conf" "$@"; }
echo "== evaluate the untrained network (held-out slides)"
run --config_file "['$BUNDLE/configs/train.json','$BUNDLE/configs/evaluate.json']" \
    --load_checkpoint False --output_dir "$OUT/eval_untrained" > "$OUT/evaluate_untrained.log" 2>&1
echo "== train ($EPOCHS epochs, CPU)"
run --config_file "$BUNDLE/configs/train.json" --epochs "$EPOCHS" > "$OUT/train.log" 2>&1
echo "== evaluate the trained network"
run --config_file "['$BUNDLE/configs/train.json','$BUNDLE/configs/evaluate.json']" \
    --output_dir "$OUT/eval" > "$OUT/evaluate.log" 2>&1
echo "== inference (class probabilities as CSV)"
run --config_file "$BUNDLE/configs/inference.json" --output_dir "$OUT/eval" > "$OUT/inference.log" 2>&1
untrained=$(grep '^accuracy' "$OUT/eval_untrained/metrics.csv" | cut -d, -f2)
trained=$(grep '^accuracy' "$OUT/eval/metrics.csv" | cut -d, -f2)
echo
echo "he_tissue_classification, test accuracy (held-out slides): trained ${trained}  vs untrained ${untrained}"
echo "outputs: model $OUT/models/model.pt, metrics $OUT/eval/metrics.csv, predictions $OUT/eval/predictions.csv, logs $OUT/*.log"
"$VENV/bin/python" -c "import sys; t, u = float(sys.argv[1]), float(sys.argv[2]); sys.exit(0 if t > u else 'trained model does not beat the untrained one')" "$trained" "$untrained"
