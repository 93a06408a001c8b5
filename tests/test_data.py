# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
import gzip
import http.server
import json
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mmesid_testing import BEAUTY_NEW, FIXTURES, SHARED_DATA, requires_shared_data

import mmesid_artifacts as art
from modeling_mmesid import data


def _rows(table):
    return list(zip(table.column("user_id").to_pylist(), table.column("history").to_pylist(),
                    table.column("target").to_pylist()))


def test_leave_one_out_by_hand(tiny_sequences_file, tmp_path):
    stats = data.write_dataset(tmp_path / "out", art.read_sequence_file(tiny_sequences_file))
    out = tmp_path / "out"
    assert _rows(art.load_split_table(out, "validation")) == [(1, [1, 2, 3], 4), (2, [2], 3), (4, [1, 2, 3, 4, 5], 6)]
    assert _rows(art.load_split_table(out, "test")) == [(1, [1, 2, 3, 4], 5), (2, [2, 3], 6), (4, [1, 2, 3, 4, 5, 6], 2)]
    assert _rows(art.load_split_table(out, "train")) == [
        (1, [], 1), (1, [1], 2), (1, [1, 2], 3),
        (2, [], 2),
        (3, [], 4), (3, [4], 1),  # fewer than 3 items: training only, every item
        (4, [], 1), (4, [1], 2), (4, [1, 2], 3), (4, [1, 2, 3], 4), (4, [1, 2, 3, 4], 5),
    ]
    assert art.load_train_sequences(out) == [[1, 2, 3], [2], [4, 1], [1, 2, 3, 4, 5]]
    assert art.read_train_users(out).to_pydict()["start"] == [0, 0, 0, 0]  # every position is a target here
    assert art.load_item_counts(out).tolist() == [0, 3, 3, 2, 2, 1, 0]  # training prefixes only: 6 never trained
    assert stats["num_users"] == 4 and stats["num_items"] == 6 and stats["num_interactions"] == 17
    assert stats["num_train_samples"] == 11 and stats["num_short_users"] == 1
    assert stats["num_validation"] == 3 and stats["num_empty_history_samples"] == 4
    assert json.loads((out / "stats.json").read_text()) == stats
    ds = data.load_splits(out)
    assert {k: v.num_rows for k, v in ds.items()} == {"train": 11, "validation": 3, "test": 3}


def test_train_samples_capped_at_last_positions(tiny_sequences_file, tmp_path):
    data.write_dataset(tmp_path, art.read_sequence_file(tiny_sequences_file), max_train_samples_per_user=2)
    rows = [r for r in _rows(art.load_split_table(tmp_path, "train")) if r[0] == 4]
    assert rows == [(4, [1, 2, 3], 4), (4, [1, 2, 3, 4], 5)]  # histories are not truncated


def test_item_table(tiny_sequences_file, tmp_path):
    seqs = art.read_sequence_file(tiny_sequences_file)
    items = data.read_item_table(FIXTURES / "tiny_items.jsonl", 6)
    data.write_dataset(tmp_path, seqs, items)
    table = pq.read_table(tmp_path / "items.parquet").to_pylist()
    assert table[1] == {"item_id": 2, "title": "Blue nail polish", "brand": None,
                        "categories": ["Beauty", "Makeup", "Nails"], "image": "img/2.png", "train_count": 3}
    assert table[4]["categories"] == ["Beauty", "Skin Care", "Face"]


@pytest.mark.parametrize(
    "content, message",
    [
        ("1 1 2 3\n2\n", r"seq.txt:2: expected `user item"),
        ("1 1 2 x\n", r"seq.txt:1: item id 'x' is not an integer"),
        ("1 1 0 3\n", r"seq.txt:1: item id 0 must be a positive"),
        ("-1 1 2 3\n", r"seq.txt:1: user id -1 must be a positive"),
        ("1 1 2 3\n2 4 5 6\n1 7 8 9\n", r"seq.txt:3: user 1 appears again \(first on line 1\)"),
        ("\n\n", r"seq.txt: no interactions"),
    ],
)
def test_bad_sequence_files(tmp_path, content, message):
    path = tmp_path / "seq.txt"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        art.read_sequence_file(path)


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        art.read_sequence_file(tmp_path / "nope.txt")
    with pytest.raises(FileNotFoundError, match="prepare_data.py"):
        art.load_stats(tmp_path)


@pytest.mark.parametrize(
    "rows, message",
    [
        ([{"id": 9, "title": "x"}], r"items.jsonl:1: metadata for unknown item 9"),
        ([{"id": 1}, {"id": 1}], r"items.jsonl:2: item 1 is listed twice"),
        ([{"title": "no id"}], r"items.jsonl:1: expected a JSON object with an 'id' field"),
        ([{"id": "abc"}], r"items.jsonl:1: id 'abc' is not an integer"),
    ],
)
def test_bad_item_tables(tmp_path, rows, message):
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match=message):
        data.read_item_table(path, 6)


def test_item_table_malformed_json(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text('{"id": 1}\n{"id": 2,\n')
    with pytest.raises(ValueError, match=r"items.jsonl:2: not valid JSON"):
        data.read_item_table(path, 6)


def test_interactions_kcore_time_order_and_parquet(tmp_path):
    # user u3 and item z fall below 2-core; items are renumbered by first appearance after time ordering
    rows = [("u1", "b", 20), ("u1", "a", 10), ("u1", "c", 30), ("u2", "a", 5), ("u2", "c", 1), ("u2", "b", 9),
            ("u3", "z", 1), ("u3", "a", 2)]
    csv_path = tmp_path / "inter.csv"
    csv_path.write_text("user,item,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in rows))
    seqs, index = data.read_interactions(csv_path, k_core=2)
    assert seqs == {1: [1, 2, 3], 2: [3, 1, 2]} and index == {"a": 1, "b": 2, "c": 3}
    pq_path = tmp_path / "inter.parquet"
    pq.write_table(pa.table({"user": [r[0] for r in rows], "item": [r[1] for r in rows],
                             "timestamp": [r[2] for r in rows]}), pq_path)
    assert data.read_interactions(pq_path, k_core=2) == (seqs, index)
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item,when\nu1,a,1\n")
    with pytest.raises(ValueError, match=r"bad.csv: missing column 'timestamp'"):
        data.read_interactions(bad)
    bad.write_text("user,item,timestamp\nu1,a,yesterday\n")
    with pytest.raises(ValueError, match=r"bad.csv: row 1: timestamp 'yesterday' is not a number"):
        data.read_interactions(bad, k_core=1)


def test_atomic_write_keeps_previous_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "train.parquet"
    art.atomic_write_parquet(target, pa.table({"a": [1]}))

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(data.pq, "write_table", boom)
    with pytest.raises(OSError, match="disk full"):
        art.atomic_write_parquet(target, pa.table({"a": [2]}))
    assert pq.read_table(target).column("a").to_pylist() == [1]
    assert [p.name for p in tmp_path.iterdir()] == ["train.parquet"]  # no temporary file left


@requires_shared_data
def test_beauty_new_statistics(tmp_path):
    stats = data.write_dataset(tmp_path, art.read_sequence_file(BEAUTY_NEW))
    assert (stats["num_users"], stats["num_items"], stats["num_interactions"]) == (22_332, 12_086, 198_215)
    assert (stats["num_train_samples"], stats["num_validation"], stats["num_test"]) == (150_041, 22_332, 22_332)
    assert stats["num_empty_history_samples"] == 22_196 and stats["num_short_users"] == 0
    counts = art.load_item_counts(tmp_path)
    assert counts.shape == (12_087,) and counts[0] == 0 and counts.sum() == 198_215 - 2 * 22_332


@requires_shared_data
def test_s3rec_beauty_and_item_table():
    seqs = art.read_sequence_file(SHARED_DATA / "Beauty" / "s3rec" / "Beauty.txt")
    assert len(seqs) == 22_363 and max(max(s) for s in seqs.values()) == 12_101
    items = data.read_item_table(SHARED_DATA / "Beauty" / "derived" / "beauty_items.jsonl", 12_086, "mme_id")
    assert len(items) == 12_086 and items[1].title == "OPI Nail Lacquer, Simmer and Shimmer, 0.5-Fluid Ounce"


# --- the download path, against a local HTTP server --------------------------------------------------------------


@pytest.fixture
def amazon_mirror(tmp_path):
    root = tmp_path / "mirror"
    root.mkdir()
    reviews = [(f"U{u}", f"A{(u * 7 + k) % 9}", 1000 + 10 * k) for u in range(8) for k in range(5)]
    with gzip.open(root / "reviews_Beauty_5.json.gz", "wt") as f:
        for user, asin, t in reviews:
            f.write(json.dumps({"reviewerID": user, "asin": asin, "unixReviewTime": t, "overall": 5.0}) + "\n")
    with gzip.open(root / "meta_Beauty.json.gz", "wt") as f:  # Python literals, as the 2014 files are
        for i in range(9):
            f.write(repr({"asin": f"A{i}", "title": f"Item {i}", "categories": [["Beauty"]], "imUrl": None}) + "\n")
        f.write(repr({"asin": "UNUSED", "title": "never bought"}) + "\n")

    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(root), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_prepare_and_checksums(amazon_mirror, tmp_path):
    import importlib.util

    root, url = amazon_mirror
    spec = importlib.util.spec_from_file_location("prepare_data", Path(data.__file__).parents[1] / "recipes" / "prepare_data.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    args = recipe.PrepareArguments(run_dir=str(tmp_path / "run"), download="beauty", base_url=url,
                                   cache_dir=str(tmp_path / "cache"), k_core=2)
    stats = recipe.main(args)
    out = art.Run(tmp_path / "run").data
    assert stats["num_users"] == 8 and stats["source"]["dataset"] == "amazon-2014-beauty"
    titles = pq.read_table(out / "items.parquet").column("title").to_pylist()
    assert all(t and t.startswith("Item ") for t in titles)
    ledger = json.loads((tmp_path / "cache" / "checksums.json").read_text())
    assert set(ledger) == {"reviews_Beauty_5.json.gz", "meta_Beauty.json.gz"}
    # the mirror's file changes: the recorded checksum refuses it and nothing is left behind
    (tmp_path / "cache" / "reviews_Beauty_5.json.gz").unlink()
    with gzip.open(root / "reviews_Beauty_5.json.gz", "wt") as f:
        f.write(json.dumps({"reviewerID": "X", "asin": "A1", "unixReviewTime": 1}) + "\n")
    with pytest.raises(ValueError, match="Checksum mismatch .*reviews_Beauty_5.json.gz"):
        data.download(f"{url}/reviews_Beauty_5.json.gz", tmp_path / "cache")
    assert not (tmp_path / "cache" / "reviews_Beauty_5.json.gz").exists()
    assert not list((tmp_path / "cache").glob("*.tmp"))
    np.testing.assert_array_equal(art.load_item_counts(out)[1:].sum(), stats["num_interactions"] - 16)


def test_train_users_start_and_older_files(tiny_sequences_file, tmp_path):
    import pyarrow.parquet as pq

    data.write_dataset(tmp_path, art.read_sequence_file(tiny_sequences_file), max_train_samples_per_user=2)
    path = tmp_path / "train_sequences.parquet"
    assert pq.read_schema(path).names == ["user_id", "items", "start"]
    users = art.read_train_users(tmp_path).to_pydict()
    assert users == {"user_id": [1, 2, 3, 4], "items": [[1, 2, 3], [2], [4, 1], [1, 2, 3, 4, 5]], "start": [1, 0, 0, 3]}
    train = _rows(art.load_split_table(tmp_path, "train"))
    assert sum(len(i) - s for i, s in zip(users["items"], users["start"])) == len(train)
    # a file written before `start`: derived from stats.json's `max_train_samples_per_user`, the same rule
    pq.write_table(pq.read_table(path).drop(["start"]), path)
    assert art.read_train_users(tmp_path).to_pydict() == users
    stats = json.loads((tmp_path / "stats.json").read_text())
    del stats["max_train_samples_per_user"]
    (tmp_path / "stats.json").write_text(json.dumps(stats))
    with pytest.raises(ValueError, match=r"no `start` column.*re-run `python recipes/prepare_data.py"):
        art.read_train_users(tmp_path)
