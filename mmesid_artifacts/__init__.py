# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""The ground floor of mmesid: the run folder `outputs/<run>/` and the files in it (docs/RUN_FOLDER.md).

Both stages and every recipe read and write artifacts through this package, so each fact about a file (its place,
format, checks) is held once. It is built only on the standard library, numpy, pyarrow, safetensors and torch
tensors: importing it never imports `transformers`, `modeling_mmesid` or `tokenization` (docs/LAYERS.md).
"""

from .data_files import (
    ITEM_SCHEMA,
    SAMPLE_SCHEMA,
    TRAIN_SEQUENCE_SCHEMA,
    Splits,
    item_counts,
    leave_one_out,
    load_item_counts,
    load_item_table,
    load_split_table,
    load_stats,
    load_train_sequences,
    read_sequence_file,
    read_train_users,
    sequences_fingerprint,
)
from .io import (
    atomic_save_safetensors,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_parquet,
    atomic_write_text,
    read_json,
    require_file,
)
from .results import read_results, run_info, write_between_markers, write_results
from .run import MODALITIES, SPLITS, STAGES, Run
from .tables import (
    ItemTables,
    load_embeddings,
    load_item_tables,
    load_item_tables_from,
    load_modality_tables,
    load_semantic_ids,
    save_embeddings,
    save_semantic_ids,
    sidecar_path,
)


__all__ = [
    "ITEM_SCHEMA",
    "MODALITIES",
    "SAMPLE_SCHEMA",
    "SPLITS",
    "STAGES",
    "TRAIN_SEQUENCE_SCHEMA",
    "ItemTables",
    "Run",
    "Splits",
    "atomic_save_safetensors",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_parquet",
    "atomic_write_text",
    "item_counts",
    "leave_one_out",
    "load_embeddings",
    "load_item_counts",
    "load_item_table",
    "load_item_tables",
    "load_item_tables_from",
    "load_modality_tables",
    "load_semantic_ids",
    "load_split_table",
    "load_stats",
    "load_train_sequences",
    "read_json",
    "read_results",
    "read_sequence_file",
    "read_train_users",
    "require_file",
    "run_info",
    "save_embeddings",
    "save_semantic_ids",
    "sequences_fingerprint",
    "sidecar_path",
    "write_between_markers",
    "write_results",
]
