# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
import math

import numpy as np
import pytest
import torch

from modeling_mmesid import baselines, evaluation
from modeling_mmesid.metrics import FULL_RANKING_METRIC_PATH


def test_rank_with_ties_and_padding():
    # items 1..4 score .5 .9 .5 .1; padding (column 0) scores highest but is never ranked
    scores = torch.tensor([[9.0, 0.5, 0.9, 0.5, 0.1]])
    # items 1 and 3 tie behind item 2: each takes position 2 or 3 (a random tie-break), whatever its id
    assert evaluation.target_ranks(scores, torch.tensor([3])).tolist() == [[2, 3]]
    assert evaluation.target_ranks(scores, torch.tensor([1])).tolist() == [[2, 3]]
    assert evaluation.target_ranks(scores, torch.tensor([4])).tolist() == [[4, 4]]


def test_tied_metrics_are_expectations_over_the_tied_positions():
    m = evaluation.metrics_from_ranks([[2, 3]], ks=(1, 2, 10))
    assert m["hr@1"] == 0 and m["ndcg@1"] == 0 and m["mrr@1"] == 0
    assert m["hr@2"] == pytest.approx(1 / 2)  # one of the two tie positions is in the top 2
    assert m["ndcg@2"] == pytest.approx((1 / math.log2(3)) / 2)
    assert m["mrr@2"] == pytest.approx((1 / 2) / 2)
    assert m["hr@10"] == 1.0
    assert m["ndcg@10"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(4)) / 2)  # (0.6309 + 0.5) / 2
    assert m["mrr@10"] == pytest.approx((1 / 2 + 1 / 3) / 2)  # 5/12
    # a block of 4 ties at positions 9..12 straddling K=10: half of it inside
    m = evaluation.metrics_from_ranks([[9, 12], [1, 1]], ks=(10,))
    assert m["hr@10"] == pytest.approx((2 / 4 + 1) / 2)
    assert m["ndcg@10"] == pytest.approx(((1 / math.log2(10) + 1 / math.log2(11)) / 4 + 1) / 2)
    assert m["mrr@10"] == pytest.approx(((1 / 9 + 1 / 10) / 4 + 1) / 2)
    # plain ranks are one-position blocks
    assert evaluation.metrics_from_ranks([3, 1]) == evaluation.metrics_from_ranks([[3, 3], [1, 1]])
    with pytest.raises(ValueError, match="must be >= its `first`"):
        evaluation.metrics_from_ranks([[3, 2]])
    with pytest.raises(ValueError, match=r"shape \(num_users,\) or \(num_users, 2\)"):
        evaluation.metrics_from_ranks([[1, 2, 3]])


def test_all_tied_scorer_gets_the_random_expectation():
    # a constant scorer over 30 items: the target is uniform over positions 1..30
    ranks = evaluation.target_ranks(torch.zeros(1, 31), torch.tensor([17]))
    m = evaluation.metrics_from_ranks(ranks, ks=(10,))
    assert ranks.tolist() == [[1, 30]] and m["hr@10"] == pytest.approx(10 / 30)
    assert m["ndcg@10"] == pytest.approx(sum(1 / math.log2(r + 1) for r in range(1, 11)) / 30)


def test_nan_scores_rank_last():
    # a diverged scorer (all NaN) must not look perfect: its target is a miss
    ranks = evaluation.target_ranks(torch.full((2, 31), math.nan), torch.tensor([1, 30]))
    assert ranks.tolist() == [[math.inf, math.inf]] * 2
    m = evaluation.metrics_from_ranks(ranks, ks=(10,))
    assert m["ndcg@10"] == 0 and m["hr@10"] == 0 and m["mrr@10"] == 0
    # NaN candidates never outrank (or tie) a real score; a NaN target is a miss, behind every candidate
    scores = torch.tensor([[0.0, math.nan, 0.2, math.nan, 0.1]])
    assert evaluation.target_ranks(scores, torch.tensor([4])).tolist() == [[2, 2]]
    assert evaluation.target_ranks(scores, torch.tensor([1])).tolist() == [[math.inf, math.inf]]
    # ... after history masking too: 2 candidates left (3 and 4), and the NaN target 3 is still a miss (not rank 2,
    # which every k >= 2 would count as a hit)
    assert evaluation.target_ranks(scores, torch.tensor([3]), torch.tensor([[1, 2]])).tolist() == [[math.inf] * 2]


def test_infinite_scores_are_ordinary_values():
    scores = torch.tensor([[0.0, math.inf, math.inf, 0.5, -math.inf, -math.inf]])
    assert evaluation.target_ranks(scores, torch.tensor([2])).tolist() == [[1, 2]]  # ties with the other +inf
    assert evaluation.target_ranks(scores, torch.tensor([3])).tolist() == [[3, 3]]
    assert evaluation.target_ranks(scores, torch.tensor([5])).tolist() == [[4, 5]]  # ties with the other -inf
    # a -inf candidate does not tie with masked items: item 1 masked, -inf target still 2 positions
    assert evaluation.target_ranks(scores, torch.tensor([5]), torch.tensor([[1]])).tolist() == [[3, 4]]


def test_scores_are_compared_in_float32():
    # 1 and 1 + 1e-12 differ in float64 but are the same float32: a tie, not a win for item 2
    scores = torch.tensor([[0.0, 1.0, 1.0 + 1e-12, 0.5]], dtype=torch.float64)
    assert evaluation.target_ranks(scores, torch.tensor([1])).tolist() == [[1, 2]]
    assert evaluation.target_ranks(scores.bfloat16(), torch.tensor([3])).tolist() == [[3, 3]]


def test_history_items_are_masked():
    scores = torch.tensor([[0.0, 0.5, 0.9, 0.5, 0.1], [0.0, 0.5, 0.9, 0.5, 0.1]])
    history = torch.tensor([[2, 1], [3, 0]])  # row 2 right-padded
    assert evaluation.target_ranks(scores, torch.tensor([3, 4]), history).tolist() == [[1, 1], [3, 3]]
    # a target that is also in the history is masked too: a miss (rank +inf)
    assert evaluation.target_ranks(scores[:1], torch.tensor([2]), torch.tensor([[2]])).tolist() == [[math.inf] * 2]


def test_unmasked_history_is_recbole_protocol():
    scores = torch.tensor([[0.0, 0.5, 0.9, 0.5, 0.1]])
    history = torch.tensor([[2]])
    assert evaluation.target_ranks(scores, torch.tensor([3]), history).tolist() == [[1, 2]]
    assert evaluation.target_ranks(scores, torch.tensor([3]), history, mask_history=False).tolist() == [[2, 3]]
    # the target itself in the history: a candidate like any other without masking
    assert evaluation.target_ranks(scores, torch.tensor([2]), history, mask_history=False).tolist() == [[1, 1]]
    split = {"history": [[2]], "target": [3]}
    scorer = lambda h, n: scores.expand(h.shape[0], -1)  # noqa: E731
    masked = evaluation.evaluate_scorer(scorer, split, 4, ks=(1,))
    unmasked = evaluation.evaluate_scorer(scorer, split, 4, ks=(1,), mask_history=False)
    assert masked["hr@1"] == pytest.approx(1 / 2) and unmasked["hr@1"] == 0
    assert "history items and padding masked" in evaluation.protocol_line(4, 1)
    assert "history items kept (RecBole)" in evaluation.protocol_line(4, 1, mask_history=False)
    line = evaluation.protocol_line(4, 1)
    assert "ties averaged (expected metric over the tied positions)" in line and "NaN scores ranked last" in line
    assert evaluation.protocol_line(4, 1, sampled=(43, 2_000)).endswith(", 1 users (sampled with seed 43 from 2,000)")
    assert evaluation.protocol_line(4, 2_000, sampled=(43, 2_000)) == evaluation.protocol_line(4, 2_000)


def test_nan_users_are_counted_and_warned(caplog):
    split = {"history": [[1], [2], []], "target": [3, 3, 4]}

    def scorer(histories, lengths):
        scores = torch.arange(5, dtype=torch.float32).repeat(histories.shape[0], 1)
        scores[histories[:, 0] == 2, 1] = math.nan  # the user with history [2] gets a NaN for item 1
        scores[histories[:, 0] == 1, 1] = math.nan  # ... and for the masked item 1: not a candidate, not counted
        return scores

    from transformers.utils import logging as hf_logging

    hf_logging.enable_propagation()
    try:
        with caplog.at_level("WARNING"):
            m = evaluation.evaluate_scorer(scorer, split, 4, ks=(1,))
    finally:
        hf_logging.disable_propagation()
    assert m["nan_users"] == 1 and m["num_users"] == 3
    assert "1 of 3 users have NaN scores" in caplog.text


def test_metrics_by_hand():
    m = evaluation.metrics_from_ranks([1, 3, 25], ks=(1, 5, 20))
    assert m["hr@1"] == pytest.approx(1 / 3) and m["ndcg@1"] == pytest.approx(1 / 3) and m["mrr@1"] == pytest.approx(1 / 3)
    assert m["hr@5"] == pytest.approx(2 / 3)
    assert m["ndcg@5"] == pytest.approx((1 + 1 / math.log2(4)) / 3)  # 1/log2(3+1) = 0.5
    assert m["mrr@5"] == pytest.approx((1 + 1 / 3) / 3)
    assert m["hr@20"] == m["hr@5"] and m["num_users"] == 3


def test_k_larger_than_candidates():
    # 3 items, one in the history: 2 candidates, K=20 still a hit at rank 2
    scores = torch.tensor([[0.0, 0.3, 0.2, 0.1]])
    ranks = evaluation.target_ranks(scores, torch.tensor([3]), torch.tensor([[1]]))
    m = evaluation.metrics_from_ranks(ranks, ks=(20,))
    assert ranks.tolist() == [[2, 2]] and m["hr@20"] == 1.0 and m["ndcg@20"] == pytest.approx(1 / math.log2(3))


def test_bad_targets():
    with pytest.raises(ValueError, match="target item ids must lie in 1..4"):
        evaluation.target_ranks(torch.zeros(1, 5), torch.tensor([0]))
    with pytest.raises(ValueError, match="No users"):
        evaluation.metrics_from_ranks([])


def _random_split(n_users=37, n_items=30, seed=0):
    g = np.random.default_rng(seed)
    hist = [g.choice(np.arange(1, n_items + 1), size=g.integers(0, 8), replace=False).tolist() for _ in range(n_users)]
    tgt = [int(g.integers(1, n_items + 1)) for _ in range(n_users)]
    return {"history": hist, "target": tgt}


def test_batched_equals_one_user_at_a_time():
    split = _random_split()
    table = torch.randint(0, 4, (31, 31)).float()  # few distinct scores: many ties
    scorer = lambda h, n: table[h.gather(1, (n - 1).clamp(min=0)[:, None])[:, 0]]  # noqa: E731
    batched = evaluation.rank_split(scorer, split, batch_size=16)
    single = evaluation.rank_split(scorer, split, batch_size=1)
    np.testing.assert_array_equal(batched, single)
    # and both equal a plain Python loop over the candidates
    for i, (h, t) in enumerate(zip(split["history"], split["target"])):
        s = table[h[-1] if h else 0].tolist()
        cands = [j for j in range(1, 31) if j not in h]
        if t not in cands:
            assert batched[i].tolist() == [math.inf, math.inf]
            continue
        higher = sum(s[j] > s[t] for j in cands)
        assert batched[i].tolist() == [higher + 1, higher + sum(s[j] == s[t] for j in cands)]


def test_evaluate_metric_module_matches_evaluator():
    import evaluate

    split = _random_split(seed=1)
    scores = torch.randn(len(split["target"]), 31)
    hist, _ = evaluation.pad_histories(split["history"])
    ranks = evaluation.target_ranks(scores, torch.tensor(split["target"]), hist)
    masked = scores.clone()
    masked[:, 0] = -math.inf
    masked.scatter_(1, hist, -math.inf)
    order = torch.sort(masked, dim=1, descending=True, stable=True).indices[:, :20].tolist()  # no ties
    metric = evaluate.load(FULL_RANKING_METRIC_PATH)
    got = metric.compute(predictions=order, references=split["target"], ks=[5, 10, 20])
    want = evaluation.metrics_from_ranks(ranks)
    for key, value in got.items():
        assert value == pytest.approx(want[key]), key


def test_popularity_and_transition_baselines():
    train = [[1, 2, 3], [2, 3], [3, 1, 2], [4]]
    pop = baselines.PopularityScorer.fit(train, 5)
    assert pop(torch.zeros(2, 1, dtype=torch.long), torch.tensor([0, 0]))[0].tolist() == [0, 2, 3, 3, 1, 0]
    trans = baselines.TransitionScorer.fit(train, 5)
    scores = trans(torch.tensor([[1, 2], [4, 0], [0, 0]]), torch.tensor([2, 1, 0]))
    # after item 2: 2->3 twice; ties below 1 ordered by popularity (3 / 4)
    assert scores[0, 3] == pytest.approx(2 + 3 / 4) and scores[0, 1] == pytest.approx(2 / 4)
    assert scores[1].tolist() == pytest.approx([0, 2 / 4, 3 / 4, 3 / 4, 1 / 4, 0])  # 4 has no successors
    assert scores[2].tolist() == scores[1].tolist()  # empty history: popularity order
    m = evaluation.evaluate_scorer(trans, {"history": [[1, 2]], "target": [3]}, 5)
    assert m["hr@5"] == 1.0 and m["ndcg@5"] == 1.0


def test_ranks_from_recommendations_by_hand():
    recommended = torch.tensor([[4, 2, 9], [1, 0, 0], [3, 5, 7]])
    targets = torch.tensor([9, 0 + 6, 3])
    ranks = evaluation.ranks_from_recommendations(recommended, targets)
    assert ranks.tolist() == [[3, 3], [math.inf, math.inf], [1, 1]]  # a target not in the list is a miss (+inf)
    metrics = evaluation.metrics_from_ranks(ranks, ks=(1, 5))
    assert metrics["hr@1"] == pytest.approx(1 / 3) and metrics["hr@5"] == pytest.approx(2 / 3)
    assert metrics["ndcg@5"] == pytest.approx((1 / math.log2(4) + 1) / 3)
    assert metrics["mrr@5"] == pytest.approx((1 / 3 + 1) / 3)
    with pytest.raises(ValueError, match=r"`recommended` must have shape \(batch_size, k\) with batch_size 3"):
        evaluation.ranks_from_recommendations(recommended[:2], targets)


ZERO = {f"{metric}@{k}": 0.0 for metric in ("ndcg", "hr", "mrr") for k in (1, 3, 5, 10, 20)}
ALL_KS = (1, 3, 5, 10, 20)


def _only_metrics(m):
    return {key: value for key, value in m.items() if "@" in key}


def test_all_nan_scorer_in_a_small_catalog_scores_zero():
    """A NaN target placed at "number of candidates" (4 here) was a hit at k = 5 (HR@5 = 1.0,
    nDCG@5 = 0.43). A miss scores 0 at every k, whatever the catalog size."""
    split = {"history": [[], [1]], "target": [2, 3]}
    nan_scorer = lambda h, n: torch.full((h.shape[0], 5), math.nan)  # noqa: E731
    m = evaluation.evaluate_scorer(nan_scorer, split, 4, ks=ALL_KS)
    assert _only_metrics(m) == ZERO and m["nan_users"] == 2
    assert evaluation.target_ranks(torch.full((1, 5), math.nan), torch.tensor([2])).tolist() == [[math.inf] * 2]


def test_target_in_history_is_a_miss_at_every_k_even_beyond_the_catalog():
    """A masked target was placed at `num_items + 1` (4 in a 3-item catalog), a hit at k >= 4."""
    scores = torch.tensor([[0.0, 0.3, 0.2, 0.1]])
    split = {"history": [[1, 3]], "target": [3]}
    m = evaluation.evaluate_scorer(lambda h, n: scores.expand(h.shape[0], -1), split, 3, ks=ALL_KS)
    assert _only_metrics(m) == ZERO
    # mixed with a hit: the hit alone counts
    ranks = evaluation.target_ranks(scores.expand(2, -1), torch.tensor([3, 2]), torch.tensor([[1, 3], [1, 0]]))
    assert ranks.tolist() == [[math.inf, math.inf], [1, 1]]
    m = evaluation.metrics_from_ranks(ranks, ks=(20,))
    assert m["hr@20"] == 0.5 and m["ndcg@20"] == 0.5 and m["mrr@20"] == 0.5
    with pytest.raises(ValueError, match=r"A miss must be `\+inf` at both ends"):
        evaluation.metrics_from_ranks([[1, math.inf]])


def test_generated_miss_in_a_small_catalog_scores_zero():
    """A target missing from a generated list was ranked `num_items + 1` (4 in a 3-item catalog), a hit
    at k = 5 and above; also through `MMESIDTrainer._generated_ranks`, which asks for `min(max(eval_ks), num_items)`
    beams."""
    from types import SimpleNamespace

    from modeling_mmesid.trainer import MMESIDTrainer

    recommended = torch.tensor([[1, 2, 0, 0, 0]])  # 3-item catalog, the target 3 not generated
    ranks = evaluation.ranks_from_recommendations(recommended, torch.tensor([3]))
    assert _only_metrics(evaluation.metrics_from_ranks(ranks, ks=ALL_KS)) == ZERO
    m = evaluation.evaluate_recommender(lambda h: recommended.expand(len(h), -1), {"history": [[]], "target": [3]},
                                        3, ks=(1, 3, 5))
    assert _only_metrics(m) == {key: 0.0 for key in ZERO if int(key.split("@")[1]) <= 5}

    recommender = SimpleNamespace(config=SimpleNamespace(num_items=3),
                                  recommend=lambda rows, k, method, batch_size: torch.tensor([[1, 2, 0]] * len(rows)))
    trainer = SimpleNamespace(recommender=lambda model: recommender, args=SimpleNamespace(eval_ks=[5, 10, 20]))
    ranks = MMESIDTrainer._generated_ranks(trainer, None, torch.tensor([[0], [1]]), torch.tensor([3, 2]))
    assert ranks.tolist() == [[math.inf, math.inf], [2, 2]]
    m = evaluation.metrics_from_ranks(ranks.float(), ks=(5, 10, 20))  # as `prediction_step` returns them
    assert m["hr@5"] == m["hr@20"] == 0.5


def test_padding_inside_a_ranked_list_does_not_push_later_items_down():
    """Padding (0) in the middle of a list is no recommendation; the item after it keeps its rank."""
    recommended = torch.tensor([[4, 0, 9], [0, 0, 7]])
    ranks = evaluation.ranks_from_recommendations(recommended, torch.tensor([9, 7]))
    assert ranks.tolist() == [[2, 2], [1, 1]]


def test_recommender_of_a_scorers_top_k_gives_the_scorers_metrics():
    """Ranked lists of `max(ks)` items (the scorer's top-20, history masked) give exactly `evaluate_scorer`'s metrics
    when scores have no ties: the same users, the same protocol; items not listed are misses."""
    g = torch.Generator().manual_seed(0)
    num_items = 60
    table = torch.randn(num_items + 1, num_items + 1, generator=g)

    def scorer(histories, lengths):
        return table[histories[torch.arange(len(lengths)), (lengths - 1).clamp(min=0)]]

    def recommender(histories):
        padded, lengths = evaluation.pad_histories(histories)
        scores = scorer(padded, lengths)
        scores[:, 0] = float("-inf")
        scores.scatter_(1, padded, float("-inf"))
        return scores.topk(20, dim=-1).indices

    rng = np.random.default_rng(0)
    split = {"history": [rng.integers(1, num_items + 1, size=rng.integers(1, 6)).tolist() for _ in range(40)],
             "target": rng.integers(1, num_items + 1, size=40).tolist()}
    expected = evaluation.evaluate_scorer(scorer, split, num_items, batch_size=7)
    got = evaluation.evaluate_recommender(recommender, split, num_items, batch_size=7)
    for key in ("ndcg@5", "ndcg@20", "hr@10", "hr@20", "mrr@20"):
        assert got[key] == pytest.approx(expected[key], abs=1e-12), key
    with pytest.raises(ValueError, match="returned 5 items per user, fewer than the largest cut-off 20"):
        evaluation.evaluate_recommender(lambda h: recommender(h)[:, :5], split, num_items)
