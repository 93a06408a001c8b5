# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""recipes/evaluate.py: every scorer on the same users, the protocol line, results.json; accelerate configs parse."""

import json
from pathlib import Path

import pytest
from mmesid_testing import REPO, import_recipe


_recipe = import_recipe


def test_evaluate_baselines_on_sampled_users(tiny_run, tmp_path, capsys):
    recipe = _recipe("evaluate")
    args = recipe.EvaluateArguments(run_dir=str(tiny_run), output_dir=str(tmp_path), max_users=10)
    results = recipe.main(args)
    assert set(results) == {"popularity", "transition"}
    assert all(r["num_users"] == 10 for r in results.values())
    saved = json.loads((tmp_path / "results.json").read_text())
    assert "sampled with seed 0 from 24" in saved["protocol"]
    assert saved["results"]["transition"]["ndcg@10"] == pytest.approx(results["transition"]["ndcg@10"])
    out = capsys.readouterr().out
    assert "protocol: test: leave-one-out, full ranking over 40 items, history items and padding masked" in out


def test_evaluate_writes_its_table_into_a_doc(tiny_run, tmp_path):
    recipe = _recipe("evaluate")
    doc = tmp_path / "README.md"
    doc.write_text("# title\n<!-- full-run:start -->\nold\n<!-- full-run:end -->\nafter\n")
    args = recipe.EvaluateArguments(run_dir=str(tiny_run), output_dir=str(tmp_path / "eval"), max_users=10,
                                    doc=str(doc), doc_block="full-run")
    results = recipe.main(args)
    text = doc.read_text()
    assert text.startswith("# title\n<!-- full-run:start -->\n| model |") and text.endswith("<!-- full-run:end -->\nafter\n")
    assert "old" not in text and "Protocol: test: leave-one-out" in text and "sampled with seed 0 from 24" in text
    assert f"| transition | {results['transition']['ndcg@5']:.4f} | {results['transition']['ndcg@10']:.4f} |" in text
    doc.write_text("no markers")
    with pytest.raises(ValueError, match="no `<!-- full-run:start -->`"):
        recipe.main(args)


def test_evaluate_no_mask_history_is_recbole_protocol(tiny_run, tmp_path, capsys):
    from trl import TrlParser

    recipe = _recipe("evaluate")
    (args,) = TrlParser((recipe.EvaluateArguments,)).parse_args_and_config(
        ["--run_dir", str(tiny_run), "--output_dir", str(tmp_path), "--no_mask_history"]
    )
    assert args.no_mask_history
    unmasked = recipe.main(args)
    assert "history items kept (RecBole)" in json.loads((tmp_path / "results.json").read_text())["protocol"]
    assert "history items kept (RecBole)" in capsys.readouterr().out
    masked = recipe.main(recipe.EvaluateArguments(run_dir=str(tiny_run), output_dir=str(tmp_path)))
    # the transition scorer's best guesses are often history items (i -> i + 1 -> ...): the protocols differ
    assert any(unmasked[n]["ndcg@10"] != masked[n]["ndcg@10"] for n in masked)


@pytest.mark.parametrize("name", ["cpu", "single_gpu", "multi_gpu", "fsdp2", "zero2"])
def test_accelerate_configs_parse(name):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(REPO / "recipes" / "accelerate_configs" / f"{name}.yaml"))
    assert config.num_machines == 1


def test_run_configs_parse():
    """Every finetune YAML is accepted by the recipe's parser (a misspelt key would fail)."""
    from trl import ModelConfig, TrlParser

    recipe = _recipe("finetune")
    for path in sorted(Path(REPO / "recipes" / "configs").glob("*/finetune*.yaml")):
        parser = TrlParser((recipe.ScriptArguments, recipe.MMESIDTrainingConfig, ModelConfig))
        _script_args, training_args, model_args = parser.parse_args_and_config(
            ["--config", str(path), "--use_cpu", "true", "--bf16", "false"]
        )
        assert training_args.metric_for_best_model == "eval_ndcg@10", path
        assert model_args.lora_r == 8 and model_args.lora_alpha == 16, path
        if training_args.global_train_batch_size is not None:  # one process here
            assert training_args.global_train_batch_size == (
                training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
            ), path


def test_global_batch_derives_accumulation_from_the_number_of_processes(tmp_path):
    from modeling_mmesid.trainer import MMESIDTrainingConfig

    class EightProcesses(MMESIDTrainingConfig):
        @property
        def world_size(self):
            return 8

    kwargs = {"output_dir": str(tmp_path), "use_cpu": True, "per_device_train_batch_size": 2}
    assert MMESIDTrainingConfig(global_train_batch_size=16, **kwargs).gradient_accumulation_steps == 8
    assert EightProcesses(global_train_batch_size=16, **kwargs).gradient_accumulation_steps == 1
    assert MMESIDTrainingConfig(gradient_accumulation_steps=3, **kwargs).gradient_accumulation_steps == 3
    with pytest.raises(ValueError, match=r"must be a multiple of `per_device_train_batch_size` x processes \(2 x 8 = 16\)"):
        EightProcesses(global_train_batch_size=24, **kwargs)
    with pytest.raises(ValueError, match="Set either `global_train_batch_size` \\(16\\) or `gradient_accumulation_steps`"):
        MMESIDTrainingConfig(global_train_batch_size=16, gradient_accumulation_steps=2, **kwargs)


def test_training_config_defaults_run_on_cpu(tmp_path, monkeypatch):
    """TRL turns bf16 on by default; ours only where the hardware runs it fast, so any CPU run needs no flag."""
    import torch

    from modeling_mmesid.precision import bf16_is_fast
    from modeling_mmesid.trainer import MMESIDTrainingConfig

    args = MMESIDTrainingConfig(output_dir=str(tmp_path))  # conftest: MMESID_PRECISION=float32
    assert args.bf16 is False
    monkeypatch.delenv("MMESID_PRECISION")
    args = MMESIDTrainingConfig(output_dir=str(tmp_path), use_cpu=True)
    assert args.bf16 == bf16_is_fast("cpu")
    assert MMESIDTrainingConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False).bf16 is False
    # bf16 chosen for the CPU without `use_cpu` (the pipeline's config): transformers would refuse it unless the run
    # is marked as a CPU run
    monkeypatch.setenv("MMESID_PRECISION", "bf16")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = MMESIDTrainingConfig(output_dir=str(tmp_path))
    assert args.bf16 is True and args.use_cpu is True
    assert args.metric_for_best_model == "eval_ndcg@10" and args.learning_rate == 3e-4 and not args.packing
    with pytest.raises(ValueError, match="`best_metric` must be one of"):
        MMESIDTrainingConfig(output_dir=str(tmp_path), best_metric="ndcg@50")


def test_evaluate_reports_the_generative_head_beside_the_ranking_head(tiny_run, tmp_path, capsys):
    """`--methods rank generate` on a model with `head="both"`: both rows on the same users; every generated list
    holds 20 distinct catalog items outside the history (checked through `recommend`)."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from modeling_mmesid import MMESIDForSequentialRecommendation, MMESIDProcessor, MMESIDRecommender
    from tokenization.encoders import load_embeddings

    modalities = ["collaborative", "text"]
    processor = MMESIDProcessor(AutoTokenizer.from_pretrained(tiny_run / "backbone"), modalities=modalities,
                                num_levels=2, codebook_size=8, num_items=40)
    embeddings = {m: load_embeddings(tiny_run / "embeddings" / f"{m}.safetensors")[0] for m in modalities}
    sids = load_file(str(tiny_run / "sids" / "sids.safetensors"))["sids"]
    model = MMESIDForSequentialRecommendation.from_backbone(
        str(tiny_run / "backbone"), processor, embeddings, sids, sid_init="random", head="both"
    )
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    recipe = _recipe("evaluate")
    args = recipe.EvaluateArguments(run_dir=str(tiny_run), output_dir=str(tmp_path / "eval"),
                                    model=str(tmp_path / "model"), methods=["rank", "generate", "rerank"], max_users=12)
    results = recipe.main(args)
    assert {"mmesid", "mmesid-generate", "mmesid-rerank"} <= set(results)
    assert results["mmesid"]["num_users"] == results["mmesid-generate"]["num_users"] == 12
    # rerank orders the same 20 beams: the same hits at 20, other ranks
    assert results["mmesid-rerank"]["hr@20"] == results["mmesid-generate"]["hr@20"]
    assert "constrained beam search, 20 beams per user, items not generated count as misses" in capsys.readouterr().out
    from mmesid_artifacts import load_split_table

    test = load_split_table(tiny_run / "data", "test")
    histories = test.column("history").to_pylist()
    items = MMESIDRecommender(model.eval(), processor).recommend(histories, k=20, method="generate")
    for history, row in zip(histories, items.tolist()):
        assert len(set(row)) == 20 and all(1 <= i <= 40 for i in row) and not set(row) & set(history)
    with pytest.raises(ValueError, match=r"`--methods` must be a non-empty subset of rank, generate"):
        recipe.main(recipe.EvaluateArguments(run_dir=str(tiny_run), output_dir=str(tmp_path / "e2"),
                                             model=str(tmp_path / "model"), methods=["beam"]))


def test_report_only_rewrites_a_doc_block_from_results_json_without_ranking(tiny_run, tmp_path):
    recipe = _recipe("evaluate")
    doc = tmp_path / "README.md"
    doc.write_text("<!-- a:start -->\nold\n<!-- a:end -->\n<!-- b:start -->\nold\n<!-- b:end -->\n")
    recipe.main(recipe.EvaluateArguments(run_dir=str(tiny_run), output_dir=str(tmp_path / "eval"), max_users=10,
                                         doc=str(doc), doc_block="a"))
    saved = tmp_path / "eval" / "results.json"
    written = doc.read_text().split("<!-- a:start -->\n")[1].split("\n<!-- a:end -->")[0]
    # Rank nothing (no run folder at all), and write the same table into the other block.
    results = recipe.main(recipe.EvaluateArguments(run_dir=str(tmp_path / "absent"), report_only=str(saved),
                                                   doc=str(doc), doc_block="b"))
    assert set(results) == {"popularity", "transition"}
    assert doc.read_text() == f"<!-- a:start -->\n{written}\n<!-- a:end -->\n<!-- b:start -->\n{written}\n<!-- b:end -->\n"
    with pytest.raises(ValueError, match="--doc"):
        recipe.main(recipe.EvaluateArguments(report_only=str(saved)))
    with pytest.raises(FileNotFoundError, match="no_such.json"):
        recipe.main(recipe.EvaluateArguments(report_only=str(tmp_path / "no_such.json"), doc=str(doc)))
    assert doc.read_text().count("| transition |") == 2
