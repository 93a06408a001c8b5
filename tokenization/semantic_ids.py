# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Trained MM-RQ-VAE + item embeddings → `sids/{sids,codebooks}.safetensors` and `sids.json` (docs/CONTRACTS.md).

The files are written and read by `mmesid_artifacts.tables` (`save_semantic_ids`, `load_semantic_ids`, re-exported
here), which checks row counts and the dataset fingerprint.
"""

import torch

from mmesid_artifacts.tables import load_semantic_ids, save_semantic_ids

from .modeling_mmrqvae import MMRQVAE


@torch.no_grad()
def compute_semantic_ids(
    model: MMRQVAE, embeddings: dict[str, torch.Tensor], batch_size: int = 4096
) -> torch.LongTensor:
    """Semantic IDs of every item by nearest code (argmin) at each level (paper §3.2; official `generate_indices`).

    Args:
        model (`MMRQVAE`): a trained model (codebooks initialized).
        embeddings (`dict[str, torch.Tensor]`, each `(num_items + 1, dim)`): per-item tables with row 0 = padding,
            as in `embeddings/<modality>.safetensors`. Row 0 is not encoded.

    Returns:
        `torch.LongTensor` of shape `(num_items + 1, num_modalities, num_levels)`; row 0 is zeros (padding), axis 1
        follows `model.config.modalities`.
    """
    modalities = model.config.modalities
    rows = {embeddings[m].shape[0] for m in modalities}
    if len(rows) != 1:
        raise ValueError(f"Per-item tables have different row counts {sorted(rows)}; expected num_items + 1 each.")
    total = rows.pop()
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    sids = torch.zeros(total, len(modalities), model.config.num_levels, dtype=torch.long)
    for begin in range(1, total, batch_size):
        end = min(begin + batch_size, total)
        codes = model.get_codes({m: embeddings[m][begin:end].float().to(device) for m in modalities})
        sids[begin:end] = torch.stack([codes[m].cpu() for m in modalities], dim=1)  # (batch, modalities, levels)
    model.train(was_training)
    return sids


__all__ = ["compute_semantic_ids", "load_semantic_ids", "save_semantic_ids"]
