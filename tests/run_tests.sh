#!/usr/bin/env bash
# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
# The README's test command: sets up `.venv` (with the vision extra) and runs the suite offline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash recipes/setup_env.sh --test
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest tests -q --timeout=900 "$@"
