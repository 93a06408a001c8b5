# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Trained MM-RQ-VAE + item embeddings → `sids/{sids,codebooks}.safetensors` and `sids.json` (docs/CONTRACTS.md).

The files are written and read by `mmesid_artifacts.tables` (`save_semantic_ids`, `load_semantic_ids`, re-exported
here), which checks row counts and the dataset fingerprint.
"""

import torch

from mmesid_artifacts.tables import load_semantic_ids, save_semantic_ids

from .modeling_mmrqvae import MMRQVAE, squared_distances


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


@torch.no_grad()
def resolve_collisions(
    model: MMRQVAE, embeddings: dict[str, torch.Tensor], sids: torch.LongTensor
) -> tuple[torch.LongTensor, list[dict]]:
    """Make every item's combined ID (all modalities, all levels) unique by moving the later items of each
    colliding group to a nearby last-level code (docs/SID_QUALITY.md, "Collision resolution"). Not in the official
    code, which keeps collisions (`assign_sids.py --no_resolve_collisions`).

    Items are visited in id order; the first item of a group keeps its ID. Every other item `i` of the group takes,
    over all modalities `m` and last-level codes `c`, the change with the smallest increase of its last-level
    squared distance `‖r_{i,m} − e_c‖² − ‖r_{i,m} − e_{current}‖²` (`r` = the latent minus its first `L − 1` codes)
    that gives an ID no item holds. Levels `1..L−1` never change, so the prefix structure the codes encode is kept.

    Args:
        model (`MMRQVAE`): the model that produced `sids`.
        embeddings (`dict[str, torch.Tensor]`, each `(num_items + 1, dim)`): the tables `sids` was computed from.
        sids (`torch.LongTensor` of shape `(num_items + 1, num_modalities, num_levels)`): row 0 = padding.

    Returns:
        `(sids, changes)`: a new table, and one `{"item", "modality", "from", "to", "distance_increase"}` per moved item.
    """
    modalities = model.config.modalities
    items = sids[1:].reshape(sids.shape[0] - 1, -1)
    _, inverse, counts = torch.unique(items, dim=0, return_inverse=True, return_counts=True)
    colliding = (counts[inverse] > 1).nonzero().squeeze(1) + 1  # item ids, ascending
    sids = sids.clone()
    if colliding.numel() == 0:
        return sids, []
    taken = {tuple(row) for row in items.tolist()}
    seen_groups = set()
    device = next(model.parameters()).device
    last = model.config.num_levels - 1
    changes = []
    for item in colliding.tolist():
        key = tuple(sids[item].reshape(-1).tolist())
        if key not in seen_groups:  # the group's first item keeps its ID
            seen_groups.add(key)
            continue
        candidates = []  # (distance increase, modality index, code)
        for i, m in enumerate(modalities):
            books = model.quantizers[m].codebooks.detach().float()  # (levels, codes, e_dim)
            latent = model.encoders[m](embeddings[m][item : item + 1].float().to(device))[0]
            residual = latent - sum(books[level, sids[item, i, level]] for level in range(last))
            d2 = squared_distances(residual.unsqueeze(0), books[last])[0]  # (codes,)
            increase = d2 - d2[sids[item, i, last]]
            candidates += [(float(increase[c]), i, c) for c in range(d2.shape[0]) if c != int(sids[item, i, last])]
        for increase, i, code in sorted(candidates):  # noqa: B007 (the chosen `increase` is recorded below)
            trial = sids[item].clone()
            trial[i, last] = code
            trial_key = tuple(trial.reshape(-1).tolist())
            if trial_key not in taken:
                break
        else:
            raise ValueError(f"Item {item}: no last-level code gives a unique semantic ID (all are taken).")
        changes.append(
            {"item": item, "modality": modalities[i], "from": int(sids[item, i, last]), "to": code,
             "distance_increase": increase}
        )
        sids[item] = trial
        taken.add(trial_key)
    return sids, changes


__all__ = ["compute_semantic_ids", "load_semantic_ids", "resolve_collisions", "save_semantic_ids"]
