# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""The forgetting recipe: tau-a of the SID rows after fine-tuning with codebook vs random SID init."""

import importlib.util

from mmesid_testing import REPO, finetune_config


def _load(name):
    spec = importlib.util.spec_from_file_location(f"{name}_recipe", REPO / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_forgetting_recipe_on_two_tiny_finetunings(tiny_run, tmp_path):
    from trl import ModelConfig, TrlParser

    finetune = _load("finetune")
    models = {}
    for init in ("codebook", "random"):
        cfg = finetune_config(tiny_run, tmp_path / init, max_steps=1, eval_strategy="no", save_strategy="no")
        parsed = TrlParser((finetune.ScriptArguments, finetune.MMESIDTrainingConfig, ModelConfig)).parse_args_and_config(
            ["--config", str(cfg), "--sid_init", init]
        )
        finetune.main(*parsed)
        models[init] = tmp_path / init / "model"
    forgetting = _load("forgetting")
    args = forgetting.ScriptArguments(
        run_dir=str(tiny_run), codebook_model=str(models["codebook"]), random_model=str(models["random"]),
        output_dir=str(tmp_path / "forgetting"),
    )
    report = forgetting.main(args)
    for init in ("codebook", "random"):
        for m in ("collaborative", "text"):
            assert -1.0 <= report["kendall_tau"][init][m]["tau_a"] <= 1.0
        assert {"collaborative_projected", "collaborative_sid", "text_sid", "item_tokens"} <= set(
            report["embedding_collapse"][init]
        )
        assert (tmp_path / "forgetting" / f"spectra-{init}.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "forgetting" / "forgetting.json").is_file()
