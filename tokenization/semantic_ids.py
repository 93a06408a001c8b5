# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Trained MM-RQ-VAE + item embeddings → `sids/{sids,codebooks}.safetensors` and `sids.json` (docs/CONTRACTS.md)."""

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file

from modeling_mmesid.data import atomic_save_safetensors, atomic_write_json

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


def save_semantic_ids(
    output_dir: str | os.PathLike,
    sids: torch.LongTensor,
    codebooks: dict[str, torch.Tensor],
    modalities: list[str],
    dataset_fingerprint: str | None = None,
) -> None:
    """Write `sids.safetensors` (key `sids`), `codebooks.safetensors` (keys `codebooks.<modality>`) and `sids.json`
    atomically into `output_dir`."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if sids.dim() != 3 or sids.shape[1] != len(modalities):
        raise ValueError(f"`sids` must be (num_items + 1, {len(modalities)}, num_levels), got {tuple(sids.shape)}.")
    levels, codes, e_dim = next(iter(codebooks.values())).shape
    atomic_save_safetensors(output_dir / "sids.safetensors", {"sids": sids.long()})
    books = {f"codebooks.{m}": codebooks[m].float().cpu() for m in modalities}
    atomic_save_safetensors(output_dir / "codebooks.safetensors", books)
    meta = {
        "modalities": list(modalities),
        "num_levels": int(levels),
        "codebook_size": int(codes),
        "e_dim": int(e_dim),
        "num_items": int(sids.shape[0] - 1),
        "dataset_fingerprint": dataset_fingerprint,
    }
    atomic_write_json(output_dir / "sids.json", meta)


def load_semantic_ids(sids_dir: str | os.PathLike) -> tuple[torch.LongTensor, dict[str, torch.Tensor], dict]:
    """Read `(sids, codebooks, meta)` written by `save_semantic_ids`."""
    sids_dir = Path(sids_dir)
    for name in ("sids.safetensors", "codebooks.safetensors", "sids.json"):
        if not (sids_dir / name).is_file():
            raise FileNotFoundError(f"{sids_dir / name} not found; run `recipes/assign_sids.py` first.")
    meta = json.loads((sids_dir / "sids.json").read_text())
    sids = load_file(str(sids_dir / "sids.safetensors"))["sids"]
    books = load_file(str(sids_dir / "codebooks.safetensors"))
    codebooks = {m: books[f"codebooks.{m}"] for m in meta["modalities"]}
    return sids, codebooks, meta


__all__ = ["compute_semantic_ids", "load_semantic_ids", "save_semantic_ids"]
