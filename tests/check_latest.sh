#!/usr/bin/env bash
# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
# The newest-versions check (`bash tests/run_tests.sh --latest`). In throwaway venvs, one at a time:
#   ranges  the newest versions the package index serves within pyproject.toml's ranges (what `pip install mmesid`
#           gives a user today): the fast suite, including the remote-code load of a saved tiny model
#           (AutoModel.from_pretrained(..., trust_remote_code=True) in a subprocess, the package unimportable).
#           A failure here fails the check: users get these versions.
#   lifted  the same with the upper bounds of transformers, trl and peft lifted (MMESID_LIFT to change): whether the
#           next releases work. A failure names the package(s) and version(s) beyond the bounds that broke it (one
#           at a time, the others held at their in-range versions); it fails the check only with --strict.
# Every variant prints the versions it ran with. Needs a package index, as the set-up does.
#   bash tests/check_latest.sh [--strict] [--only ranges|lifted]
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
strict=0
variants=(ranges lifted)
while [ $# -gt 0 ]; do
  case "$1" in
    --strict) strict=1 ;;
    --only) shift; variants=("$1") ;;
    *) echo "unknown argument $1 (use --strict, --only ranges|lifted)" >&2; exit 2 ;;
  esac
  shift
done
work=$(mktemp -d "${TMPDIR:-/tmp}/mmesid-latest.XXXXXX")
trap 'rm -rf "$work"' EXIT
pins() { "$1/bin/python" -m pip freeze --all --exclude-editable | LC_ALL=C sort -f; }
pin_of() { grep -i -E "^$2==" "$1" | head -1 | cut -d= -f3; }  # pin_of PINFILE NAME -> version
status=0

for variant in "${variants[@]}"; do
  venv="$work/$variant"
  echo "== newest versions: $variant"
  if ! MMESID_VENV="$venv" MMESID_RESOLVE="$variant" bash recipes/setup_env.sh --test > "$work/$variant-setup.log" 2>&1; then
    echo "FAILED [$variant]: pip could not install the newest versions; the last lines of pip's output:"
    grep -v "^WARNING: Location" "$work/$variant-setup.log" | tail -15
    status=1
    continue
  fi
  pins "$venv" > "$work/$variant.pins"
  "$venv/bin/python" tests/versions.py "versions ($variant)"
  if [ "$variant" = lifted ] && [ -f "$work/ranges.pins" ] && cmp -s "$work/ranges.pins" "$work/lifted.pins"; then
    echo "lifted: the index serves nothing newer than the bounds today (same versions as 'ranges'); not run twice."
    rm -rf "$venv"
    continue
  fi
  above=$(python3 recipes/requirements.py --above-bounds "$(tr '\n' ' ' < "$work/$variant.pins")")
  [ -n "$above" ] && echo "beyond pyproject.toml's bounds: $(echo "$above" | paste -sd ';' - | sed 's/;/; /g')"
  "$venv/bin/python" -m pytest tests -q --timeout=900 -m "not slow" -p cacheprovider -o cache_dir="$work/cache-$variant" \
    > "$work/$variant-tests.log" 2>&1
  rc=$?
  tail -1 "$work/$variant-tests.log" | sed "s/^/suite [$variant]: /"
  remote=$("$venv/bin/python" -m pytest tests/models/test_modeling_mmesid.py -q -s -p no:cacheprovider \
    -k "trust_remote_code_load or docstring_errors" 2>&1)
  if echo "$remote" | grep -q -E "^[0-9]+ passed"; then
    echo "remote-code load [$variant]: ok ($(echo "$remote" | grep -o "MMESIDForSequentialRecommendation MMESIDProcessor transformers [0-9.a-z]*" | head -1))"
  else
    echo "remote-code load [$variant]: FAILED"; echo "$remote" | tail -25; rc=1
  fi
  if [ $rc -eq 0 ]; then rm -rf "$venv"; continue; fi
  echo "FAILED [$variant]; failing tests:"
  grep -E "^(FAILED|ERROR) " "$work/$variant-tests.log" | head -30
  if [ "$variant" = ranges ]; then
    echo "Users who install mmesid today get these versions: fix the code, or bound the package in pyproject.toml."
    status=1
  else
    if [ -z "$above" ]; then
      echo "No package is beyond the bounds, yet the lifted variant failed: see $variant-tests.log above."
    else
      echo "BROKE with the bounds lifted. Suspects (beyond the bounds): $(echo "$above" | paste -sd ';' -)"
      # One suspect at a time: the others back at their in-range versions, the failed tests again.
      mapfile -t suspects < <(echo "$above" | cut -d' ' -f1)
      if [ ${#suspects[@]} -eq 1 ]; then
        echo "BROKEN BY: $above"
      else
        for suspect in "${suspects[@]}"; do
          for other in "${suspects[@]}"; do
            [ "$other" = "$suspect" ] && continue
            old=$(pin_of "$work/ranges.pins" "$other")
            [ -n "$old" ] && "$venv/bin/python" -m pip install -q --no-deps "$other==$old" > /dev/null 2>&1
          done
          if "$venv/bin/python" -m pytest tests -q --timeout=900 -m "not slow" --lf -p cacheprovider \
              -o cache_dir="$work/cache-$variant" > "$work/bisect.log" 2>&1; then
            echo "  $suspect $(pin_of "$work/lifted.pins" "$suspect") alone: the failed tests pass"
          else
            echo "  BROKEN BY: $suspect $(pin_of "$work/lifted.pins" "$suspect") alone ($(tail -1 "$work/bisect.log"))"
          fi
          for other in "${suspects[@]}"; do  # back to the lifted versions
            new=$(pin_of "$work/lifted.pins" "$other")
            [ -n "$new" ] && "$venv/bin/python" -m pip install -q --no-deps "$other==$new" > /dev/null 2>&1
          done
        done
      fi
    fi
    echo "Next upgrade task: make the suite pass with these versions, then raise the bound in pyproject.toml."
    [ $strict -eq 1 ] && status=1
  fi
  rm -rf "$venv"
done
exit $status
