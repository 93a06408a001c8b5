#!/usr/bin/env bash
# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
# The README's main job: set up, then run every stage for one run name on Beauty_new, offline, on a laptop CPU:
#   data -> item encoders (SASRec + MiniLM) -> MM-RQ-VAE -> semantic IDs -> LoRA fine-tuning -> evaluation.
#   bash recipes/run_pipeline.sh                 # CPU budget: subsets, said in the output (timings per CPU:
#                                                # docs/MAIN_JOB.md)
#   BUDGET=full bash recipes/run_pipeline.sh     # the configs as written (hours on a CPU; use a GPU)
#   RUN=my-run bash recipes/run_pipeline.sh      # another folder of recipes/configs/
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-beauty-smollm2-135m}
BUDGET=${BUDGET:-cpu}
CONFIGS=recipes/configs/$RUN
OUT=outputs/$RUN
bash recipes/setup_env.sh
VENV=${MMESID_VENV:-.venv}
PY=$VENV/bin/python
LAUNCH=("$VENV/bin/accelerate" launch --config_file recipes/accelerate_configs/cpu.yaml)
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ "$BUDGET" = "cpu" ]; then
  # Laptop-CPU budget. Each override is printed by the stage it shapes; the YAMLs hold the full settings.
  ENC_ARGS=(--sasrec_epochs 10 --num_threads 2)
  RQ_ARGS=(--num_epochs 40)
  SID_ARGS=(--max_validation_users 2000)
  FT_ARGS=(--max_train_users 4800 --max_eval_users 200 --max_test_users 200)
  EVAL_ARGS=(--max_users 500)
  echo "CPU budget (BUDGET=full runs the configs as written):"
  echo "  - SASRec: 10 epochs; MM-RQ-VAE: 40 epochs; Kendall's tau on 2,000 validation users."
  echo "  - Fine-tuning: the samples of 4,800 sampled users (~32,700), 1 epoch, 8 users per step, causal layout."
  echo "  - Evaluation: 500 sampled test users, MME-SID and the baselines on the same users."
else
  ENC_ARGS=(); RQ_ARGS=(); SID_ARGS=(); FT_ARGS=(); EVAL_ARGS=()
fi
start=$(date +%s)
stage() { echo; echo "== $1 ($(( $(date +%s) - start ))s) =="; }
stage "1/6 data"
# Every stage gets the run folder; it asks `mmesid_artifacts.Run` for its stage folders (docs/RUN_FOLDER.md)
$PY recipes/prepare_data.py --config "$CONFIGS/data.yaml" --run_dir "$OUT"
stage "2/6 item encoders"
$PY recipes/encode_items.py --config "$CONFIGS/encoders.yaml" --run_dir "$OUT" "${ENC_ARGS[@]}"
stage "3/6 MM-RQ-VAE"
"${LAUNCH[@]}" recipes/train_rqvae.py --config "$CONFIGS/rqvae.yaml" --run_dir "$OUT" "${RQ_ARGS[@]}"
stage "4/6 semantic IDs"
$PY recipes/assign_sids.py --run_dir "$OUT" "${SID_ARGS[@]}"
stage "5/6 fine-tuning"
"${LAUNCH[@]}" recipes/finetune.py --config "$CONFIGS/finetune.yaml" --run_dir "$OUT" "${FT_ARGS[@]}"
stage "6/6 evaluation"
# --model and --sasrec also take a Hub repo id or another folder, so they name the stage's artifact in full
$PY recipes/evaluate.py --run_dir "$OUT" --model "$OUT/finetune/model" --sasrec "$OUT/embeddings/sasrec" \
  "${EVAL_ARGS[@]}"
echo "pipeline finished in $(( $(date +%s) - start ))s; results in $OUT/eval/results.json"
