# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Per-item tables of a run: embeddings (`embeddings/`), semantic IDs and codebooks (`sids/`), and the one loader
of what Stage 2 needs (`load_item_tables`). Formats: docs/CONTRACTS.md; who writes and reads: docs/RUN_FOLDER.md.

Every reader checks what it reads against the dataset (row count = `num_items + 1`, dataset fingerprint) and names
the file in its error.
"""

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from .data_files import load_item_counts, load_stats
from .io import atomic_save_safetensors, atomic_write_json, read_json, require_file
from .run import DATA_FILES, MODALITIES, SIDS_FILES, Run, embedding_file


EMBEDDINGS_KEY = "embeddings"
MASK_KEY = "mask"
SIDS_KEY = "sids"
CODEBOOK_PREFIX = "codebooks."


# ----------------------------------------------------------------------------------------------------------------
# Embeddings


def sidecar_path(path: str | os.PathLike) -> Path:
    """`collaborative.safetensors` → `collaborative.json`."""
    return Path(path).with_suffix(".json")


def _check_finite(table: torch.Tensor, path: Path):
    bad = ~torch.isfinite(table)
    if bad.any():
        rows = bad.any(dim=1).nonzero().flatten()
        kind = "NaN" if torch.isnan(table).any() else "Inf"
        raise ValueError(
            f"{path}: {kind} values in {rows.numel()} row(s) (first item ids {rows[:5].tolist()}); "
            "re-run the encoder for this modality."
        )


def _check_fingerprint(path: Path, found: str | None, expected: str | None, remedy: str) -> None:
    if expected is not None and found != expected:
        raise ValueError(
            f"{path}: dataset fingerprint {found!r} differs from the dataset's {expected!r}; the file was made for "
            f"other data, {remedy}."
        )


def save_embeddings(
    path: str | os.PathLike,
    embeddings: torch.Tensor,
    *,
    modality: str,
    encoder: str,
    dataset_fingerprint: str | None = None,
    mask: torch.Tensor | None = None,
    created_by: str = "mmesid",
    **details: Any,
) -> Path:
    r"""
    Writes an item table and its JSON sidecar atomically (docs/CONTRACTS.md, "embeddings/").

    Args:
        path (`str` or `os.PathLike`): the `.safetensors` file; the sidecar is the same name with `.json`.
        embeddings (`torch.Tensor` of shape `(num_items + 1, dim)`): row `i` = item `i`; row 0 is padding and is
            written as zeros whatever it holds.
        modality (`str`): `"collaborative"`, `"text"` or `"image"`.
        encoder (`str`): what produced the table (model name or path).
        dataset_fingerprint (`str`, *optional*): `stats.json["fingerprint"]` of the data the table belongs to.
        mask (`torch.BoolTensor` of shape `(num_items + 1,)`, *optional*): False where the item had no input.
        details: any further JSON-serializable facts (pooling, template, counts of missing inputs, ...).

    Returns:
        `Path` of the safetensors file.
    """
    path = Path(path)
    if embeddings.ndim != 2 or embeddings.shape[0] < 2:
        raise ValueError(
            f"`embeddings` for {path} must have shape [num_items + 1, dim] with num_items >= 1, "
            f"got {tuple(embeddings.shape)}."
        )
    table = embeddings.detach().to(torch.float32).cpu().contiguous().clone()
    table[0] = 0.0
    _check_finite(table, path)
    tensors = {EMBEDDINGS_KEY: table}
    if mask is not None:
        if mask.shape != (table.shape[0],):
            raise ValueError(f"`mask` for {path} must have shape ({table.shape[0]},), got {tuple(mask.shape)}.")
        mask = mask.detach().to(torch.bool).cpu().contiguous().clone()
        mask[0] = False
        tensors[MASK_KEY] = mask
    meta = {
        "modality": modality,
        "encoder": encoder,
        "dim": int(table.shape[1]),
        "num_items": int(table.shape[0] - 1),
        "dataset_fingerprint": dataset_fingerprint,
        "created_by": created_by,
        "num_masked": int((~tensors[MASK_KEY][1:]).sum()) if mask is not None else 0,
        **details,
    }
    atomic_save_safetensors(path, tensors, metadata={"modality": modality, "encoder": encoder})
    atomic_write_json(sidecar_path(path), meta)
    return path


def load_embeddings(
    path: str | os.PathLike, num_items: int | None = None, fingerprint: str | None = None
) -> tuple[torch.Tensor, dict]:
    r"""
    Reads an item table written by [`save_embeddings`] and checks that it fits the dataset.

    Args:
        path (`str` or `os.PathLike`): the `.safetensors` file (its `.json` sidecar must sit next to it).
        num_items (`int`, *optional*): the dataset's largest item id; the table must have `num_items + 1` rows.
        fingerprint (`str`, *optional*): the dataset's `stats.json["fingerprint"]`; must equal the sidecar's.

    Returns:
        `(torch.Tensor, dict)`: the float32 table `[num_items + 1, dim]` and the sidecar, with `meta["mask"]` set
        to the bool mask `[num_items + 1]` (all True but row 0 when the file has none).

    Raises:
        `FileNotFoundError` if the file or its sidecar is missing; `ValueError` (naming the file) on a row-count,
        dimension or fingerprint mismatch, or NaN/Inf values.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Embedding file {path} not found; run `recipes/encode_items.py` first.")
    side = sidecar_path(path)
    if not side.is_file():
        raise FileNotFoundError(f"Sidecar {side} of {path} not found; embedding files are written with their sidecar.")
    meta = read_json(side, "Sidecar")
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        if EMBEDDINGS_KEY not in keys:
            raise ValueError(f"{path}: no `{EMBEDDINGS_KEY}` tensor (keys: {sorted(keys)}).")
        table = f.get_tensor(EMBEDDINGS_KEY)
        mask = f.get_tensor(MASK_KEY).bool() if MASK_KEY in keys else None
    if table.ndim != 2:
        raise ValueError(f"{path}: `{EMBEDDINGS_KEY}` must be 2-D [num_items + 1, dim], got {tuple(table.shape)}.")
    table = table.float()
    if num_items is not None and table.shape[0] != num_items + 1:
        raise ValueError(
            f"{path}: {table.shape[0]} rows, but the dataset has {num_items} items, so {num_items + 1} rows are "
            "expected (row 0 = padding). The table was made for another dataset; re-encode the items."
        )
    if meta.get("num_items") is not None and meta["num_items"] + 1 != table.shape[0]:
        raise ValueError(f"{path}: {table.shape[0]} rows, but its sidecar says num_items={meta['num_items']}.")
    if meta.get("dim") is not None and meta["dim"] != table.shape[1]:
        raise ValueError(f"{path}: dimension {table.shape[1]}, but its sidecar says dim={meta['dim']}.")
    _check_fingerprint(path, meta.get("dataset_fingerprint"), fingerprint, "re-encode the items")
    _check_finite(table, path)
    if mask is None:
        mask = torch.ones(table.shape[0], dtype=torch.bool)
        mask[0] = False
    elif mask.shape != (table.shape[0],):
        raise ValueError(f"{path}: `mask` has shape {tuple(mask.shape)}, expected ({table.shape[0]},).")
    meta["mask"] = mask
    return table, meta


def load_modality_tables(
    embeddings_dir: str | os.PathLike,
    modalities: list[str],
    num_items: int | None = None,
    fingerprint: str | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, dict]]:
    """`embeddings/<modality>.safetensors` for each modality (checked by `load_embeddings`), all the same rows."""
    tables, metas = {}, {}
    for m in modalities:
        tables[m], metas[m] = load_embeddings(embedding_file(embeddings_dir, m), num_items, fingerprint)
    rows = {m: t.shape[0] for m, t in tables.items()}
    if len(set(rows.values())) > 1:
        raise ValueError(
            f"Embedding tables in {embeddings_dir} have different row counts {rows}; every modality needs "
            "num_items + 1 rows."
        )
    return tables, metas


# ----------------------------------------------------------------------------------------------------------------
# Semantic IDs and codebooks


def save_semantic_ids(
    output_dir: str | os.PathLike,
    sids: torch.LongTensor,
    codebooks: dict[str, torch.Tensor],
    modalities: list[str],
    dataset_fingerprint: str | None = None,
) -> None:
    """Write `sids.safetensors` (key `sids`), `codebooks.safetensors` (keys `codebooks.<modality>`) and `sids.json`
    atomically into `output_dir` (`sids.json` last: its presence marks a complete folder)."""
    output_dir = Path(output_dir)
    if sids.dim() != 3 or sids.shape[1] != len(modalities):
        raise ValueError(f"`sids` must be (num_items + 1, {len(modalities)}, num_levels), got {tuple(sids.shape)}.")
    missing = [m for m in modalities if m not in codebooks]
    if missing:
        raise ValueError(f"`codebooks` has no entry for {missing}; it has {sorted(codebooks)}.")
    levels, codes, e_dim = next(iter(codebooks.values())).shape
    atomic_save_safetensors(output_dir / SIDS_FILES["sids"], {SIDS_KEY: sids.long()})
    books = {f"{CODEBOOK_PREFIX}{m}": codebooks[m].float().cpu() for m in modalities}
    atomic_save_safetensors(output_dir / SIDS_FILES["codebooks"], books)
    meta = {
        "modalities": list(modalities),
        "num_levels": int(levels),
        "codebook_size": int(codes),
        "e_dim": int(e_dim),
        "num_items": int(sids.shape[0] - 1),
        "dataset_fingerprint": dataset_fingerprint,
    }
    atomic_write_json(output_dir / SIDS_FILES["meta"], meta)


def load_semantic_ids(
    sids_dir: str | os.PathLike, num_items: int | None = None, fingerprint: str | None = None
) -> tuple[torch.LongTensor, dict[str, torch.Tensor], dict]:
    """Read `(sids, codebooks, meta)` written by `save_semantic_ids`, in the order of `meta["modalities"]`.

    Checks the shapes against `sids.json` and, when given, the row count (`num_items + 1`) and the dataset
    fingerprint (a `sids.json` without one, from tables of mixed origin, is not checked); errors name the file.
    """
    sids_dir = Path(sids_dir)
    hint = "run `recipes/assign_sids.py` first"
    paths = {k: require_file(sids_dir / name, "Semantic-ID file", hint) for k, name in SIDS_FILES.items()}
    meta = read_json(paths["meta"], "Semantic-ID metadata")
    tensors = load_file(str(paths["sids"]))
    if SIDS_KEY not in tensors:
        raise ValueError(f"{paths['sids']}: no `{SIDS_KEY}` tensor (keys: {sorted(tensors)}).")
    sids = tensors[SIDS_KEY].long()
    modalities = meta["modalities"]
    expected = (len(modalities), meta["num_levels"])
    if sids.dim() != 3 or tuple(sids.shape[1:]) != expected:
        raise ValueError(
            f"{paths['sids']}: shape {tuple(sids.shape)}, but {paths['meta'].name} says (num_items + 1, "
            f"{expected[0]}, {expected[1]}) for modalities {modalities}."
        )
    for rows, what in ((num_items, "the dataset has"), (meta.get("num_items"), f"{paths['meta'].name} says")):
        if rows is not None and sids.shape[0] != rows + 1:
            raise ValueError(
                f"{paths['sids']}: {sids.shape[0]} rows, but {what} {rows} items, so {rows + 1} rows are expected "
                "(row 0 = padding); re-run `recipes/assign_sids.py` on this run's embeddings."
            )
    if meta.get("dataset_fingerprint") is not None:
        _check_fingerprint(paths["meta"], meta["dataset_fingerprint"], fingerprint, "re-run the Stage 1 recipes")
    books = load_file(str(paths["codebooks"]))
    codebooks = {}
    for m in modalities:
        key = f"{CODEBOOK_PREFIX}{m}"
        if key not in books:
            raise ValueError(f"{paths['codebooks']}: no `{key}` tensor (keys: {sorted(books)}).")
        shape = (meta["num_levels"], meta["codebook_size"], meta["e_dim"])
        if tuple(books[key].shape) != shape:
            raise ValueError(f"{paths['codebooks']}: `{key}` has shape {tuple(books[key].shape)}, expected {shape}.")
        codebooks[m] = books[key]
    return sids, codebooks, meta


# ----------------------------------------------------------------------------------------------------------------
# What Stage 2 reads


@dataclass
class ItemTables:
    """Everything per item that `MMESIDForSequentialRecommendation.from_backbone` takes, in `modalities` order."""

    modalities: list[str]
    embeddings: dict[str, torch.Tensor]  # modality -> float32 [num_items + 1, dim]
    masks: dict[str, torch.Tensor]  # modality -> bool [num_items + 1]
    sids: torch.LongTensor  # [num_items + 1, len(modalities), num_levels], axis 1 in `modalities` order
    codebooks: dict[str, torch.Tensor]  # modality -> float32 [num_levels, codebook_size, e_dim]
    item_counts: torch.LongTensor  # [num_items + 1], row 0 = 0
    num_items: int
    num_levels: int
    codebook_size: int
    fingerprint: str | None = None
    sid_meta: dict = field(default_factory=dict)

    def processor_kwargs(self) -> dict:
        """The keyword arguments `MMESIDProcessor` takes from the run (besides the text tokenizer)."""
        return {"modalities": list(self.modalities), "num_levels": self.num_levels,
                "codebook_size": self.codebook_size, "num_items": self.num_items}


def load_item_tables(
    run_dir: str | os.PathLike | Run, modalities: list[str] | None = None, *, check_fingerprint: bool = True
) -> ItemTables:
    """The one loader of Stage 2's inputs from a run folder: `embeddings/`, `sids/` (SIDs reordered to
    `modalities`), codebooks and `data/` (item counts), every table checked against `data/stats.json`.

    Args:
        run_dir (`str`, `os.PathLike` or `Run`): `outputs/<run>`.
        modalities (`list[str]`, *optional*): the model's modalities, in the model's order (`config.modalities`);
            defaults to those of `sids.json` in the project's order (`MODALITIES`).
        check_fingerprint (`bool`, *optional*, defaults to `True`): check every table against
            `stats.json["fingerprint"]` (`stats.json` must then exist).

    Returns:
        `ItemTables`; `tables.processor_kwargs()` are the run's `MMESIDProcessor` arguments.
    """
    run = run_dir if isinstance(run_dir, Run) else Run(run_dir)
    return load_item_tables_from(run.embeddings, run.sids, run.data, modalities, check_fingerprint=check_fingerprint)


def load_item_tables_from(
    embeddings_dir: str | os.PathLike,
    sids_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    modalities: list[str] | None = None,
    *,
    check_fingerprint: bool = True,
) -> ItemTables:
    """`load_item_tables` from three folders that hold a run's files: a run's `embeddings/`, `sids/` and `data/`, or
    a dataset repo's `embeddings/`, `sids/` and root (`modeling_mmesid.adapters`)."""
    fingerprint = num_items = None
    if check_fingerprint or (Path(data_dir) / DATA_FILES["stats"]).is_file():
        stats = load_stats(data_dir)
        num_items = int(stats["num_items"])
        fingerprint = stats.get("fingerprint") if check_fingerprint else None
    sids, codebooks, meta = load_semantic_ids(sids_dir, num_items, fingerprint)
    num_items = sids.shape[0] - 1
    if modalities is None:
        modalities = [m for m in MODALITIES if m in meta["modalities"]]
    modalities = list(modalities)
    missing = [m for m in modalities if m not in meta["modalities"]]
    if missing:
        raise ValueError(
            f"{Path(sids_dir) / SIDS_FILES['meta']}: no semantic IDs for {missing}; the MM-RQ-VAE of this run was "
            f"trained on {meta['modalities']}."
        )
    order = [meta["modalities"].index(m) for m in modalities]
    tables, metas = load_modality_tables(embeddings_dir, modalities, num_items, fingerprint)
    return ItemTables(
        modalities=modalities,
        embeddings=tables,
        masks={m: metas[m]["mask"] for m in modalities},
        sids=sids[:, order].contiguous(),
        codebooks={m: codebooks[m] for m in modalities},
        item_counts=torch.as_tensor(load_item_counts(data_dir, num_items)),
        num_items=num_items,
        num_levels=int(meta["num_levels"]),
        codebook_size=int(meta["codebook_size"]),
        fingerprint=fingerprint,
        sid_meta=meta,
    )


__all__ = [
    "CODEBOOK_PREFIX",
    "EMBEDDINGS_KEY",
    "MASK_KEY",
    "SIDS_KEY",
    "ItemTables",
    "load_embeddings",
    "load_item_tables",
    "load_item_tables_from",
    "load_modality_tables",
    "load_semantic_ids",
    "save_embeddings",
    "save_semantic_ids",
    "sidecar_path",
]
