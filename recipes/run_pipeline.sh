#!/usr/bin/env bash
# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
# The README's main job: set up, then run every stage for one run name on Beauty_new, on a laptop CPU, offline.
#   bash recipes/run_pipeline.sh                       # run "beauty-smollm2-135m", data from ../shared/data
#   RUN=my-run DATA_CONFIG=path/to/data.yaml bash recipes/run_pipeline.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-beauty-smollm2-135m}
CONFIGS=recipes/configs/$RUN
OUT=outputs/$RUN
bash recipes/setup_env.sh
PY=.venv/bin/python
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
start=$(date +%s)
echo "== 1/2 data =="
$PY recipes/prepare_data.py --config "${DATA_CONFIG:-$CONFIGS/data.yaml}" --output_dir "$OUT/data"
echo "== 2/2 evaluate (baselines) =="
$PY recipes/evaluate.py --data_dir "$OUT/data" --output_dir "$OUT/eval"
echo "pipeline finished in $(( $(date +%s) - start ))s; results in $OUT/eval/results.json"
