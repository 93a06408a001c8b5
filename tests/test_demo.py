# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""The demo app's logic (`modeling_mmesid/demo.py`), without a browser or gradio: title search, history building,
test users, the ranked list against `recommend`, the explanation (the four parts of each fused score, checked against
values computed by hand from the model's weights), the beams against `generate_items`, loading and its messages.
The UI itself is driven in a browser by `tests/test_app.py`."""

import math
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from mmesid_testing import DEMO_TITLES, build_tiny_demo_run


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    return build_tiny_demo_run(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def recommender(demo_run):
    from modeling_mmesid.demo import DemoRecommender

    return DemoRecommender.load(demo_run / "finetune" / "model")


# ---------------------------------------------------------------------------------------------------- catalog


def test_title_search_order_words_brand_and_exclusions():
    from modeling_mmesid.demo import Catalog

    catalog = Catalog(titles=["(padding)", "Rose Lip Balm", "Red Rose Soap", "Rose Shampoo", "Lip Rose", "Mint Gel"],
                      brands=[None, None, None, "Acme", None, "ROSEWOOD"],
                      train_counts=np.array([0, 5, 100, 5, 7, 1]))
    # titles starting with the query first (1, 3: equal counts, by id), then the most bought (2: 100, 4: 7), then
    # the brand match (5)
    assert [i for i, _ in catalog.search("rose")] == [1, 3, 2, 4, 5]
    assert catalog.search("ROSE", limit=2) == [(1, "Rose Lip Balm"), (3, "Rose Shampoo")]
    assert [i for i, _ in catalog.search("lip rose")] == [4, 1]  # every word, any order; the phrase's start first
    assert [i for i, _ in catalog.search("acme")] == [3]
    assert [i for i, _ in catalog.search("rose", exclude=[1, 2])] == [3, 4, 5]
    assert catalog.search("") == catalog.search("   ") == catalog.search("rose", limit=0) == []
    assert catalog.search("(padding)") == []  # item 0 is never offered
    assert catalog.num_items == 5 and catalog.title(4) == "Lip Rose"


def test_catalog_and_test_users_come_from_the_run(demo_run, tmp_path):
    from modeling_mmesid import data
    from modeling_mmesid.demo import load_catalog, load_test_users

    catalog = load_catalog(demo_run / "data")
    assert catalog.titles[1:] == DEMO_TITLES and catalog.num_items == 50
    items = pq.read_table(demo_run / "data" / "items.parquet")
    assert catalog.train_counts.tolist() == [0, *items.column("train_count").to_pylist()]
    assert catalog.brands[2] == "Acme" and catalog.brands[3] is None
    # "Argan ..." are items 2, 12, 22, 32, 42, all with brand Acme (even ids): none starts with the query, so the
    # most bought first
    argan = sorted((2, 12, 22, 32, 42), key=lambda i: (-catalog.train_counts[i], i))
    assert [i for i, _ in catalog.search("acme argan")] == argan
    assert catalog.search("acme rose") == []  # the Rose items have odd ids: no brand

    users = load_test_users(demo_run / "data")
    test = pq.read_table(demo_run / "data" / "test.parquet").to_pylist()
    assert len(users) == len(test) == 31
    for row in test:
        assert users.get(row["user_id"]) == (row["history"], row["target"])
    assert users.get(31) == (list(range(1, 50)), 50)
    with pytest.raises(KeyError, match=r"user 99 is not in the test split \(31 users, ids 1\.\.31\)"):
        users.get(99)
    assert users.random_user(__import__("random").Random(0)) in range(1, 32)

    data.write_dataset(tmp_path / "untitled", {1: [1, 2, 3]})  # no item table: ids stand in for titles
    assert load_catalog(tmp_path / "untitled").titles[1:] == ["item 1", "item 2", "item 3"]


def test_history_building():
    from modeling_mmesid.demo import add_item, remove_item

    history = add_item([], 7, num_items=50)
    history = add_item(history, "12", num_items=50)  # what a UI may hand over
    assert history == [7, 12]
    assert add_item(history, 7, num_items=50) == [7, 12]  # not twice
    assert remove_item([7, 12, 3], 12) == [7, 3] and remove_item([7], 9) == [7]
    for bad in (0, 51, -1):
        with pytest.raises(ValueError, match=rf"item id {bad} is outside the catalog \(1\.\.50\)"):
            add_item(history, bad, num_items=50)


# ---------------------------------------------------------------------------------------------------- recommending


def test_ranked_list_is_recommend_and_marks_the_held_out_item(recommender):
    history = [41, 12, 7]
    expected = recommender.recommend([history], k=10)[0].tolist()
    ranking = recommender.rank(history, k=10)
    assert [r.item_id for r in ranking.items] == expected and [r.rank for r in ranking.items] == list(range(1, 11))
    assert [r.title for r in ranking.items] == [DEMO_TITLES[i - 1] for i in expected]
    assert not set(expected) & set(history) and ranking.num_candidates == 47
    assert ranking.target is None and ranking.target_rank is None and not any(r.held_out for r in ranking.items)

    # the held-out item: marked where it is in the top-k, its rank among all candidates from the fused scores
    third = expected[2]
    ranking = recommender.rank(history, k=10, target=third)
    assert [r.held_out for r in ranking.items] == [False, False, True] + [False] * 7
    assert ranking.target_rank == 3
    scores = recommender.score_histories([history])[0]
    scores[[0, *history]] = -math.inf
    outside = int(scores.argsort(descending=True)[20])
    assert recommender.rank(history, k=10, target=outside).target_rank == 21
    assert recommender.rank(history, k=10, target=history[0]).target_rank is None  # in the history: masked

    # scores are the model's fused scores (the plain forward pass; `recommend` ranks with the cached path)
    torch.testing.assert_close(torch.tensor([r.score for r in ranking.items]), scores[expected], atol=1e-5, rtol=1e-5)
    assert recommender.rank([], k=5).items  # an empty history is a valid query (the prompt alone)
    assert len(recommender.rank(list(range(1, 48)), k=10).items) == 3  # k is capped by the candidates left


def test_explanation_parts_sum_to_the_fused_score_hand_computed(demo_run):
    """With the gate's output layer set to constant logits `tau * log([1, 2, 5])`, every item's fusion weights are
    `[1, 2, 5] / 8`; the four scores are computed here from the weights (`<h, e_j>`, `<h, W_m x_m(j)>`) and the
    parts `w * s` must sum to the fused score."""
    from modeling_mmesid.demo import DemoRecommender

    recommender = DemoRecommender.load(demo_run / "finetune" / "model")
    model = recommender.model
    gate = model.fusion_gate.linear_4
    with torch.no_grad():
        gate.weight.zero_()
        gate.bias.copy_(model.config.fusion_temperature * torch.log(torch.tensor([1.0, 2.0, 5.0])))
    history = [3, 9]
    ranking = recommender.rank(history, k=5)
    assert ranking.score_names == ["item table", "collaborative", "text"]

    with torch.no_grad():
        h = model(**recommender.processor([history])).user_embeddings[0]  # the user state the scores read
    projections, embeddings = model.model.modality_projections, model.model.modality_embeddings
    for item in ranking.items:
        j = item.item_id
        with torch.no_grad():
            by_hand = {"item table": float(h @ model.item_head.weight[j]),
                       **{m: float(h @ projections[m](embeddings(m)[j])) for m in ("collaborative", "text")}}
        weights = {"item table": 1 / 8, "collaborative": 2 / 8, "text": 5 / 8}
        assert item.weights == pytest.approx(weights, abs=1e-6)
        assert item.logits == pytest.approx(by_hand, abs=1e-5)
        assert item.parts == pytest.approx({n: weights[n] * by_hand[n] for n in weights}, abs=1e-5)
        assert sum(item.parts.values()) == pytest.approx(item.score, abs=1e-5)
    # the fused scores are the model's own (score_histories), in descending order
    scores = recommender.score_histories([history])[0]
    assert [r.score for r in ranking.items] == pytest.approx(scores[[r.item_id for r in ranking.items]].tolist(),
                                                              abs=1e-5)
    assert all(a.score >= b.score for a, b in zip(ranking.items, ranking.items[1:]))


def test_train_count_is_what_the_gate_reads(recommender):
    counts = recommender.model.model.item_counts
    ranking = recommender.rank([1, 2], k=10)
    assert [r.train_count for r in ranking.items] == [int(counts[r.item_id]) for r in ranking.items]
    weights = recommender.model.get_fusion_weights()
    for row in recommender.fusion_profile():
        item = int(torch.nonzero(counts == row["train_count"])[0])  # any item with that count: same weights
        assert list(row["weights"].values()) == pytest.approx(weights[item].tolist(), abs=1e-6)
    profile = recommender.fusion_profile(quantiles=(0.0, 1.0))
    assert [r["train_count"] for r in profile] == [int(counts[1:].min()), int(counts[1:].max())]


def test_beams_are_generate_items(recommender):
    history = [41, 12]
    items, scores = recommender.generate_items([history], k=6)
    target = int(items[0, 1])
    generation = recommender.generate(history, k=6, target=target)
    assert [b.item_id for b in generation.beams] == items[0].tolist()
    assert [b.log_prob for b in generation.beams] == pytest.approx(scores[0].tolist())
    assert [b.held_out for b in generation.beams] == [False, True, False, False, False, False]
    explanation = recommender.explain(history)
    assert [b.ranking_rank for b in generation.beams] == [explanation.rank_of(b.item_id) for b in generation.beams]
    full = explanation.item_logits.argsort(descending=True).tolist()
    assert generation.beams[0].ranking_rank == full.index(generation.beams[0].item_id) + 1
    # the app hands `generate` the ranking's own pass: the same beams and ranks without a second backbone pass
    ranking = recommender.rank(history, k=6, target=target)
    reused = recommender.generate(history, k=6, target=target, explanation=ranking.explanation)
    assert reused.beams == generation.beams
    assert torch.equal(ranking.explanation.item_logits, explanation.item_logits)


def test_heads_the_model_does_not_have_are_refused(tmp_path):
    from modeling_mmesid.demo import DemoRecommender

    run = build_tiny_demo_run(tmp_path, head="ranking")
    recommender = DemoRecommender.load(run / "finetune" / "model")
    assert recommender.can_rank and not recommender.can_generate
    with pytest.raises(ValueError, match="no generative head"):
        recommender.generate([1], k=3)
    assert list(_latency(recommender)) == ["rank"]


def _latency(recommender):
    from modeling_mmesid.demo import measure_latency

    stats = measure_latency(recommender, num_queries=3, k=5)
    for head in stats.values():
        assert head["queries"] == 3 and 0 < head["median"] <= head["max"]
    return stats


def test_measure_latency_times_both_heads(recommender):
    assert list(_latency(recommender)) == ["rank", "generate"]


# ---------------------------------------------------------------------------------------------------- loading


def test_load_messages_name_the_command(demo_run, tmp_path, monkeypatch):
    from modeling_mmesid.demo import DemoRecommender, MissingRunError

    monkeypatch.chdir(tmp_path)  # no outputs/ here: the default (the main job's model) is missing
    with pytest.raises(MissingRunError, match=r"No trained model at `outputs/beauty-smollm2-135m/finetune/model`\. "
                                              r"Run the main job first, `bash recipes/run_pipeline.sh`"):
        DemoRecommender.load()
    with pytest.raises(MissingRunError, match="No trained model at `elsewhere/run/model`"):
        DemoRecommender.load("elsewhere/run/model")  # not `namespace/name`: a folder
    with pytest.raises(MissingRunError, match=r"No item table \(`items.parquet`\) in `nowhere`"):
        DemoRecommender.load(demo_run / "finetune" / "model", data="nowhere")
    with pytest.raises(ValueError, match="is a Hub repo id: pass its dataset repo too"):
        DemoRecommender.load("org/mmesid-beauty")

    small = tmp_path / "small"
    from modeling_mmesid import data

    data.write_dataset(small, {1: [1, 2, 3, 4]})
    with pytest.raises(ValueError, match="has 4 items, the model 50"):
        DemoRecommender.load(demo_run / "finetune" / "model", data=small)


def test_data_as_a_run_folder_or_a_dataset_repo(demo_run, tmp_path):
    """`--data` takes the run's data/ folder, the run folder, or a dataset repo's layout (items at the root, the splits
    under data/, as `recipes/publish.py` writes it)."""
    from modeling_mmesid.demo import DemoRecommender

    model = demo_run / "finetune" / "model"
    repo = tmp_path / "dataset-repo"
    (repo / "data").mkdir(parents=True)
    shutil.copy(demo_run / "data" / "items.parquet", repo / "items.parquet")
    shutil.copy(demo_run / "data" / "test.parquet", repo / "data" / "test.parquet")
    for data in (demo_run, demo_run / "data", repo):
        loaded = DemoRecommender.load(model, data=data)
        assert loaded.catalog.titles[1:] == DEMO_TITLES and len(loaded.test_users) == 31
    (repo / "data" / "test.parquet").unlink()
    assert DemoRecommender.load(model, data=repo).test_users is None  # titles only: no test users to show


def test_app_main_without_a_model_prints_the_command(tmp_path, monkeypatch, capsys):
    """`python app.py` before the main job: a message that says the command that makes a model, not a traceback."""
    import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MMESID_MODEL", raising=False)
    assert app.main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("app.py: No trained model at `outputs/beauty-smollm2-135m/finetune/model`")
    assert "bash recipes/run_pipeline.sh" in err and "Traceback" not in err


def test_app_benchmark_prints_seconds_per_query(demo_run, capsys):
    import app

    assert app.main(["--model", str(demo_run / "finetune" / "model"), "--benchmark", "3", "--k", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["rank", "generate"]
    assert all("per query (3 queries, k=5" in line for line in lines)


def test_rendered_html_escapes_titles_and_marks_the_held_out_item(recommender):
    import app

    history = [41, 12]
    ranking = recommender.rank(history, k=4, target=None)
    target = ranking.items[1].item_id
    ranking = recommender.rank(history, k=4, target=target)
    ranking.items[0].title = "<script>alert(1)</script> & co"
    page = app.render_ranking(ranking)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in page
    rows = page.split("<tr data-item-id=")[1:]
    assert [int(r.split('"')[1]) for r in rows] == [r.item_id for r in ranking.items]
    assert ["held-out" in r for r in rows] == [False, True, False, False]
    assert "ranks <b>2</b> of 48 candidates" in page
    listing = app.render_history(recommender, history, user=None, target=None)
    assert listing.count("<li data-item-id=") == 2 and "Rose Shampoo" in listing and "Held-out" not in listing
