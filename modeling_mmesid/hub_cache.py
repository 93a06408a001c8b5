# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Hub-cache placement: lay a repo folder out as `huggingface_hub` caches a download, to load it by repo id offline.

`place_in_hub_cache` writes `models--org--name/{blobs,refs/main,snapshots/<revision>}` (tests, air-gapped machines);
`prepare_dataset_cache` prepares a dataset repo's default config in the `datasets` cache, which is what offline
`load_dataset(repo_id)` reads. Publishing itself is `hub.py`.
"""

import hashlib
import os
import re
import shutil
from pathlib import Path


def _blob_hash(path: Path) -> str:
    """The blob name `huggingface_hub` uses: sha256 for LFS files (binaries), the git blob sha1 for the others."""
    if path.suffix.lower() in {".safetensors", ".parquet", ".bin", ".gguf", ".arrow"} or path.stat().st_size > 10 << 20:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def place_in_hub_cache(
    folder: str | os.PathLike,
    repo_id: str,
    repo_type: str = "model",
    cache_dir: str | os.PathLike | None = None,
    revision: str | None = None,
    prepare_datasets_cache: bool = True,
    datasets_cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Put a repo folder into a Hub cache as if `snapshot_download(repo_id)` had fetched it.

    Layout (`huggingface_hub` cache): `<cache>/<type>s--<org>--<name>/blobs/<hash>`, `refs/main` holding the revision,
    `snapshots/<revision>/<path>` -> `../../blobs/<hash>` (relative symlinks; copies where symlinks are not allowed).
    With `HF_HUB_OFFLINE=1` and `HF_HUB_CACHE=<cache>`, `from_pretrained(repo_id)`, `hf_hub_download` and
    `snapshot_download` then resolve `repo_id` from the cache; useful to carry a model to a machine without internet.

    Args:
        folder: the repo folder (e.g. `outputs/<run>/hub/model`).
        repo_id (`str`): `namespace/name`.
        repo_type (`str`, *optional*, defaults to `"model"`): `"model"`, `"dataset"` or `"space"`.
        cache_dir (*optional*): defaults to `huggingface_hub.constants.HF_HUB_CACHE` (`$HF_HUB_CACHE`).
        revision (`str`, *optional*): 40-hex commit id; defaults to a hash of the folder's contents.
        prepare_datasets_cache (`bool`, *optional*, defaults to `True`):
            For a dataset, also prepare its default config in the `datasets` cache (`prepare_dataset_cache`):
            offline, `load_dataset(repo_id)` reads only that cache, never the Hub cache.
        datasets_cache_dir (*optional*): defaults to `datasets.config.HF_DATASETS_CACHE` (`$HF_DATASETS_CACHE`,
            `$HF_HOME/datasets`).

    Returns:
        The snapshot folder.
    """
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"`{folder}` is not a folder.")
    if repo_type not in ("model", "dataset", "space"):
        raise ValueError(f"`repo_type` must be 'model', 'dataset' or 'space', got {repo_type!r}.")
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    hashes = {p: _blob_hash(p) for p in files}
    if revision is None:
        listing = "".join(f"{p.relative_to(folder).as_posix()}\0{h}\n" for p, h in hashes.items())
        revision = hashlib.sha1(listing.encode()).hexdigest()
    if not re.fullmatch(r"[0-9a-f]{40}", revision):
        raise ValueError(f"`revision` must be a 40-hex commit id, got {revision!r}.")
    repo_dir = Path(cache_dir or constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type=repo_type)
    snapshot = repo_dir / "snapshots" / revision
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    for path, digest in hashes.items():
        blob = repo_dir / "blobs" / digest
        if not blob.exists():
            shutil.copyfile(path, blob)
        target = snapshot / path.relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() or target.is_symlink():
            target.unlink()
        try:
            target.symlink_to(os.path.relpath(blob, target.parent))
        except OSError:  # no symlinks (Windows without developer mode): huggingface_hub copies too
            shutil.copyfile(blob, target)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(revision)
    if repo_type == "dataset" and prepare_datasets_cache:
        prepare_dataset_cache(snapshot, repo_id, datasets_cache_dir)
    return snapshot


def prepare_dataset_cache(
    folder: str | os.PathLike, repo_id: str, datasets_cache_dir: str | os.PathLike | None = None,
    config_name: str = "default",
) -> Path:
    """Prepare one config of a dataset repo folder in the `datasets` cache, as a first online `load_dataset(repo_id)`
    would, so that `load_dataset(repo_id)` works offline.

    Why: in offline mode `datasets` never reads the Hub cache; it reloads a prepared copy from its own cache
    (`<HF_DATASETS_CACHE>/<namespace>___<name>/<config>/<version>/<hash>/`). Only one config is prepared: with
    several, `load_dataset(repo_id)` without a config name refuses to choose. The builder comes from the folder's
    card (`configs:`), so this also checks that the card's YAML finds the splits.
    """
    import tempfile

    import datasets
    from datasets import load_dataset_builder
    from datasets.naming import camelcase_to_snakecase

    namespace, name = repo_id.split("/")
    cache_root = Path(datasets_cache_dir or datasets.config.HF_DATASETS_CACHE)
    with tempfile.TemporaryDirectory() as tmp:
        # The builder names its cache folder and Arrow files after the source folder: give it the repo's name.
        link = Path(tmp) / "src" / name
        link.parent.mkdir()
        link.symlink_to(Path(folder).resolve(), target_is_directory=True)
        builder = load_dataset_builder(str(link), config_name, cache_dir=os.path.join(tmp, "cache"))
        builder.download_and_prepare()
        built = Path(tmp) / "cache" / camelcase_to_snakecase(name) / config_name
        target = cache_root / f"{namespace}___{camelcase_to_snakecase(name)}" / config_name
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(built), str(target))
    return target


__all__ = ["place_in_hub_cache", "prepare_dataset_cache"]
