# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Every recipe's `--help` is a newcomer's manual: the module docstring (its command lines) as the description, each
default shown and, where the recipe takes a YAML, `--config` listed (`mmesid_artifacts.recipe_args.document`)."""

import ast
import json
import os
import subprocess
import sys

import pytest
from mmesid_testing import REPO


RECIPES = sorted((REPO / "recipes").glob("*.py"))

# One interpreter runs every recipe's `--help` as `__main__` (the imports are shared, so the test stays cheap) and
# prints {file name: help text} as JSON.
DRIVER = r"""
import contextlib, io, json, runpy, sys
helps = {}
for path in sys.argv[1:]:
    sys.argv = [path, "--help"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_path(path, run_name="__main__")
        except SystemExit:
            pass
    helps[path.rsplit("/", 1)[-1]] = out.getvalue()
print(json.dumps(helps))
"""


@pytest.fixture(scope="module")
def helps() -> dict[str, str]:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-c", DRIVER, *map(str, RECIPES)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_help_is_a_manual(helps, recipe):
    source = recipe.read_text()
    doc = ast.get_docstring(ast.parse(source))
    text = helps[recipe.name]
    assert doc, f"{recipe.name} has no module docstring"
    assert text.startswith("usage:"), f"{recipe.name} --help printed no usage:\n{text[:500]}"
    # the description is the whole docstring, line breaks kept (its command lines stay copyable)
    for line in doc.splitlines():
        assert line.rstrip() in text, f"{recipe.name} --help lacks the docstring line {line!r}"
    if "TrlParser" in source or '"--config"' in source:
        assert "--config" in text.split("\n\n", 1)[0] and "  --config" in text, (
            f"{recipe.name} --help lists no --config"
        )
    if "TrlParser" in source:
        assert "(default: " in text, f"{recipe.name} --help shows no defaults"


def test_help_says_what_the_run_yaml_sets(helps):
    """finetune's library defaults (TRL's LoRA r 16, no PEFT) are not the run's: the help lists the YAML's values."""
    text = helps["finetune.py"]
    assert "recipes/configs/beauty-smollm2-135m/finetune.yaml sets:" in text
    assert "lora_r 8 (default 16)" in text and "use_peft True (default False)" in text
    assert "e_dim 576 (default 4096)" in helps["train_rqvae.py"]


# The recipes that read or write no run folder (synthetic benchmarks, the dependency check).
RUN_FOLDER_FREE = {"benchmark_generative.py", "benchmark_mmd.py", "requirements.py"}


@pytest.mark.parametrize("recipe", [r for r in RECIPES if r.name not in RUN_FOLDER_FREE], ids=lambda p: p.name)
def test_every_recipe_takes_run_dir_with_one_default(helps, recipe):
    """One flag names the run folder in every recipe, with one default (`mmesid_artifacts.run.DEFAULT_RUN_DIR`)."""
    from mmesid_artifacts.run import DEFAULT_RUN_DIR

    text = helps[recipe.name]
    assert "\n  --run_dir" in text, f"{recipe.name} takes no --run_dir"
    entry = "".join(text.split("\n  --run_dir", 1)[1].split("\n  -", 1)[0].split())  # argparse wraps at "-"
    assert f"(default:{DEFAULT_RUN_DIR.as_posix()})" in entry, f"{recipe.name} --run_dir: {entry}"


STAGE_NAMES = {"data", "embeddings", "rqvae", "sids", "finetune", "eval", "forgetting", "hub", "curve", "model",
               "sasrec"}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_no_recipe_joins_stage_paths(recipe):
    """Stage folders come from `mmesid_artifacts.Run` (docs/RUN_FOLDER.md): no `path / "data"` and no string naming a
    run's stage folder (`"outputs/<run>/data"`) outside the docstrings, whose command lines are examples."""
    tree = ast.parse(recipe.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and ast.get_docstring(node)}
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant):
            assert node.right.value not in STAGE_NAMES, f"{recipe.name}:{node.lineno} joins / {node.right.value!r}"
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            parts = node.value.split("/")
            assert not (parts[0] == "outputs" and len(parts) > 2 and parts[2] in STAGE_NAMES), (
                f"{recipe.name}:{node.lineno} names a stage folder: {node.value!r}"
            )
