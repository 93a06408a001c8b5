#!/usr/bin/env bash
# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
# The README's test command: sets up `.venv-test` from the lock (recipes/locks/test.txt) and runs the suite offline.
#   bash tests/run_tests.sh [pytest args]   # the locked suite
#   bash tests/run_tests.sh --latest        # the newest versions PyPI serves: within pyproject.toml's ranges, and with
#                                           #   the upper bounds of transformers/trl/peft lifted (tests/check_latest.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ "${1:-}" = "--latest" ]; then
  shift
  exec bash tests/check_latest.sh "$@"
fi
bash recipes/setup_env.sh --test
PY=${MMESID_VENV:-.venv-test}/bin/python
$PY tests/versions.py "locked suite"
exec "$PY" -m pytest tests -q --timeout=900 "$@"
