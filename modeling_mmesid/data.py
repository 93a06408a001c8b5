# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Raw interactions + item table -> leave-one-out splits (paper §4.1; official MME-SID data loader).

Inputs this module reads:
- a sequence file (`user item item ...`, 1-based, time-ordered; MME-SID's `Beauty_new.txt`, S3-Rec's `Beauty.txt`);
- a user's own interactions (CSV or Parquet with user, item, timestamp columns), k-core filtered, time ordered;
- an item table (JSONL: id, title, brand, categories, optional image path/URL).

What it writes (see `docs/CONTRACTS.md`): `train/validation/test.parquet`, `train_sequences.parquet`,
`items.parquet`, `stats.json`. Every file is written atomically.

Split protocol (METHOD.md): with `items` a user's time-ordered sequence, test target = `items[-1]` (history
`items[:-1]`), validation target = `items[-2]` (history `items[:-2]`), training prefix `train = items[:-2]`; with
`L = min(len(train), 50)`, each of the last `L` positions `t` of `train` is one training sample, history
`train[:t]` (not truncated, empty when `t = 0`) predicting `train[t]`. Users with fewer than 3 items are kept for
training only (all their items are the training prefix), as the official code does.
"""

import csv
import hashlib
import json
import os
import tempfile
import urllib.request
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


SPLITS = ("train", "validation", "test")
SAMPLE_SCHEMA = pa.schema([("user_id", pa.int64()), ("history", pa.list_(pa.int64())), ("target", pa.int64())])
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


# ----------------------------------------------------------------------------------------------------------------
# Atomic writes


def _atomic_target(path: Path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600 files; artifacts are meant to be shared
    return Path(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder and `os.replace`."""
    tmp = _atomic_target(Path(path))
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> None:
    tmp = _atomic_target(Path(path))
    try:
        tmp.write_bytes(payload)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_save_safetensors(path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """`safetensors.torch.save_file` through a temporary file in the same folder and `os.replace`."""
    from safetensors.torch import save_file

    tmp = _atomic_target(Path(path))
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_parquet(path: str | os.PathLike, table: pa.Table) -> None:
    tmp = _atomic_target(Path(path))
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------------------------
# Readers


def _require_file(path: str | os.PathLike, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} `{path}` does not exist (or is not a file).")
    return path


def _positive_int(token: str, path: Path, lineno: int, what: str) -> int:
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
    path = _require_file(path, "Sequence file")
    sequences: dict[int, list[int]] = {}
    first_line: dict[int, int] = {}
    with path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            tokens = line.split()
            if not tokens:
                continue
            if len(tokens) < 2:
                raise ValueError(f"{path}:{lineno}: expected `user item [item ...]`, got {line.strip()!r}.")
            user = _positive_int(tokens[0], path, lineno, "user id")
            if user in sequences:
                raise ValueError(
                    f"{path}:{lineno}: user {user} appears again (first on line {first_line[user]}); "
                    "each user must have exactly one line."
                )
            sequences[user] = [_positive_int(tok, path, lineno, "item id") for tok in tokens[1:]]
            first_line[user] = lineno
    if not sequences:
        raise ValueError(f"{path}: no interactions found (empty file).")
    return sequences


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
    path = _require_file(path, "Interaction file")
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
    path = _require_file(path, "Item table")
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


@dataclass
class Splits:
    """Leave-one-out samples, as plain Python lists (converted to Arrow tables on write)."""

    train: list[tuple[int, list[int], int]]
    validation: list[tuple[int, list[int], int]]
    test: list[tuple[int, list[int], int]]
    train_sequences: list[tuple[int, list[int]]]
    num_items: int
    num_interactions: int
    num_short_users: int


def leave_one_out(sequences: dict[int, list[int]], max_train_samples_per_user: int = 50) -> Splits:
    """Build the paper's leave-one-out splits (module docstring; METHOD.md "Data and evaluation")."""
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
        prefixes.append((user, prefix))
        n = min(len(prefix), max_train_samples_per_user)
        for t in range(len(prefix) - n, len(prefix)):
            train.append((user, prefix[:t], prefix[t]))
    return Splits(train, validation, test, prefixes, num_items, num_interactions, num_short)


def sequences_fingerprint(sequences: dict[int, list[int]]) -> str:
    """sha256 over the canonical text form of the sequences; embedding sidecars record it."""
    digest = hashlib.sha256()
    for user, items in sequences.items():
        digest.update(f"{user} {' '.join(map(str, items))}\n".encode())
    return digest.hexdigest()


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
    counts = np.zeros(splits.num_items + 1, dtype=np.int64)
    for _, prefix in splits.train_sequences:
        np.add.at(counts, np.asarray(prefix, dtype=np.int64), 1)
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
    atomic_write_parquet(out / "train.parquet", _samples_table(splits.train))
    atomic_write_parquet(out / "validation.parquet", _samples_table(splits.validation))
    atomic_write_parquet(out / "test.parquet", _samples_table(splits.test))
    atomic_write_parquet(
        out / "train_sequences.parquet",
        pa.table(
            {
                "user_id": pa.array([u for u, _ in splits.train_sequences], pa.int64()),
                "items": pa.array([p for _, p in splits.train_sequences], pa.list_(pa.int64())),
            }
        ),
    )
    atomic_write_parquet(out / "items.parquet", item_table)
    atomic_write_json(out / "stats.json", stats)  # last: its presence marks a complete folder
    return stats


# ----------------------------------------------------------------------------------------------------------------
# Loaders for later stages


def _data_file(folder: str | os.PathLike, name: str) -> Path:
    path = Path(folder) / name
    if not path.is_file():
        raise FileNotFoundError(
            f"`{path}` does not exist; run `python recipes/prepare_data.py --output_dir {folder}` first."
        )
    return path


def load_splits(folder: str | os.PathLike):
    """The train/validation/test splits as a `datasets.DatasetDict` (Parquet-backed)."""
    from datasets import load_dataset

    files = {split: str(_data_file(folder, f"{split}.parquet")) for split in SPLITS}
    return load_dataset("parquet", data_files=files)


def load_split_table(folder: str | os.PathLike, split: str) -> pa.Table:
    """One split as an Arrow table (no `datasets` cache; what the evaluator reads)."""
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}, got {split!r}.")
    return pq.read_table(_data_file(folder, f"{split}.parquet"))


def load_train_sequences(folder: str | os.PathLike) -> list[list[int]]:
    """Each user's training prefix (validation/test targets excluded), in user order."""
    return pq.read_table(_data_file(folder, "train_sequences.parquet")).column("items").to_pylist()


def load_item_counts(folder: str | os.PathLike) -> np.ndarray:
    """Training-set interaction count per item, `[num_items + 1]` with row 0 = 0 (the fusion weights' input)."""
    table = pq.read_table(_data_file(folder, "items.parquet"), columns=["item_id", "train_count"])
    ids = table.column("item_id").to_numpy()
    counts = np.zeros(int(ids.max()) + 1, dtype=np.int64)
    counts[ids] = table.column("train_count").to_numpy()
    return counts


def load_stats(folder: str | os.PathLike) -> dict:
    return json.loads(_data_file(folder, "stats.json").read_text(encoding="utf-8"))


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
    tmp = _atomic_target(target)
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

    reviews_gz = _require_file(reviews_gz, "Reviews file")
    tmp = _atomic_target(Path(out_csv))
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

    meta_gz = _require_file(meta_gz, "Metadata file")
    wanted = set(asins)
    tmp = _atomic_target(Path(out_jsonl))
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
