# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""recipes/benchmark.py at CI size: the headline runs and reports both prompt layouts; the token counts are exact
(timings are never asserted)."""

import json

import pytest
import torch
import yaml
from mmesid_testing import REPO, import_recipe


def test_ci_headline_reports_both_layouts(tmp_path, capsys):
    recipe = import_recipe("benchmark")
    threads = torch.get_num_threads()
    try:  # one thread: the CI size is tiny, and a busy machine's cores are shared
        results = recipe.main(recipe.BenchmarkArguments(output_dir=str(tmp_path), threads=1,
                                                        users_per_step_sweep=[3, 16]))
    finally:
        torch.set_num_threads(threads)
    head = results["train_info"]["headline"]
    assert head["recipe"]["source"] == recipe.DEFAULT_FINETUNE_CONFIG and head["recipe"]["layout"] == "causal"
    tokens = head["tokens_per_epoch"]
    chat, causal = tokens["chat"], tokens["causal"]
    assert chat["samples"] == causal["samples"] == 2290 and chat["users"] == causal["users"] == 120
    assert causal["total"] < chat["total"] and tokens["chat_over_causal"] == chat["total"] / causal["total"]
    assert chat["item_tokens"] == causal["item_tokens"]
    # causal: per user the instruction's last token and one token per history item; the shared prompt once per step
    assert causal["packed_shared_prompt"] - causal["shared_prompt_tokens"] == causal["users"] + causal["item_tokens"]
    assert causal["total"] == causal["packed_shared_prompt"] + causal["shared_prompt_tokens"] * (causal["steps"] - 1)
    training = head["training"]
    assert training["chat"]["samples"] == training["causal"]["samples"] > 0  # the same users for both layouts
    config = yaml.safe_load((REPO / recipe.DEFAULT_FINETUNE_CONFIG).read_text())
    assert training["chat"]["users_per_step"] == head["recipe"]["per_device_train_batch_size"]
    assert head["recipe"]["per_device_train_batch_size"] == config["per_device_train_batch_size"]
    assert training["causal"]["tokens"] < training["chat"]["tokens"]
    assert training["causal_over_chat_samples_per_s"] > 0
    # the sweep: the config's layout on the same users, in steps of 3 and of 16 users
    for users, steps in (("3", 6), ("16", 1)):
        row = training["sweep"][users]
        assert row["users_per_step"] == int(users) and row["steps"] == steps
        assert row["samples"] == training["causal"]["samples"]
        extra_steps = steps - training["causal"]["steps"]  # the shared prompt once per step
        assert row["tokens"] == training["causal"]["tokens"] + extra_steps * causal["shared_prompt_tokens"]
        assert row["over_config_samples_per_s"] == row["samples_per_s"] / training["causal"]["samples_per_s"]
    # the arithmetic limit: the CI backbone's decoder weights by hand (2 layers, hidden 64, 4 heads of 16, 2 key/value
    # heads, MLP 128): q 64x64 + k 64x32 + v 64x32 + o 64x64 + gate 64x128 + up 64x128 + down 128x64 per layer
    assert training["backbone_matmul_params"] == 2 * (4096 + 2048 + 2048 + 4096 + 3 * 8192) == 73728
    assert training["gemm_gflops"]["shape"] == (256, 64, 128) and training["gemm_gflops"]["before"] > 0
    assert training["attn_implementation"] == config["attn_implementation"] == "eager"
    # the baselines: the config's row with one factor back (the shared prompt as a separate pass, the other
    # attention), on the same users and batches
    assert set(training["baselines"]) == {"separate_prompt", "sdpa_attention"}
    for row in training["baselines"].values():
        assert (row["samples"], row["tokens"], row["steps"]) == (
            training["causal"]["samples"], training["causal"]["tokens"], training["causal"]["steps"])
        assert row["config_over_this_samples_per_s"] == training["causal"]["samples_per_s"] / row["samples_per_s"]
    # the shared prompt is the same function inline or as a cache: the same loss up to float rounding
    separate = training["baselines"]["separate_prompt"]["mean_loss"]
    assert training["causal"]["mean_loss"] == pytest.approx(separate, rel=2e-2)
    for row in (training["chat"], training["causal"], *training["sweep"].values(), *training["baselines"].values()):
        assert row["backbone_gflop_per_step"] == pytest.approx(4 * 73728 * row["tokens_per_step"] / 1e9, rel=1e-12)
        assert row["limit_seconds_per_step"] == row["backbone_gflop_per_step"] / training["gemm_gflops"]["mean"]
        assert row["fraction_of_limit"] == row["limit_seconds_per_step"] / row["seconds_per_step"]
    ranking = head["ranking"]
    assert ranking["layout"] == "causal" and ranking["users"] == 64 and ranking["batch_size"] == 32
    assert ranking["full_split_minutes"] > 0
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["train_info"]["headline"]["tokens_per_epoch"]["causal"]["total"] == causal["total"]
    assert saved["train_info"]["training_factors"] is None  # the older sections only on request
    assert saved["meta_info"]["threads"] == 1 and "cpu" in saved["meta_info"]
    out = capsys.readouterr().out
    for row in ("[headline 1]", "[headline 2]", "[headline 3]"):
        assert row in out
    assert out.count("1 threads") >= 2  # every timing line names its hardware and thread count
    assert "baseline, causal with the shared prompt as a separate pass" in out
    assert "baseline, causal with SDPA attention" in out


def test_recipe_config_reads_the_finetune_yaml(tmp_path):
    recipe = import_recipe("benchmark")
    config = recipe.recipe_config(recipe.DEFAULT_FINETUNE_CONFIG)
    assert config["layout"] == "causal" and config["per_device_train_batch_size"] == 32
    assert (config["lora_r"], config["lora_alpha"], config["lora_dropout"]) == (8, 16, 0.0)
    partial = tmp_path / "finetune.yaml"
    partial.write_text("layout: chat\nper_device_train_batch_size: 2\nattn_implementation: eager\n")
    config = recipe.recipe_config(str(partial))  # keys it lacks come from the fallback YAML
    assert config["layout"] == "chat" and config["per_device_train_batch_size"] == 2 and config["lora_r"] == 8
    assert config["attn_implementation"] == "eager"
    with pytest.raises(FileNotFoundError, match="no such file"):
        recipe.recipe_config(str(tmp_path / "missing.yaml"))


def test_item_embedding_dims_read_the_runs_tables(tmp_path):
    """The headline's random item tables have the widths the run's Stage 1 wrote (its sidecar's `dim`), and the recipes'
    encoders' widths where it wrote none."""
    from mmesid_artifacts import Run, save_embeddings

    recipe = import_recipe("benchmark")
    run = Run(tmp_path)
    run.embeddings.mkdir(parents=True)
    save_embeddings(run.embedding_file("text"), torch.randn(5, 7), modality="text", encoder="test")
    assert recipe.item_embedding_dims(run, ["collaborative", "text", "image"]) == {
        "collaborative": 64, "text": 7, "image": 768,
    }


def test_ci_headline_times_the_configs_attention(tmp_path):
    """A config that names `attn_implementation` (finetune.py passes it to the backbone) is timed with it."""
    recipe = import_recipe("benchmark")
    config = tmp_path / "finetune.yaml"
    config.write_text("layout: causal\nper_device_train_batch_size: 8\nattn_implementation: eager\n")
    threads = torch.get_num_threads()
    try:
        results = recipe.main(recipe.BenchmarkArguments(output_dir=str(tmp_path), threads=1, finetune_config=str(config),
                                                        rank_users=8))
    finally:
        torch.set_num_threads(threads)
    training = results["train_info"]["headline"]["training"]
    assert training["attn_implementation"] == "eager" and training["causal"]["samples"] > 0

