# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Every run config under recipes/configs/ parses through the parser of the recipe that reads it, with no unknown key
and the values it writes: a typo in a full-data config would otherwise surface only when its hour-long run starts."""

import pytest
import yaml
from mmesid_testing import REPO, import_recipe


CONFIGS = sorted((REPO / "recipes" / "configs").glob("*/*.yaml"))

# config file name (prefix) -> the recipe that reads it with `--config`
READERS = {"data": "prepare_data", "encoders": "encode_items", "rqvae": "train_rqvae", "finetune": "finetune"}


def _reader(path):
    for prefix, recipe in READERS.items():
        if path.stem == prefix or path.stem.startswith(prefix + "-"):
            return recipe
    raise AssertionError(f"{path}: no recipe reads this config (known: {', '.join(READERS)}); add it to READERS")


def _parser(recipe):
    """The recipe's own parser: `TrlParser` over the dataclasses its `main` takes, in order."""
    import inspect

    from trl import TrlParser

    module = import_recipe(recipe)
    classes = tuple(p.annotation for p in inspect.signature(module.main).parameters.values())
    return TrlParser(classes)


def test_every_config_has_a_reader():
    assert CONFIGS, "no configs found under recipes/configs"
    for path in CONFIGS:
        _reader(path)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_parses_with_its_recipe(path, tmp_path, monkeypatch):
    values = yaml.safe_load(path.read_text())
    monkeypatch.chdir(tmp_path)  # TrainingArguments may create output folders: never inside the checkout
    parser = _parser(_reader(path))
    argv = ["--config", str(path)]
    if _reader(path) == "finetune" and "use_cpu" not in values:
        # parse on any machine: transformers refuses `bf16: true` (the GPU configs) without a bf16 GPU unless the run
        # is marked as CPU; `use_cpu` is none of the file's values, so every value the file writes is still checked
        argv += ["--use_cpu", "true"]
    parsed = parser.parse_args_and_config(argv)
    merged = {}
    for instance in parsed:
        merged.update(vars(instance))
    for key, value in values.items():
        assert key in merged, f"{path}: {key} was not parsed into any argument"
        got = merged[key]
        if isinstance(value, float) or isinstance(got, float):
            assert got == pytest.approx(float(value)), f"{path}: {key} = {got!r}, the file says {value!r}"
        elif isinstance(value, list):
            assert list(got) == value, f"{path}: {key} = {got!r}, the file says {value!r}"
        elif hasattr(got, "value"):  # enums (lr_scheduler_type, eval_strategy, ...)
            assert got.value == value, f"{path}: {key} = {got!r}, the file says {value!r}"
        else:
            assert got == value, f"{path}: {key} = {got!r}, the file says {value!r}"


def test_an_unknown_key_is_refused(tmp_path, monkeypatch):
    """What the test above relies on: a misspelt key fails to parse, naming the key."""
    bad = tmp_path / "finetune-typo.yaml"
    bad.write_text("run_dir: outputs/x\ndistil_weight: 0.5\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="distil_weight"):
        _parser("finetune").parse_args_and_config(["--config", str(bad)])
