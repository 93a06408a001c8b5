#!/usr/bin/env bash
# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
# Rebuild recipes/locks/{pipeline,test}.txt from the newest versions that pyproject.toml's ranges admit today:
# two fresh venvs, the test suite in the test one, and the locks are replaced only if the suite passes.
#   bash recipes/update_locks.sh            # then commit recipes/locks/ (the diff shows what moved)
#   MMESID_RESOLVE=lifted bash recipes/update_locks.sh   # after raising the bounds in pyproject.toml on purpose
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export MMESID_RESOLVE=${MMESID_RESOLVE:-ranges}
freeze() {  # every installed distribution but pip, the project itself and triton (not needed on a CPU)
  "$1/bin/python" -m pip freeze --all --exclude-editable | grep -v -E '^(pip|triton|mmesid)==' | LC_ALL=C sort -f
}
for mode in test pipeline; do  # the pipeline venv takes the test venv's versions of everything but torch
  flag=""; [ $mode = test ] && flag=--test
  if [ $mode = pipeline ]; then
    grep -v -E '^(#|torch|torchvision|nvidia-|cuda-)' "$work/test.txt" > "$work/constraints.txt"
    export MMESID_CONSTRAINTS="$work/constraints.txt"
  fi
  MMESID_VENV="$work/$mode" bash recipes/setup_env.sh $flag
  {
    echo "# Lock of \`bash recipes/setup_env.sh $flag\` ($mode venv), written by recipes/update_locks.sh on $(date -u +%F)"
    echo "# from pyproject.toml's ranges ($MMESID_RESOLVE), $(uname -m), Python $("$work/$mode/bin/python" -c 'import platform; print(platform.python_version())')."
    freeze "$work/$mode"
  } > "$work/$mode.txt"
done
echo "== test suite with the candidate test lock"
HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
  "$work/test/bin/python" -m pytest tests -q --timeout=900 -p no:cacheprovider
mkdir -p recipes/locks
for mode in pipeline test; do
  mv "$work/$mode.txt" "recipes/locks/$mode.txt.tmp" && mv "recipes/locks/$mode.txt.tmp" "recipes/locks/$mode.txt"
done
git --no-pager diff --stat -- recipes/locks || true
echo "locks written: recipes/locks/{pipeline,test}.txt"
