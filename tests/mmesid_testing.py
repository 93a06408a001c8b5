# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Shared test helpers: repository paths, skip markers, the one builder of tiny random MME-SID models and backbones
(`tiny_text_config`, `tiny_item_tables`, `tiny_mmesid`), and a complete tiny run folder (data, embeddings, semantic
IDs, a random Llama backbone) for the recipe and Hub tests. Imported as `mmesid_testing` (tests/ is on sys.path)."""

import importlib.util
import random
import sys
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
NUM_ITEMS = 40
# raw embedding size per modality of the tiny models (`tiny_item_tables`)
TINY_MODALITY_DIMS = {"collaborative": 16, "text": 24, "image": 12}


def tiny_text_config(vocab_size: int = 99, **overrides):
    """The tiny random Llama backbone of every model test (P16): 2 layers, hidden 32, 4 heads, intermediate 37, 512
    positions; `vocab_size` 99 is the tiny tokenizer's (`TINY_TOKENIZER_DIR`). Keyword overrides set any other
    `LlamaConfig` field (`num_hidden_layers=1`, `num_key_value_heads=2`, ...)."""
    from transformers import LlamaConfig

    kwargs = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 37,
              "max_position_embeddings": 512}
    return LlamaConfig(vocab_size=vocab_size, **{**kwargs, **overrides})


def tiny_item_tables(
    num_items: int = 50,
    modalities=("collaborative", "text"),
    seed: int = 0,
    num_levels: int = 2,
    codebook_size: int = 8,
    codebook_dim: int = 20,
    sids: torch.Tensor | None = None,
) -> dict:
    """Random item tables of a tiny MME-SID, drawn from one generator seeded with `seed`, in this order: raw
    embeddings per modality (`TINY_MODALITY_DIMS`), semantic IDs `(num_items + 1, modalities, levels)` (skipped when
    `sids` is given), codebooks `(levels, codes, codebook_dim)` per modality, training counts in [0, 40). Row 0 (the
    padding item) is zero in the embeddings, the drawn IDs and the counts. Returns a dict with keys `embeddings`,
    `sids`, `codebooks` and `item_counts`."""
    modalities = list(modalities)
    g = torch.Generator().manual_seed(seed)
    rows = num_items + 1
    embeddings = {m: torch.randn(rows, TINY_MODALITY_DIMS[m], generator=g) for m in modalities}
    for table in embeddings.values():
        table[0] = 0
    if sids is None:
        sids = torch.randint(0, codebook_size, (rows, len(modalities), num_levels), generator=g)
        sids[0] = 0
    codebooks = {m: torch.randn(num_levels, codebook_size, codebook_dim, generator=g) for m in modalities}
    item_counts = torch.randint(0, 40, (rows,), generator=g)
    item_counts[0] = 0
    return {"embeddings": embeddings, "sids": sids, "codebooks": codebooks, "item_counts": item_counts}


def tiny_mmesid(
    tokenizer=None,
    *,
    processor=None,
    num_items: int = 50,
    modalities=("collaborative", "text"),
    seed: int = 0,
    num_levels: int = 2,
    codebook_size: int = 8,
    codebook_dim: int = 20,
    sids: torch.Tensor | None = None,
    text_config=None,
    text_config_kwargs: dict | None = None,
    layout: str = "chat",
    **config_kwargs,
):
    """The tiny random MME-SID of the model tests: a random `tiny_text_config` backbone around `tiny_item_tables`,
    weights seeded with `torch.manual_seed(seed)`, built by `MMESIDForSequentialRecommendation.from_backbone`.

    `tokenizer` defaults to the tiny Llama-3 tokenizer; `processor` (built on it) replaces the processor built here
    (which lays prompts out as `layout` says).
    The backbone is `tiny_text_config(len(processor.tokenizer), **text_config_kwargs)` (its vocabulary already holds
    the added tokens, so nothing is resized), or `text_config` when given. The codebooks initialize the SID rows
    unless `sid_init="random"`. Other keywords are `MMESIDConfig` fields (`head`, `fusion`, `fusion_temperature`, ...).
    Returns `(model in eval mode, processor, tables)`."""
    from transformers import AutoTokenizer

    from modeling_mmesid import MMESIDForSequentialRecommendation, MMESIDProcessor

    modalities = list(modalities)
    if processor is None:
        tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(TINY_TOKENIZER_DIR)
        processor = MMESIDProcessor(tokenizer, modalities=modalities, num_levels=num_levels,
                                    codebook_size=codebook_size, num_items=num_items, layout=layout)
    if text_config is None:
        text_config = tiny_text_config(len(processor.tokenizer), **(text_config_kwargs or {}))
    tables = tiny_item_tables(num_items, modalities, seed, num_levels, codebook_size, codebook_dim, sids)
    torch.manual_seed(seed)
    model = MMESIDForSequentialRecommendation.from_backbone(
        text_config,
        processor,
        tables["embeddings"],
        tables["sids"],
        codebooks=tables["codebooks"] if config_kwargs.get("sid_init", "codebook") == "codebook" else None,
        item_counts=tables["item_counts"],
        **config_kwargs,
    )
    return model.eval(), processor, tables


def build_tiny_run(root: Path) -> Path:
    from transformers import AutoTokenizer, LlamaForCausalLM

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
    config = tiny_text_config(len(tokenizer), num_key_value_heads=2, max_position_embeddings=256)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(run / "backbone")
    tokenizer.save_pretrained(run / "backbone")
    return run


# Titles of the tiny demo catalog (`build_tiny_demo_run`): 50 distinct, searchable names, item id = index + 1
DEMO_TITLES = [f"{adjective} {product}" for product in ("Lip Balm", "Hair Oil", "Nail Polish", "Face Cream", "Shampoo")
               for adjective in ("Rose", "Argan", "Velvet", "Citrus", "Matte", "Glossy", "Herbal", "Ocean", "Amber",
                                 "Midnight")]


def build_tiny_demo_run(root: Path, head: str = "both") -> Path:
    """A run folder for the demo app: `finetune/model` (a saved random `tiny_mmesid` with `head`, 50 items) and
    `data/` (splits of 30 random users over those items, `items.parquet` with `DEMO_TITLES`, brands on even ids)."""
    from modeling_mmesid import data

    run = root / "demo-run"
    rng = random.Random(0)
    sequences = {u: [rng.randint(1, 50) for _ in range(rng.randint(3, 8))] for u in range(1, 31)}
    sequences[31] = list(range(1, 51))  # every item occurs: the data's catalog is the model's
    items = {i: data.ItemRecord(title=title, brand="Acme" if i % 2 == 0 else None)
             for i, title in enumerate(DEMO_TITLES, start=1)}
    data.write_dataset(run / "data", sequences, items)
    model, processor, _ = tiny_mmesid(num_items=50, head=head)
    model.save_pretrained(run / "finetune" / "model")
    processor.save_pretrained(run / "finetune" / "model")
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



def import_recipe(name: str):
    """Import `recipes/<name>.py` in this process, then undo what it did to `sys.path` and `sys.modules`: recipes put
    recipes/ first on the path, where `evaluate.py` would shadow the `evaluate` library for every later test."""
    recipes = REPO / "recipes"
    path_before, modules_before = list(sys.path), set(sys.modules)
    try:
        spec = importlib.util.spec_from_file_location(f"recipe_{name}", recipes / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = path_before
        for added in set(sys.modules) - modules_before:
            if str(getattr(sys.modules[added], "__file__", None) or "").startswith(str(recipes)):
                del sys.modules[added]
    return module
