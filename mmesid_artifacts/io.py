# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Atomic writes and checked reads of the files in a run folder (docs/RUN_FOLDER.md).

Every artifact is written to a temporary file in its own folder and moved into place with `os.replace`, so a reader
sees the old file or the new one, never half of one; a failed write leaves the old file as it was.
"""

import json
import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def atomic_target(path: str | os.PathLike) -> Path:
    """A fresh temporary file next to `path` (its folder created), for a write that ends with `os.replace`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600 files; artifacts are meant to be shared
    return Path(tmp)


def _atomic(path: str | os.PathLike, write) -> None:
    tmp = atomic_target(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder and `os.replace`."""
    _atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> None:
    _atomic(path, lambda tmp: tmp.write_bytes(payload))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_save_safetensors(path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """`safetensors.torch.save_file` through a temporary file in the same folder and `os.replace`."""
    from safetensors.torch import save_file

    _atomic(path, lambda tmp: save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=metadata))


def atomic_write_parquet(path: str | os.PathLike, table: pa.Table) -> None:
    _atomic(path, lambda tmp: pq.write_table(table, tmp))


def require_file(path: str | os.PathLike, what: str, hint: str = "") -> Path:
    """`path` as a `Path`, or `FileNotFoundError` naming it (and `hint`, e.g. which recipe writes it)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} `{path}` does not exist (or is not a file){'; ' + hint if hint else ''}.")
    return path


def safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The `__metadata__` of a safetensors file's header, read without loading any tensor."""
    with Path(path).open("rb") as f:
        size = int.from_bytes(f.read(8), "little")
        return json.loads(f.read(size)).get("__metadata__", {})


def parquet_strings(path: str | os.PathLike) -> str:
    """Every string of a Parquet file, one per line: its schema metadata (as JSON) and the values of its string
    columns, lists of strings included (what a scan for leaked paths or tokens must read)."""
    table = pq.read_table(path)
    parts = [json.dumps({k.decode(errors="replace"): v.decode(errors="replace")
                         for k, v in (table.schema.metadata or {}).items()})]
    for column, field in zip(table.columns, table.schema):
        kind = field.type
        while pa.types.is_list(kind) or pa.types.is_large_list(kind):
            column, kind = column.combine_chunks().flatten(), kind.value_type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            parts.extend(v for v in column.to_pylist() if v)
    return "\n".join(parts)


def read_json(path: str | os.PathLike, what: str = "JSON file", hint: str = "") -> dict:
    """A JSON file's content; a missing file or invalid JSON raises an error naming the file."""
    path = require_file(path, what, hint)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"`{path}` is not valid JSON (line {err.lineno}: {err.msg}).") from None


__all__ = [
    "atomic_save_safetensors",
    "atomic_target",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_parquet",
    "atomic_write_text",
    "parquet_strings",
    "read_json",
    "require_file",
    "safetensors_metadata",
]
