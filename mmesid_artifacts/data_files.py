# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""The `data/` stage: the split protocol, the one reader of sequence files, and the readers of `data/` files.

Split protocol (docs/METHOD.md, "Data and evaluation"): with `items` a user's time-ordered sequence, test target =
`items[-1]` (history `items[:-1]`), validation target = `items[-2]` (history `items[:-2]`), training prefix
`train = items[:-2]`; with `L = min(len(train), 50)`, each of the last `L` positions `t` of `train` is one training
sample, history `train[:t]` (not truncated, empty when `t = 0`) predicting `train[t]`. Users with fewer than 3 items
are kept for training only (all their items are the training prefix), as the official code does.

Writing `data/` (with the item table built from raw inputs) is `modeling_mmesid.data.write_dataset`'s job; what is
here is what every later stage reads, so that none of them imports the data-preparation code.
`KNOWN_SOURCES` records where the known raw input files come from and under what licence (the dataset card's
provenance rows).
"""

import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .io import read_json, require_file
from .run import DATA_FILES, SPLITS, Run, split_file


SAMPLE_SCHEMA = pa.schema([("user_id", pa.int64()), ("history", pa.list_(pa.int64())), ("target", pa.int64())])
# One row per user: the training prefix `items` and `start`, its first target position, so the user's training
# samples are `(items[:t], items[t])` for `t = start..len(items) - 1` (prefix-tree packing reads this file directly).
TRAIN_SEQUENCE_SCHEMA = pa.schema(
    [("user_id", pa.int64()), ("items", pa.list_(pa.int64())), ("start", pa.int64())]
)
ITEM_SCHEMA = pa.schema(
    [
        ("item_id", pa.int64()),
        ("title", pa.string()),
        ("brand", pa.string()),
        ("categories", pa.list_(pa.string())),
        ("image", pa.string()),
        ("train_count", pa.int64()),
    ]
)


def positive_int(token: str, path: Path, lineno: int, what: str) -> int:
    try:
        value = int(token)
    except ValueError:
        raise ValueError(f"{path}:{lineno}: {what} {token!r} is not an integer.") from None
    if value <= 0:
        raise ValueError(f"{path}:{lineno}: {what} {value} must be a positive (1-based) integer.")
    return value


def read_sequence_file(path: str | os.PathLike) -> dict[int, list[int]]:
    """Read `user item item ...` lines (1-based ids, oldest first) into `{user_id: items}`, in file order.

    Blank lines are skipped. A malformed line, a non-positive or non-integer id, or a user listed twice raises
    `ValueError` naming the file and line.
    """
    path = require_file(path, "Sequence file")
    sequences: dict[int, list[int]] = {}
    first_line: dict[int, int] = {}
    with path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            tokens = line.split()
            if not tokens:
                continue
            if len(tokens) < 2:
                raise ValueError(f"{path}:{lineno}: expected `user item [item ...]`, got {line.strip()!r}.")
            user = positive_int(tokens[0], path, lineno, "user id")
            if user in sequences:
                raise ValueError(
                    f"{path}:{lineno}: user {user} appears again (first on line {first_line[user]}); "
                    "each user must have exactly one line."
                )
            sequences[user] = [positive_int(tok, path, lineno, "item id") for tok in tokens[1:]]
            first_line[user] = lineno
    if not sequences:
        raise ValueError(f"{path}: no interactions found (empty file).")
    return sequences


@dataclass
class Splits:
    """Leave-one-out samples, as plain Python lists (converted to Arrow tables on write)."""

    train: list[tuple[int, list[int], int]]
    validation: list[tuple[int, list[int], int]]
    test: list[tuple[int, list[int], int]]
    train_sequences: list[tuple[int, list[int], int]]  # (user, training prefix, first target position)
    num_items: int
    num_interactions: int
    num_short_users: int

    def train_item_counts(self) -> np.ndarray:
        """`item_counts` of the training prefixes (`items.parquet`'s `train_count`)."""
        return item_counts((prefix for _, prefix, _ in self.train_sequences), self.num_items)


def first_train_target(prefix_length: int, max_train_samples_per_user: int) -> int:
    """First target position of a training prefix: its last `min(len, max_train_samples_per_user)` positions are
    targets (module docstring)."""
    return prefix_length - min(prefix_length, max_train_samples_per_user)


def leave_one_out(sequences: dict[int, list[int]], max_train_samples_per_user: int = 50) -> Splits:
    """Build the paper's leave-one-out splits (module docstring; docs/METHOD.md "Data and evaluation")."""
    if max_train_samples_per_user < 1:
        raise ValueError(f"`max_train_samples_per_user` must be at least 1, got {max_train_samples_per_user}.")
    train, validation, test, prefixes = [], [], [], []
    num_short = 0
    num_items = 0
    num_interactions = 0
    for user, items in sequences.items():
        num_items = max(num_items, max(items))
        num_interactions += len(items)
        if len(items) < 3:
            num_short += 1
            prefix = list(items)
        else:
            prefix = items[:-2]
            validation.append((user, list(items[:-2]), items[-2]))
            test.append((user, list(items[:-1]), items[-1]))
        start = first_train_target(len(prefix), max_train_samples_per_user)
        prefixes.append((user, prefix, start))
        for t in range(start, len(prefix)):
            train.append((user, prefix[:t], prefix[t]))
    return Splits(train, validation, test, prefixes, num_items, num_interactions, num_short)


def sequences_fingerprint(sequences: dict[int, list[int]]) -> str:
    """sha256 over the canonical text form of the sequences; `stats.json` and every later sidecar record it."""
    digest = hashlib.sha256()
    for user, items in sequences.items():
        digest.update(f"{user} {' '.join(map(str, items))}\n".encode())
    return digest.hexdigest()


def item_counts(sequences: Iterable[Sequence[int]], num_items: int) -> np.ndarray:
    """Interactions per item over `sequences` (the training prefixes), `[num_items + 1]` int64, row 0 = 0.

    The one definition of an item's training count: `items.parquet`'s `train_count`, the popularity baseline and
    the fusion weights' input all come from it.
    """
    counts = np.zeros(num_items + 1, dtype=np.int64)
    for seq in sequences:
        arr = np.asarray(seq, dtype=np.int64)
        if arr.size and (arr.min() < 1 or arr.max() > num_items):
            raise ValueError(f"Item ids must lie in 1..{num_items}; got ids {arr.min()}..{arr.max()}.")
        np.add.at(counts, arr, 1)
    return counts


# ----------------------------------------------------------------------------------------------------------------
# Readers of data/ (a stage folder or a dataset repo's root: the same file names)


def data_file(folder: str | os.PathLike, name: str) -> Path:
    return require_file(
        Path(folder) / name,
        "Data file",
        f"run `python recipes/prepare_data.py --run_dir {Run.of_stage(folder).root}` first",
    )


def load_split_table(folder: str | os.PathLike, split: str) -> pa.Table:
    """One split as an Arrow table (no `datasets` cache; what the evaluator reads)."""
    path = split_file(folder, split)
    return pq.read_table(data_file(folder, path.name))


def load_train_sequences(folder: str | os.PathLike) -> list[list[int]]:
    """Each user's training prefix (validation/test targets excluded), in user order."""
    return pq.read_table(data_file(folder, DATA_FILES["train_sequences"])).column("items").to_pylist()


def read_train_users(folder: str | os.PathLike) -> pa.Table:
    """`train_sequences.parquet` as one row per user with training samples: `user_id`, `items` (the training prefix)
    and `start` (first target position), in user order: the per-user rows of prefix-tree packing.

    A file written before `start` was a column gets it from `stats.json`'s `max_train_samples_per_user` (the rule
    that wrote `train.parquet`); without that field it cannot be known, and the error says to re-run the data stage.
    """
    path = data_file(folder, DATA_FILES["train_sequences"])
    table = pq.read_table(path)
    if "start" not in table.column_names:
        max_samples = load_stats(folder).get("max_train_samples_per_user")
        if max_samples is None:
            raise ValueError(
                f"{path} has no `start` column and `stats.json` no `max_train_samples_per_user`, so the first training "
                f"target of each user is unknown; re-run `python recipes/prepare_data.py --run_dir {Run.of_stage(folder).root}`."
            )
        lengths = pc.list_value_length(table.column("items")).to_pylist()
        starts = [first_train_target(n, int(max_samples)) for n in lengths]
        table = table.append_column("start", pa.array(starts, pa.int64()))
    table = table.select(TRAIN_SEQUENCE_SCHEMA.names).cast(TRAIN_SEQUENCE_SCHEMA)
    has_samples = pc.less(table.column("start"), pc.list_value_length(table.column("items")))
    return table.filter(has_samples)


def load_item_counts(folder: str | os.PathLike, num_items: int | None = None) -> np.ndarray:
    """Training-set interaction count per item from `items.parquet`, `[num_items + 1]` with row 0 = 0.

    With `num_items`, the table must cover exactly items 1..`num_items` (error naming the file otherwise).
    """
    path = data_file(folder, DATA_FILES["items"])
    table = pq.read_table(path, columns=["item_id", "train_count"])
    ids = table.column("item_id").to_numpy()
    if ids.size == 0 or ids.min() < 1:
        raise ValueError(f"{path}: `item_id` must hold the 1-based ids 1..num_items.")
    if num_items is not None and (ids.size != num_items or int(ids.max()) != num_items):
        raise ValueError(
            f"{path}: {ids.size} item rows up to id {int(ids.max())}, but the dataset has {num_items} items; the "
            "item table belongs to other data."
        )
    counts = np.zeros(int(ids.max()) + 1, dtype=np.int64)
    counts[ids] = table.column("train_count").to_numpy()
    return counts


def load_item_table(folder: str | os.PathLike, columns: Sequence[str] | None = None) -> pa.Table:
    """`items.parquet` (`ITEM_SCHEMA`): one row per item, `item_id` 1..num_items in order (what the demo app shows:
    titles, brands, training counts). `columns` selects some of `ITEM_SCHEMA`'s; `item_id` always comes first."""
    path = data_file(folder, DATA_FILES["items"])
    names = None if columns is None else ["item_id", *(c for c in columns if c != "item_id")]
    table = pq.read_table(path, columns=names)
    ids = table.column("item_id").to_numpy()
    if not np.array_equal(ids, np.arange(1, ids.size + 1)):
        raise ValueError(f"{path}: `item_id` must be 1..{ids.size} in order; re-run the data stage.")
    return table


# Where the known input files of a run come from (../shared/data/SOURCES.md). Keyed by the file name that
# `data/stats.json` records under `source`.
KNOWN_SOURCES = {
    "Beauty_new.txt": {
        "origin": "Applied-Machine-Learning-Lab/MME-SID @ bc95e1a : `dataset/Beauty_new.txt` (MME-SID's own Amazon "
        "Beauty: 22,332 users, 12,086 items, 198,215 interactions, every user with at least 5 items)",
        "license": "Apache-2.0 (the MME-SID repository); the interactions derive from the Amazon Review Data "
        "(McAuley et al., 2015), released for research use",
    },
    "Beauty.txt": {
        "origin": "RUCAIBox/CIKM2020-S3Rec @ 2a81540 : `data/Beauty.txt` (S3-Rec's Amazon Beauty)",
        "license": "none stated by the repository; the interactions derive from the Amazon Review Data "
        "(McAuley et al., 2015), released for research use",
    },
    "beauty_items.jsonl": {
        "origin": "titles, brands and categories joined by asin from S3-Rec (RUCAIBox/CIKM2020-S3Rec @ 2a81540), "
        "P5 datamaps (Wenyueh/LLM-RecSys-ID @ 2200ad9, MIT), TransRec (Linxyhaha/TransRec @ da14d53) and AtSpeed "
        "(Linxyhaha/AtSpeed @ 07b4227) maps",
        "license": "item metadata of the Amazon Review Data (McAuley et al., 2015), research use; the id maps are "
        "MIT (P5) or carry no stated licence (S3-Rec, TransRec, AtSpeed)",
    },
}


def load_stats(folder: str | os.PathLike) -> dict:
    return read_json(data_file(folder, DATA_FILES["stats"]), "Data statistics")


__all__ = [
    "ITEM_SCHEMA",
    "KNOWN_SOURCES",
    "SAMPLE_SCHEMA",
    "SPLITS",
    "TRAIN_SEQUENCE_SCHEMA",
    "Splits",
    "data_file",
    "first_train_target",
    "item_counts",
    "leave_one_out",
    "load_item_counts",
    "load_item_table",
    "load_split_table",
    "load_stats",
    "load_train_sequences",
    "positive_int",
    "read_sequence_file",
    "read_train_users",
    "sequences_fingerprint",
]
