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
    assert evaluation.target_ranks(scores, torch.tensor([3])).tolist() == [3]  # item 2 above, tie with lower id 1
    assert evaluation.target_ranks(scores, torch.tensor([1])).tolist() == [2]  # tie with item 3 goes to item 1
    assert evaluation.target_ranks(scores, torch.tensor([4])).tolist() == [4]


def test_history_items_are_masked():
    scores = torch.tensor([[0.0, 0.5, 0.9, 0.5, 0.1], [0.0, 0.5, 0.9, 0.5, 0.1]])
    history = torch.tensor([[2, 1], [3, 0]])  # row 2 right-padded
    assert evaluation.target_ranks(scores, torch.tensor([3, 4]), history).tolist() == [1, 3]
    # a target that is also in the history is masked too: ranked behind everything (a miss)
    assert evaluation.target_ranks(scores[:1], torch.tensor([2]), torch.tensor([[2]]))[0] >= 5


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
    assert ranks.tolist() == [2] and m["hr@20"] == 1.0 and m["ndcg@20"] == pytest.approx(1 / math.log2(3))


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
    table = torch.randn(31, 31)
    scorer = lambda h, n: table[h.gather(1, (n - 1).clamp(min=0)[:, None])[:, 0]]  # noqa: E731
    batched = evaluation.rank_split(scorer, split, batch_size=16)
    single = evaluation.rank_split(scorer, split, batch_size=1)
    np.testing.assert_array_equal(batched, single)
    # and both equal a plain Python loop over sorted scores
    for i, (h, t) in enumerate(zip(split["history"], split["target"])):
        s = table[h[-1] if h else 0].tolist()
        cands = sorted((j for j in range(1, 31) if j not in h), key=lambda j: (-s[j], j))
        expected = cands.index(t) + 1 if t in cands else 31
        assert batched[i] == expected or (t in h and batched[i] >= len(cands) + 1)


def test_evaluate_metric_module_matches_evaluator():
    import evaluate

    split = _random_split(seed=1)
    scores = torch.randn(len(split["target"]), 31)
    hist, _ = evaluation.pad_histories(split["history"])
    ranks = evaluation.target_ranks(scores, torch.tensor(split["target"]), hist)
    masked = scores.clone()
    masked[:, 0] = -math.inf
    masked.scatter_(1, hist, -math.inf)
    order = torch.sort(masked, dim=1, descending=True, stable=True).indices[:, :20].tolist()  # ties: lower id first
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
