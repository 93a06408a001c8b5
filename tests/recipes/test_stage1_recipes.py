# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Stage-1 recipes end to end on a tiny run: encode_items (SASRec) → train_rqvae → assign_sids, then Stage 2's one
loader reads what they wrote (docs/RUN_FOLDER.md). Paths come from `mmesid_artifacts.Run`, as in the recipes."""

import importlib.util
import random

import pytest
import torch
from mmesid_testing import REPO

import mmesid_artifacts as art
from mmesid_artifacts import Run


def _load(name):
    spec = importlib.util.spec_from_file_location(f"mmesid_recipe_{name}", REPO / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def run(tmp_path, monkeypatch):
    from modeling_mmesid.data import write_dataset

    monkeypatch.chdir(tmp_path)  # nothing a recipe writes can land in the checkout
    rng = random.Random(0)
    sequences = {u: [rng.randint(1, 30) for _ in range(rng.randint(4, 8))] for u in range(1, 41)}
    sequences[1][-1] = 30  # the largest id occurs
    run = Run(tmp_path / "tiny")
    write_dataset(run.data, sequences)
    return run


def test_encode_train_assign_then_load(run):
    encode = _load("encode_items")
    encode.main(encode.EncodeItemsArguments(
        run_dir=str(run.root), modalities=["collaborative"], sasrec_hidden_size=8,
        sasrec_num_layers=1, sasrec_num_heads=1, sasrec_epochs=1, sasrec_batch_size=64, sasrec_max_length=8))
    stats = art.load_stats(run.data)
    assert (run.sasrec / "config.json").is_file() and run.results_file("sasrec").is_file()
    table, meta = art.load_embeddings(run.embedding_file("collaborative"), stats["num_items"], stats["fingerprint"])
    assert table.shape == (31, 8) and meta["sasrec_dir"] == "sasrec"
    g = torch.Generator().manual_seed(0)
    art.save_embeddings(run.embedding_file("text"), torch.randn(31, 6, generator=g), modality="text",
                        encoder="random", dataset_fingerprint=stats["fingerprint"])

    train = _load("train_rqvae")
    from tokenization.train_rqvae import MMRQVAETrainingArguments

    # Stage 1 in text-first order: the loader must still give the model its own order
    train.main(train.ScriptArguments(run_dir=str(run.root), modalities=["text", "collaborative"]),
               MMRQVAETrainingArguments(num_epochs=2, batch_size=16),
               train.ModelArguments(hidden_dims=[16], e_dim=8, num_levels=2, codebook_size=4, kmeans_iters=2))
    assert (run.rqvae / "model.safetensors").is_file() and run.results_file("rqvae").is_file()

    assign = _load("assign_sids")
    assign.main(assign.ScriptArguments(run_dir=str(run.root)))
    assert run.diagnostics_file.is_file() and (run.sids / "spectra.png").is_file()
    sids, _, meta = art.load_semantic_ids(run.sids, stats["num_items"], stats["fingerprint"])
    report = art.read_json(run.diagnostics_file)
    resolution = report["collision_resolution"]
    assert report["collision_rate"]["combined"] == 0 and resolution["enabled"]
    assert resolution["moved_items"] == len(resolution["changes"])
    # --no_resolve_collisions: the official IDs, whose rates are the "before" of the resolved run
    assign.main(assign.ScriptArguments(run_dir=str(run.root), output_dir=str(run.root / "sids-kept"),
                                       resolve_collisions=False))
    kept = art.read_json(run.root / "sids-kept" / run.diagnostics_file.name)
    assert kept["collision_rate"] == resolution["collision_rate_before"]
    kept_sids, _, _ = art.load_semantic_ids(run.root / "sids-kept")
    changed = (kept_sids != sids).flatten(1).any(1).nonzero().squeeze(1).tolist()
    assert changed == sorted(c["item"] for c in resolution["changes"])

    compare = _load("compare_sids")
    doc = run.root / "doc.md"
    doc.write_text("before\n<!-- ids:start -->\nold\n<!-- ids:end -->\nafter\n")
    table = compare.main(compare.CompareArguments(
        run_dir=str(run.root), sids_dirs=["sids", str(run.root / "sids-kept")], names=["resolved", "kept"],
        output=str(run.root / "cmp.json"), doc=str(doc), doc_block="ids"))
    rows = [line.split(" | ") for line in table.splitlines()[2:]]
    assert [(r[0].lstrip("| "), r[4]) for r in rows] == [
        ("resolved", "text"), ("resolved", "collaborative"), ("kept", "text"), ("kept", "collaborative")]
    before = resolution["collision_rate_before"]
    assert rows[0][-1].rstrip(" |") == f"0.0000 ({before['combined']:.4f})"
    assert rows[2][-1].rstrip(" |") == f"{before['combined']:.4f}"  # kept: no resolution, no "before"
    assert rows[1][8] == f"{report['collision_rate']['collaborative']:.4f}"
    assert rows[1][5] == f"{report['codebook']['collaborative']['utilization'][0]:.1%}"
    assert doc.read_text() == f"before\n<!-- ids:start -->\n{table}\n<!-- ids:end -->\nafter\n"
    assert art.read_json(run.root / "cmp.json")["runs"]["kept"]["sids_dir"].endswith("sids-kept")
    with pytest.raises(ValueError, match="--rqvae_dirs has 1 entries but --sids_dirs has 2"):
        compare.main(compare.CompareArguments(run_dir=str(run.root), sids_dirs=["sids", "sids-kept"], rqvae_dirs=["rqvae"]))
    assert meta["modalities"] == ["text", "collaborative"] and meta["dataset_fingerprint"] == stats["fingerprint"]

    tables = art.load_item_tables(run, ["collaborative", "text"])
    torch.testing.assert_close(tables.sids, sids[:, [1, 0]])
    assert tables.item_counts.sum() == sum(len(s) for s in art.load_train_sequences(run.data))

    evaluate = _load("evaluate")
    evaluate.main(evaluate.EvaluateArguments(run_dir=str(run.root), sasrec=str(run.sasrec)))
    results = art.read_results(run.results_file("eval"))  # default output: <run>/eval
    assert set(results["results"]) == {"popularity", "transition", "sasrec"}
