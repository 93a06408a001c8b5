# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Loading the published LoRA adapter: the model it applies to (`load_adapter_base`) and the adapted model
(`load_adapter_model`), by repo id, online or offline. Publishing is `hub.py`; offline placement is `hub_cache.py`.

The item tables come from the dataset repo through `mmesid_artifacts.load_item_tables_from`, the loader Stage 2
uses on a run folder (a dataset repo holds the same files: `embeddings/`, `sids/`, `items.parquet`, `stats.json`),
so they are checked the same way (row counts, dataset fingerprint) and the SIDs are put in the model's modality order.
"""

import json
import os
from pathlib import Path


# The model repo keeps the adapter in a subfolder: with an `adapter_config.json` at the root, `transformers` would
# load `base_model_name_or_path` instead of the full model (`maybe_load_adapters`).
ADAPTER_SUBFOLDER = "adapter"
# what of a dataset repo the adapter's base model needs
ITEM_TABLE_PATTERNS = ["embeddings/*", "sids/*", "items.parquet", "stats.json"]


def load_adapter_base(
    model_repo_id: str,
    dataset_repo_id: str,
    base_model_id: str | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    **backbone_kwargs,
):
    """The MME-SID model the published LoRA adapter applies to, before fine-tuning: the base LLM (the adapter's
    `base_model_name_or_path`) wrapped by `MMESIDForSequentialRecommendation` with the item tables (embeddings, SIDs,
    codebooks, training counts) of the dataset repo and the processor of the model repo.

    The modules the adapter saves (`modules_to_save`: projections, item MLP, item head, fusion gate) and the SID rows
    (`trainable_token_indices`) replace the freshly initialized ones, so the adapted model scores like the full model
    in the repo up to LoRA-merge rounding, provided the base weights are the ones training used. The codebook
    projection is seeded with the training seed (`training_config.json`), as in training.
    """
    from huggingface_hub import hf_hub_download, snapshot_download

    from mmesid_artifacts import load_item_tables_from

    from .configuration_mmesid import MMESIDConfig
    from .modeling_mmesid import MMESIDForSequentialRecommendation
    from .processing_mmesid import MMESIDProcessor

    kwargs = {"revision": revision, "cache_dir": cache_dir}
    config = MMESIDConfig.from_pretrained(model_repo_id, **kwargs)
    processor = MMESIDProcessor.from_pretrained(model_repo_id, **kwargs)
    if base_model_id is None:
        adapter_config = hf_hub_download(model_repo_id, f"{ADAPTER_SUBFOLDER}/adapter_config.json", **kwargs)
        base_model_id = json.loads(Path(adapter_config).read_text())["base_model_name_or_path"]
    train_config = json.loads(Path(hf_hub_download(model_repo_id, "training_config.json", **kwargs)).read_text())
    seed = int((train_config.get("finetune_config") or {}).get("seed", 42))  # TrainingArguments' default seed
    data = Path(snapshot_download(dataset_repo_id, repo_type="dataset", cache_dir=cache_dir,
                                  allow_patterns=ITEM_TABLE_PATTERNS))
    tables = load_item_tables_from(data / "embeddings", data / "sids", data, config.modalities)
    if tables.num_items != config.num_items:
        raise ValueError(f"Dataset repo {dataset_repo_id!r} has {tables.num_items} items, but the model in "
                         f"{model_repo_id!r} was trained on {config.num_items}.")
    saved = mmesid_fields(config.to_dict())
    derived = {"text_config", "num_items", "modality_dims", "codebook_dim", *processor.config_kwargs()}
    model = MMESIDForSequentialRecommendation.from_backbone(
        base_model_id, processor, tables.embeddings, tables.sids,
        tables.codebooks if config.sid_init == "codebook" else None, item_counts=tables.item_counts,
        backbone_kwargs={"cache_dir": cache_dir, **backbone_kwargs}, codebook_seed=seed,
        **{k: v for k, v in saved.items() if k not in derived},
    )
    rebuilt = mmesid_fields(model.config.to_dict())
    differ = sorted(k for k in saved if k != "text_config" and rebuilt.get(k) != saved[k])
    if differ:
        raise ValueError(
            f"The model rebuilt from the base model, the processor and the dataset repo {dataset_repo_id!r} differs "
            f"from the config of {model_repo_id!r} in {differ} (saved {[saved[k] for k in differ]}, rebuilt "
            f"{[rebuilt.get(k) for k in differ]}); the adapter belongs to other item tables or another processor."
        )
    return model


def mmesid_fields(config_dict: dict) -> dict:
    """The fields `MMESIDConfig` itself declares (not `PreTrainedConfig`'s) of a `config.to_dict()`: what a rebuilt
    model must share with the saved one. Read from the class, so a new field is never left out of the round trip."""
    from .configuration_mmesid import MMESIDConfig

    return {k: v for k, v in config_dict.items() if k in MMESIDConfig.__annotations__}


def load_adapter_model(
    model_repo_id: str,
    dataset_repo_id: str,
    base_model_id: str | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    **backbone_kwargs,
):
    """`PeftModel` of the published adapter on `load_adapter_base(...)`, online or offline.

    Online this is `PeftModel.from_pretrained(base, model_repo_id, subfolder="adapter")`. We resolve the adapter
    folder with `snapshot_download` and pass the local folder instead because, with `HF_HUB_OFFLINE=1`, peft 0.21's
    `load_peft_weights` joins `subfolder` into the file name *and* passes it to `hf_hub_download`, looking for
    `adapter/adapter/adapter_model.safetensors`.
    """
    from huggingface_hub import snapshot_download
    from peft import PeftModel

    base = load_adapter_base(model_repo_id, dataset_repo_id, base_model_id, revision, cache_dir, **backbone_kwargs)
    folder = snapshot_download(model_repo_id, revision=revision, cache_dir=cache_dir,
                               allow_patterns=[f"{ADAPTER_SUBFOLDER}/*"])
    return PeftModel.from_pretrained(base, os.path.join(folder, ADAPTER_SUBFOLDER))


__all__ = ["ADAPTER_SUBFOLDER", "load_adapter_base", "load_adapter_model", "mmesid_fields"]
