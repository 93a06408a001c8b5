# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""The ground-floor artifacts layer (`mmesid_artifacts`, docs/RUN_FOLDER.md): round trips, the checks that refuse a
file made for other data (with the file named), atomic writes, the `Run` layout and the Stage-2 loader."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import mmesid_artifacts as art
from mmesid_artifacts import Run


SEQUENCES = {1: [1, 2, 3, 4], 2: [2, 3, 5], 3: [5, 1], 4: [4, 5, 1, 2, 3]}
NUM_ITEMS = 5


@pytest.fixture
def run(tmp_path):
    """A complete little run folder: data/ (the real writer), embeddings/ for two modalities, sids/."""
    from modeling_mmesid.data import write_dataset

    run = Run(tmp_path / "outputs" / "tiny")
    stats = write_dataset(run.data, SEQUENCES)
    g = torch.Generator().manual_seed(0)
    for modality, dim in (("collaborative", 4), ("text", 6)):
        art.save_embeddings(run.embedding_file(modality), torch.randn(NUM_ITEMS + 1, dim, generator=g),
                            modality=modality, encoder="random", dataset_fingerprint=stats["fingerprint"])
    # Stage 1 wrote the SID axis in its own order (text first); the model asks for collaborative first
    sids = torch.randint(0, 4, (NUM_ITEMS + 1, 2, 3), generator=g)
    sids[0] = 0
    books = {m: torch.randn(3, 4, 8, generator=g) for m in ("text", "collaborative")}
    art.save_semantic_ids(run.sids, sids, books, ["text", "collaborative"], stats["fingerprint"])
    return run


def test_run_knows_every_stage_folder(tmp_path):
    run = Run(tmp_path / "r")
    assert [run.stage(s) for s in art.STAGES] == [tmp_path / "r" / s for s in art.STAGES]
    assert run.sids_file == tmp_path / "r" / "sids" / "sids.safetensors"
    assert run.embedding_file("text") == tmp_path / "r" / "embeddings" / "text.safetensors"
    assert run.results_file("eval") == tmp_path / "r" / "eval" / "results.json"
    assert run.results_file("sasrec") == tmp_path / "r" / "embeddings" / "sasrec" / "results.json"
    assert Run.of_stage(tmp_path / "r" / "data") == run
    assert Run.named("beauty").root.as_posix() == "outputs/beauty"
    with pytest.raises(ValueError, match="Unknown stage 'weights'"):
        run.stage("weights")
    with pytest.raises(ValueError, match="`split` must be one of"):
        run.split_file("dev")


def test_one_modality_order():
    """Stage 1 follows the model's order; the Hub-side file keeps its own copy, which must agree."""
    from modeling_mmesid.configuration_mmesid import KNOWN_MODALITIES
    from tokenization.configuration_mmrqvae import MMRQVAEConfig

    assert art.MODALITIES == KNOWN_MODALITIES
    assert MMRQVAEConfig().modalities == list(KNOWN_MODALITIES)


def test_item_counts_one_definition(run):
    counts = art.item_counts(art.load_train_sequences(run.data), NUM_ITEMS)
    np.testing.assert_array_equal(art.load_item_counts(run.data), counts)
    np.testing.assert_array_equal(counts, [0, 3, 2, 0, 1, 2])  # training prefixes items[:-2]; user 3 trains on all
    from modeling_mmesid.baselines import PopularityScorer

    np.testing.assert_array_equal(PopularityScorer.fit(art.load_train_sequences(run.data), NUM_ITEMS).scores, counts)
    with pytest.raises(ValueError, match=r"Item ids must lie in 1\.\.5"):
        art.item_counts([[1, 6]], NUM_ITEMS)
    with pytest.raises(ValueError, match="items.parquet.*belongs to other data"):
        art.load_item_counts(run.data, NUM_ITEMS + 1)


def test_embeddings_round_trip_and_checks(run):
    stats = art.load_stats(run.data)
    table, meta = art.load_embeddings(run.embedding_file("text"), NUM_ITEMS, stats["fingerprint"])
    assert table.shape == (NUM_ITEMS + 1, 6) and table[0].abs().sum() == 0 and meta["modality"] == "text"
    assert meta["mask"].tolist() == [False] + [True] * NUM_ITEMS
    path = run.embedding_file("text")
    with pytest.raises(ValueError, match=f"{path}: 6 rows, but the dataset has 6 items"):
        art.load_embeddings(path, NUM_ITEMS + 1)
    with pytest.raises(ValueError, match=f"{path}: dataset fingerprint .* differs"):
        art.load_embeddings(path, NUM_ITEMS, "0" * 64)
    with pytest.raises(FileNotFoundError, match="image.safetensors not found; run `recipes/encode_items.py`"):
        art.load_embeddings(run.embedding_file("image"))


def test_semantic_ids_round_trip_and_checks(run):
    stats = art.load_stats(run.data)
    sids, books, meta = art.load_semantic_ids(run.sids, NUM_ITEMS, stats["fingerprint"])
    assert sids.shape == (NUM_ITEMS + 1, 2, 3) and sids.dtype == torch.long
    assert meta["modalities"] == ["text", "collaborative"] and list(books) == ["text", "collaborative"]
    assert books["text"].shape == (3, 4, 8)
    with pytest.raises(ValueError, match=f"{run.sids_file}: 6 rows, but the dataset has 7 items"):
        art.load_semantic_ids(run.sids, NUM_ITEMS + 2)
    with pytest.raises(ValueError, match=f"{run.sids_meta_file}: dataset fingerprint .* differs"):
        art.load_semantic_ids(run.sids, NUM_ITEMS, "f" * 64)
    meta["num_levels"] = 4  # sids.json now disagrees with the tensor
    run.sids_meta_file.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=f"{run.sids_file}: shape \\(6, 2, 3\\), but sids.json says"):
        art.load_semantic_ids(run.sids)
    run.codebooks_file.unlink()
    with pytest.raises(FileNotFoundError, match="codebooks.safetensors.*run `recipes/assign_sids.py` first"):
        art.load_semantic_ids(run.sids)


def test_load_item_tables_gives_the_models_order(run):
    tables = art.load_item_tables(run, ["collaborative", "text"])
    sids, books, _ = art.load_semantic_ids(run.sids)
    assert tables.modalities == ["collaborative", "text"] and list(tables.embeddings) == ["collaborative", "text"]
    torch.testing.assert_close(tables.sids[:, 0], sids[:, 1])  # collaborative was axis 1 in sids.safetensors
    torch.testing.assert_close(tables.sids[:, 1], sids[:, 0])
    torch.testing.assert_close(tables.codebooks["collaborative"], books["collaborative"])
    assert tables.item_counts.tolist() == [0, 3, 2, 0, 1, 2] and tables.item_counts.dtype == torch.long
    assert tables.processor_kwargs() == {"modalities": ["collaborative", "text"], "num_levels": 3,
                                         "codebook_size": 4, "num_items": NUM_ITEMS}
    assert art.load_item_tables(run).modalities == ["collaborative", "text"]  # default: MODALITIES order, present ones
    with pytest.raises(ValueError, match=r"sids.json: no semantic IDs for \['image'\]"):
        art.load_item_tables(run, ["collaborative", "image"])


def test_load_item_tables_refuses_tables_of_other_data(run):
    """Embeddings made for another dataset: the loader names the file instead of training on them."""
    art.save_embeddings(run.embedding_file("text"), torch.randn(NUM_ITEMS + 1, 6), modality="text",
                        encoder="random", dataset_fingerprint="another dataset")
    with pytest.raises(ValueError, match=f"{run.embedding_file('text')}: dataset fingerprint 'another dataset'"):
        art.load_item_tables(run, ["collaborative", "text"])
    assert art.load_item_tables(run, ["collaborative", "text"], check_fingerprint=False).num_items == NUM_ITEMS


@pytest.mark.parametrize("writer", ["parquet", "json", "safetensors"])
def test_atomic_write_keeps_the_old_file_on_failure(tmp_path, monkeypatch, writer):
    """A write that fails half-way, with bytes already in the file it writes (a full disk), leaves the old file as it
    was and no temporary file, and its own error comes through; so does a JSON value that cannot be written."""
    import pathlib

    import safetensors.torch

    path = tmp_path / f"artifact.{writer}"
    write = {
        "parquet": lambda v: art.atomic_write_parquet(path, pa.table({"a": [v]})),
        "json": lambda v: art.atomic_write_json(path, {"a": v}),
        "safetensors": lambda v: art.atomic_save_safetensors(path, {"a": torch.tensor([v])}),
    }[writer]
    read = {
        "parquet": lambda: pq.read_table(path).column("a").to_pylist()[0],
        "json": lambda: json.loads(path.read_text())["a"],
        "safetensors": lambda: safetensors.torch.load_file(path)["a"].item(),
    }[writer]
    write(1)
    write_text = pathlib.Path.write_text

    def half_written(target, *args, **kwargs):
        if writer == "json" and not str(target).startswith(str(tmp_path)):
            return write_text(target, *args, **kwargs)  # someone else's write_text
        pathlib.Path(target).write_bytes(b"PAR1 half a file")
        raise OSError(28, f"No space left on device (writing {writer})")

    with monkeypatch.context() as patch:
        if writer == "parquet":
            patch.setattr(pq, "write_table", lambda table, where, **kwargs: half_written(where))
        elif writer == "safetensors":
            patch.setattr(safetensors.torch, "save_file", lambda tensors, filename, **kwargs: half_written(filename))
        else:
            patch.setattr(pathlib.Path, "write_text", half_written)
        with pytest.raises(OSError, match=rf"No space left on device \(writing {writer}\)"):
            write(2)
    assert read() == 1
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left
    if writer == "json":
        with pytest.raises(TypeError, match="Object of type object is not JSON serializable"):
            art.atomic_write_json(path, {"a": object()})
        assert read() == 1 and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_read_json_names_the_file(tmp_path):
    bad = tmp_path / "stats.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=f"`{bad}` is not valid JSON"):
        art.read_json(bad)
    with pytest.raises(FileNotFoundError, match="run `python recipes/prepare_data.py"):
        art.load_stats(tmp_path / "nowhere")


def test_results_round_trip(tmp_path):
    info = art.run_info(1.234, {"seed": 0})
    assert info["wall_time_s"] == 1.23 and info["config"] == {"seed": 0} and "torch" in info["meta_info"]
    art.write_results(tmp_path / "eval" / "results.json", {"pop": {"ndcg@5": 0.1}}, "test: ...", run_info=info)
    out = art.read_results(tmp_path / "eval" / "results.json")
    assert out["results"] == {"pop": {"ndcg@5": 0.1}} and out["protocol"] == "test: ..." and out["run_info"] == info
