# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Raw interactions + item table -> leave-one-out splits (paper §4.1; official MME-SID data loader).

Inputs this module reads:
- a sequence file (`user item item ...`, 1-based, time-ordered; MME-SID's `Beauty_new.txt`, S3-Rec's `Beauty.txt`);
- a user's own interactions (CSV or Parquet with user, item, timestamp columns), k-core filtered, time ordered;
- an item table (JSONL: id, title, brand, categories, optional image path/URL).

What it writes (see `docs/CONTRACTS.md`): `train/validation/test.parquet`, `train_sequences.parquet`,
`items.parquet`, `stats.json`. Every file is written atomically.

The split protocol (`leave_one_out`), the reader of sequence files and the readers of `data/` files live in the
ground-floor `mmesid_artifacts` package (docs/LAYERS.md), so that Stage 1 and the recipes read them without importing
this package (whose `__init__` imports transformers).
"""

import csv
import hashlib
import json
import os
import urllib.request
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from mmesid_artifacts.data_files import (
    ITEM_SCHEMA,
    SAMPLE_SCHEMA,
    TRAIN_SEQUENCE_SCHEMA,
    leave_one_out,
    read_train_users,
    sequences_fingerprint,
)
from mmesid_artifacts.data_files import data_file as _data_file
from mmesid_artifacts.data_files import positive_int as _positive_int
from mmesid_artifacts.io import atomic_target, atomic_write_json, atomic_write_parquet, require_file
from mmesid_artifacts.run import DATA_FILES, SPLITS, split_file


# ----------------------------------------------------------------------------------------------------------------
# Readers


def _read_table(path: Path):
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        return {name: table.column(name).to_pylist() for name in table.column_names}
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{path}: no rows found.")
    return {name: [row[name] for row in rows] for name in rows[0]}


def read_interactions(
    path: str | os.PathLike,
    user_col: str = "user",
    item_col: str = "item",
    time_col: str = "timestamp",
    k_core: int = 5,
) -> tuple[dict[int, list[int]], dict[str, int]]:
    """Read a user's own interactions (CSV or Parquet of user, item, timestamp) into sequences.

    Users and items are k-core filtered (repeatedly, until every user and every item has at least `k_core`
    interactions), each user's items are sorted by timestamp (stable: ties keep file order), and raw item ids are
    renumbered 1..N by first appearance in that order. Returns `(sequences, item_index)` with `item_index` mapping
    raw item ids to the new ids.
    """
    path = require_file(path, "Interaction file")
    if path.suffix not in {".csv", ".parquet"}:
        raise ValueError(f"`{path}`: interaction files must be .csv or .parquet, got {path.suffix!r}.")
    if k_core < 1:
        raise ValueError(f"`k_core` must be at least 1, got {k_core}.")
    columns = _read_table(path)
    for name in (user_col, item_col, time_col):
        if name not in columns:
            raise ValueError(f"{path}: missing column {name!r}; found {sorted(columns)}.")
    events = []
    for row, (user, item, stamp) in enumerate(zip(columns[user_col], columns[item_col], columns[time_col])):
        if user in (None, "") or item in (None, ""):
            raise ValueError(f"{path}: row {row + 1} (1-based, header excluded) has an empty user or item.")
        try:
            stamp = float(stamp)
        except (TypeError, ValueError):
            raise ValueError(f"{path}: row {row + 1}: timestamp {stamp!r} is not a number.") from None
        events.append((str(user), str(item), stamp, row))
    # k-core filtering, to a fixed point (the standard Amazon 5-core definition)
    while True:
        user_counts = Counter(e[0] for e in events)
        item_counts = Counter(e[1] for e in events)
        kept = [e for e in events if user_counts[e[0]] >= k_core and item_counts[e[1]] >= k_core]
        if len(kept) == len(events):
            break
        events = kept
    if not events:
        raise ValueError(f"{path}: no interactions survive {k_core}-core filtering.")
    by_user: dict[str, list[tuple[float, int, str]]] = {}
    for user, item, stamp, row in events:
        by_user.setdefault(user, []).append((stamp, row, item))
    item_index: dict[str, int] = {}
    sequences: dict[int, list[int]] = {}
    for new_user, user in enumerate(by_user, start=1):
        ordered = [item for _, _, item in sorted(by_user[user])]
        for item in ordered:
            item_index.setdefault(item, len(item_index) + 1)
        sequences[new_user] = [item_index[item] for item in ordered]
    return sequences, item_index


@dataclass
class ItemRecord:
    title: str | None = None
    brand: str | None = None
    categories: list[str] = field(default_factory=list)
    image: str | None = None


def _flatten_categories(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    out: list[str] = []
    for entry in value:
        for name in _flatten_categories(entry) if not isinstance(entry, str) else [entry]:
            if name not in out:
                out.append(name)
    return out


def read_item_table(
    path: str | os.PathLike,
    num_items: int,
    id_field: str = "id",
    item_index: dict[str, int] | None = None,
) -> dict[int, ItemRecord]:
    """Read a JSONL item table (`id`, `title`, `brand`, `categories`, optional `image`) for items 1..`num_items`.

    `id_field` names the id key (`mme_id` for `beauty_items.jsonl`; rows whose id is null there are items MME-SID
    removed and are skipped). With `item_index` (from `read_interactions`), ids are raw ids mapped to new ids and
    rows for items dropped by k-core filtering are skipped. Unknown ids, duplicates and malformed lines raise
    `ValueError` naming the file and line.
    """
    path = require_file(path, "Item table")
    records: dict[int, ItemRecord] = {}
    with path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({err.msg}).") from None
            if not isinstance(row, dict) or id_field not in row:
                raise ValueError(f"{path}:{lineno}: expected a JSON object with an {id_field!r} field.")
            raw = row[id_field]
            if raw is None:
                continue
            if item_index is not None:
                if str(raw) not in item_index:
                    continue
                item = item_index[str(raw)]
            else:
                if isinstance(raw, bool) or not isinstance(raw, int | str):
                    raise ValueError(f"{path}:{lineno}: {id_field} {raw!r} is not an integer.")
                item = _positive_int(str(raw), path, lineno, id_field)
                if item > num_items:
                    raise ValueError(
                        f"{path}:{lineno}: metadata for unknown item {item}; the interactions have items "
                        f"1..{num_items}."
                    )
            if item in records:
                raise ValueError(f"{path}:{lineno}: item {item} is listed twice.")
            records[item] = ItemRecord(
                title=row.get("title") or None,
                brand=row.get("brand") or None,
                categories=_flatten_categories(row.get("categories")),
                image=row.get("image") or row.get("image_url") or row.get("imUrl") or None,
            )
    return records


# ----------------------------------------------------------------------------------------------------------------
# Splits


def _samples_table(rows: Sequence[tuple[int, list[int], int]]) -> pa.Table:
    return pa.table(
        {
            "user_id": pa.array([r[0] for r in rows], pa.int64()),
            "history": pa.array([r[1] for r in rows], pa.list_(pa.int64())),
            "target": pa.array([r[2] for r in rows], pa.int64()),
        },
        schema=SAMPLE_SCHEMA,
    )


def write_dataset(
    out_dir: str | os.PathLike,
    sequences: dict[int, list[int]],
    items: dict[int, ItemRecord] | None = None,
    source: dict | None = None,
    max_train_samples_per_user: int = 50,
) -> dict:
    """Write the splits, item table and `stats.json` to `out_dir` (atomically, file by file); return the stats."""
    out = Path(out_dir)
    splits = leave_one_out(sequences, max_train_samples_per_user)
    counts = splits.train_item_counts()
    items = items or {}
    ids = list(range(1, splits.num_items + 1))
    rec = [items.get(i, ItemRecord()) for i in ids]
    item_table = pa.table(
        {
            "item_id": pa.array(ids, pa.int64()),
            "title": pa.array([r.title for r in rec], pa.string()),
            "brand": pa.array([r.brand for r in rec], pa.string()),
            "categories": pa.array([r.categories for r in rec], pa.list_(pa.string())),
            "image": pa.array([r.image for r in rec], pa.string()),
            "train_count": pa.array(counts[1:], pa.int64()),
        },
        schema=ITEM_SCHEMA,
    )
    stats = {
        "num_users": len(sequences),
        "num_items": splits.num_items,
        "num_interactions": splits.num_interactions,
        "num_train_samples": len(splits.train),
        "num_validation": len(splits.validation),
        "num_test": len(splits.test),
        "num_short_users": splits.num_short_users,
        "num_empty_history_samples": sum(1 for _, h, _ in splits.train if not h),
        "num_items_with_title": sum(1 for r in rec if r.title),
        "num_items_with_image": sum(1 for r in rec if r.image),
        "max_train_samples_per_user": max_train_samples_per_user,
        "protocol": "leave-one-out: test = last item, validation = second to last, training = last "
        f"min(len, {max_train_samples_per_user}) positions of items[:-2]; users with < 3 items train only",
        "fingerprint": sequences_fingerprint(sequences),
        "source": source or {},
    }
    out.mkdir(parents=True, exist_ok=True)
    for split, rows in zip(SPLITS, (splits.train, splits.validation, splits.test)):
        atomic_write_parquet(split_file(out, split), _samples_table(rows))
    atomic_write_parquet(
        out / DATA_FILES["train_sequences"],
        pa.table(
            {
                "user_id": pa.array([u for u, _, _ in splits.train_sequences], pa.int64()),
                "items": pa.array([p for _, p, _ in splits.train_sequences], pa.list_(pa.int64())),
                "start": pa.array([t for _, _, t in splits.train_sequences], pa.int64()),
            },
            schema=TRAIN_SEQUENCE_SCHEMA,
        ),
    )
    atomic_write_parquet(out / DATA_FILES["items"], item_table)
    atomic_write_json(out / DATA_FILES["stats"], stats)  # last: its presence marks a complete folder
    return stats


# ----------------------------------------------------------------------------------------------------------------
# Loaders for later stages (the `datasets` view; the Arrow readers are `mmesid_artifacts.data_files`')


def load_splits(folder: str | os.PathLike):
    """The train/validation/test splits as a `datasets.DatasetDict` (Parquet-backed)."""
    from datasets import load_dataset

    files = {split: str(_data_file(folder, split_file(folder, split).name)) for split in SPLITS}
    return load_dataset("parquet", data_files=files)


def load_train_users(folder: str | os.PathLike):
    """One training row per user, `user_id, items, start` (`mmesid_artifacts.read_train_users` of
    `train_sequences.parquet`), as a `datasets.Dataset`: the rows prefix-tree packing trains on
    (`MMESIDPackedCollator`), read as written instead of regrouped from `train.parquet`."""
    from datasets import Dataset

    return Dataset(read_train_users(folder))


# ----------------------------------------------------------------------------------------------------------------
# Downloads (online users)

# The public Amazon 2014 files (McAuley et al.). `sha256` is None where no checksum could be verified on an offline
# machine: the first download records the digest in `<cache>/checksums.json` and later downloads must match it
# (trust on first use); pass `sha256=` to pin it.
AMAZON_2014 = {
    "beauty": {
        "reviews": "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/reviews_Beauty_5.json.gz",
        "meta": "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/meta_Beauty.json.gz",
    },
    "toys": {
        "reviews": "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/reviews_Toys_and_Games_5.json.gz",
        "meta": "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/meta_Toys_and_Games.json.gz",
    },
    "sports": {
        "reviews": "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/"
        "reviews_Sports_and_Outdoors_5.json.gz",
        "meta": "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/meta_Sports_and_Outdoors.json.gz",
    },
}


def download(url: str, cache_dir: str | os.PathLike, sha256: str | None = None, timeout: float = 60.0) -> Path:
    """Download `url` into `cache_dir` (atomically) and check its sha256.

    With `sha256=None`, the digest recorded in `cache_dir/checksums.json` by an earlier download is used, or the
    new digest is recorded there. A mismatch raises `ValueError` and leaves no file behind.
    """
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    name = url.rstrip("/").rsplit("/", 1)[-1]
    target = cache / name
    ledger_path = cache / "checksums.json"
    ledger = json.loads(ledger_path.read_text()) if ledger_path.is_file() else {}
    expected = sha256 or ledger.get(name)

    def digest_of(path: Path) -> str:
        h = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()

    if target.is_file() and (expected is None or digest_of(target) == expected):
        if expected is None:
            ledger[name] = digest_of(target)
            atomic_write_json(ledger_path, ledger)
        return target
    tmp = atomic_target(target)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, tmp.open("wb") as handle:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                handle.write(chunk)
        got = digest_of(tmp)
        if expected is not None and got != expected:
            raise ValueError(f"Checksum mismatch for {url}: expected sha256 {expected}, got {got}; file discarded.")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    ledger[name] = got
    atomic_write_json(ledger_path, ledger)
    return target


def amazon_reviews_to_csv(reviews_gz: str | os.PathLike, out_csv: str | os.PathLike) -> Path:
    """Convert an Amazon 2014 `reviews_*_5.json.gz` (one JSON object a line) into `user,item,timestamp` CSV."""
    import gzip

    reviews_gz = require_file(reviews_gz, "Reviews file")
    tmp = atomic_target(Path(out_csv))
    try:
        with gzip.open(reviews_gz, "rt", encoding="utf-8") as src, tmp.open("w", newline="") as dst:
            writer = csv.writer(dst)
            writer.writerow(["user", "item", "timestamp"])
            for lineno, line in enumerate(src, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    writer.writerow([row["reviewerID"], row["asin"], row["unixReviewTime"]])
                except (json.JSONDecodeError, KeyError) as err:
                    raise ValueError(f"{reviews_gz}:{lineno}: not a review record ({err}).") from None
        os.replace(tmp, out_csv)
    finally:
        tmp.unlink(missing_ok=True)
    return Path(out_csv)


def amazon_meta_to_jsonl(meta_gz: str | os.PathLike, out_jsonl: str | os.PathLike, asins: Iterable[str]) -> Path:
    """Convert Amazon 2014 `meta_*.json.gz` into our item-table JSONL (id = asin) for the given asins.

    The 2014 metadata files are Python literals, not JSON; they are parsed with `ast.literal_eval` (safe: literals
    only, never code).
    """
    import ast
    import gzip

    meta_gz = require_file(meta_gz, "Metadata file")
    wanted = set(asins)
    tmp = atomic_target(Path(out_jsonl))
    try:
        with gzip.open(meta_gz, "rt", encoding="utf-8") as src, tmp.open("w", encoding="utf-8") as dst:
            for lineno, line in enumerate(src, start=1):
                if not line.strip():
                    continue
                try:
                    row = ast.literal_eval(line)
                except (ValueError, SyntaxError):
                    raise ValueError(f"{meta_gz}:{lineno}: not a metadata record.") from None
                if row.get("asin") not in wanted:
                    continue
                record = {
                    "id": row["asin"],
                    "title": row.get("title"),
                    "brand": row.get("brand"),
                    "categories": row.get("categories", []),
                    "image": row.get("imUrl"),
                }
                dst.write(json.dumps(record) + "\n")
        os.replace(tmp, out_jsonl)
    finally:
        tmp.unlink(missing_ok=True)
    return Path(out_jsonl)


__all__ = [
    "AMAZON_2014",
    "ItemRecord",
    "amazon_meta_to_jsonl",
    "amazon_reviews_to_csv",
    "download",
    "load_splits",
    "read_interactions",
    "read_item_table",
    "write_dataset",
]
