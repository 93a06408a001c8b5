# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""mmesid: MME-SID (CIKM 2025) as a Hugging Face-native package.

Importing this package registers the model with the Auto classes (in-process) and marks the classes for
`auto_map`, so that `save_pretrained` writes the Hub-side files next to the weights and
`AutoModel.from_pretrained(folder, trust_remote_code=True)` works where this package is not installed.
"""

# --- model, config and processor registration --------------------------------------------------------
# Keep this block light: it imports only the Hub-side files (torch + transformers), never data/evaluation.
from transformers import AutoConfig, AutoModel, AutoProcessor

from .configuration_mmesid import MMESIDConfig
from .modeling_mmesid import (
    MMESIDForSequentialRecommendation,
    MMESIDModel,
    MMESIDOutput,
    MMESIDPreTrainedModel,
)
from .processing_mmesid import MMESIDProcessor, sid_token
from .recommender_mmesid import MMESIDRecommender


AutoConfig.register("mmesid", MMESIDConfig, exist_ok=True)
# Settled choice (docs/METHOD.md): AutoModel returns the recommender, not the bare MMESIDModel.
AutoModel.register(MMESIDConfig, MMESIDForSequentialRecommendation, exist_ok=True)
AutoProcessor.register(MMESIDConfig, MMESIDProcessor, exist_ok=True)

MMESIDConfig.register_for_auto_class()  # AutoConfig
MMESIDForSequentialRecommendation.register_for_auto_class("AutoModel")
MMESIDProcessor.register_for_auto_class()  # AutoProcessor

__all__ = [
    "MMESIDConfig",
    "MMESIDForSequentialRecommendation",
    "MMESIDModel",
    "MMESIDOutput",
    "MMESIDPreTrainedModel",
    "MMESIDProcessor",
    "MMESIDRecommender",
    "sid_token",
]
# --- end of model registration block ---------------------------------------------------------------------------
