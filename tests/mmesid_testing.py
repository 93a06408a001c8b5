# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Shared test helpers: repository paths, skip markers, and a complete tiny run folder (data, embeddings, semantic
IDs, a random Llama backbone) for the recipe and Hub tests. Imported as `mmesid_testing` (tests/ is on sys.path)."""

import os
import random
from pathlib import Path

import pytest
import torch
import yaml


REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
BEAUTY_NEW = SHARED_DATA / "Beauty" / "mmesid" / "Beauty_new.txt"
FIXTURES = REPO / "tests" / "fixtures"
TINY_TOKENIZER_DIR = FIXTURES / "tiny-llama3-tokenizer"

requires_shared_data = pytest.mark.skipif(
    not BEAUTY_NEW.is_file(), reason=f"real Beauty data not found at {SHARED_DATA} (../shared/data beside the repo)"
)
slow = pytest.mark.skipif(os.environ.get("RUN_SLOW") != "1", reason="slow test: set RUN_SLOW=1 to run it")
NUM_ITEMS = 40


def build_tiny_run(root: Path) -> Path:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from modeling_mmesid import data
    from tokenization.encoders import save_embeddings
    from tokenization.semantic_ids import save_semantic_ids

    rng = random.Random(0)
    sequences = {u: [rng.randint(1, NUM_ITEMS) for _ in range(rng.randint(4, 9))] for u in range(1, 25)}
    for u, seq in sequences.items():  # a learnable pattern: item i is often followed by i + 1
        sequences[u] = [seq[0]] + [(x % NUM_ITEMS) + 1 if k % 2 else x for k, x in enumerate(seq[1:])]
    run = root / "tiny-run"
    stats = data.write_dataset(run / "data", sequences)
    g = torch.Generator().manual_seed(0)
    for modality, dim in (("collaborative", 8), ("text", 12)):
        save_embeddings(run / "embeddings" / f"{modality}.safetensors", torch.randn(NUM_ITEMS + 1, dim, generator=g),
                        modality=modality, encoder="random", dataset_fingerprint=stats["fingerprint"])
    sids = torch.randint(0, 8, (NUM_ITEMS + 1, 2, 2), generator=g)
    sids[0] = 0
    codebooks = {m: torch.randn(2, 8, 16, generator=g) for m in ("collaborative", "text")}
    save_semantic_ids(run / "sids", sids, codebooks, ["collaborative", "text"], stats["fingerprint"])

    tokenizer = AutoTokenizer.from_pretrained(TINY_TOKENIZER_DIR)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=37, max_position_embeddings=256)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(run / "backbone")
    tokenizer.save_pretrained(run / "backbone")
    return run


def finetune_config(run: Path, output_dir: Path, **overrides) -> Path:
    cfg = {
        "run_dir": str(run),
        "model_name_or_path": str(run / "backbone"),
        "modalities": ["collaborative", "text"],
        "use_peft": True,
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
        "lora_target_modules": ["gate_proj", "up_proj", "down_proj"],
        "output_dir": str(output_dir),
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 16,
        "learning_rate": 5e-3,
        "warmup_steps": 0,
        "max_steps": 8,
        "eval_strategy": "steps",
        "eval_steps": 4,
        "save_strategy": "steps",
        "save_steps": 4,
        "save_total_limit": None,
        "logging_steps": 2,
        "seed": 7,
        "data_seed": 7,
        "use_cpu": True,
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
    }
    cfg.update(overrides)
    path = output_dir.parent / f"{output_dir.name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    return path

