# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Stage 1, the item tokenizer: items -> embeddings (SASRec, text, image) -> MM-RQ-VAE -> semantic IDs.

"Item tokenizer" here means MM-RQ-VAE; the backbone's tokenizer is the "text tokenizer" and `MMESIDProcessor` the
"processor" (README glossary). Importing this package registers `MMRQVAE` and `SASRecModel` with the Auto classes.
Heavy optional dependencies (open_clip for images) are imported only when an image encoder is built.
"""

from transformers import AutoConfig, AutoModel

from .configuration_mmrqvae import MMRQVAEConfig
from .diagnostics import (
    codebook_usage,
    collision_rate,
    embedding_collapse_tables,
    format_diagnostics,
    kendall_tau_concordance,
    read_validation_pairs,
    reconstruction_error,
    save_spectrum_plot,
    semantic_id_diagnostics,
    spectrum_summary,
)
from .encoders import (
    ImageEncoderArguments,
    TextEncoderArguments,
    encode_images,
    encode_item_texts,
    encode_texts,
    load_embeddings,
    save_embeddings,
)
from .modeling_mmrqvae import (
    MMRQVAE,
    MMRQVAEOutput,
    MMRQVAEPreTrainedModel,
    gaussian_mmd,
    info_nce,
    kmeans_init,
    sinkhorn_assign,
    straight_through,
)
from .sasrec import SASRecConfig, SASRecModel, SASRecTrainingArguments, sasrec_scorer, train_sasrec
from .semantic_ids import compute_semantic_ids, load_semantic_ids, resolve_collisions, save_semantic_ids
from .train_rqvae import MMRQVAETrainingArguments, load_modality_tables, train_mmrqvae


AutoConfig.register(MMRQVAEConfig.model_type, MMRQVAEConfig, exist_ok=True)
AutoModel.register(MMRQVAEConfig, MMRQVAE, exist_ok=True)
AutoConfig.register(SASRecConfig.model_type, SASRecConfig, exist_ok=True)
AutoModel.register(SASRecConfig, SASRecModel, exist_ok=True)

__all__ = [
    "MMRQVAE",
    "ImageEncoderArguments",
    "MMRQVAEConfig",
    "MMRQVAEOutput",
    "MMRQVAEPreTrainedModel",
    "MMRQVAETrainingArguments",
    "SASRecConfig",
    "SASRecModel",
    "SASRecTrainingArguments",
    "TextEncoderArguments",
    "codebook_usage",
    "collision_rate",
    "compute_semantic_ids",
    "embedding_collapse_tables",
    "encode_images",
    "encode_item_texts",
    "encode_texts",
    "format_diagnostics",
    "gaussian_mmd",
    "info_nce",
    "kendall_tau_concordance",
    "kmeans_init",
    "load_embeddings",
    "load_modality_tables",
    "load_semantic_ids",
    "read_validation_pairs",
    "reconstruction_error",
    "resolve_collisions",
    "sasrec_scorer",
    "save_embeddings",
    "save_semantic_ids",
    "save_spectrum_plot",
    "semantic_id_diagnostics",
    "sinkhorn_assign",
    "spectrum_summary",
    "straight_through",
    "train_mmrqvae",
    "train_sasrec",
]
