# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""The `evaluate` metric module (`modeling_mmesid/metrics/full_ranking/`) computes through the evaluator's functions:
tied scores are averaged exactly as `modeling_mmesid.evaluation` averages them, checked on hand-computed numbers."""

import math

import pytest
import torch

from modeling_mmesid import evaluation
from modeling_mmesid.metrics import FULL_RANKING_METRIC_PATH


# Two users over items 1..5 (index 0 is padding).
# user 1: item 1 above the target 3, which ties with items 2 and 4: positions 2..4, each with probability 1/3.
# user 2: history [1] masked; the target 2 ties with item 3: positions 1..2, each with probability 1/2.
SCORES = [[0.0, 0.9, 0.5, 0.5, 0.5, 0.1], [0.0, 0.9, 0.2, 0.2, 0.0, 0.0]]
TARGETS = [3, 2]
HISTORIES = [[], [1]]
BY_HAND = {
    "hr@1": (0 + 1 / 2) / 2,
    "hr@2": (1 / 3 + 1) / 2,
    "hr@5": (1 + 1) / 2,
    "ndcg@1": (0 + 1 / 2) / 2,
    "ndcg@3": ((1 / math.log2(3) + 1 / math.log2(4)) / 3 + (1 + 1 / math.log2(3)) / 2) / 2,
    "ndcg@5": ((1 / math.log2(3) + 1 / math.log2(4) + 1 / math.log2(5)) / 3 + (1 + 1 / math.log2(3)) / 2) / 2,
    "mrr@1": (0 + 1 / 2) / 2,
    "mrr@3": ((1 / 2 + 1 / 3) / 3 + (1 + 1 / 2) / 2) / 2,
    "mrr@5": ((1 / 2 + 1 / 3 + 1 / 4) / 3 + (1 + 1 / 2) / 2) / 2,
}


@pytest.fixture(scope="module")
def metrics():
    import evaluate

    return {name: evaluate.load(FULL_RANKING_METRIC_PATH, name) for name in ("default", "scores")}


def test_tied_scores_are_averaged_as_the_evaluator_averages_them(metrics):
    got = metrics["scores"].compute(predictions=SCORES, references=TARGETS, histories=HISTORIES, ks=[1, 2, 3, 5])
    for key, value in BY_HAND.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
    hist, _ = evaluation.pad_histories(HISTORIES)
    ranks = evaluation.target_ranks(torch.tensor(SCORES), torch.tensor(TARGETS), hist)
    assert ranks.tolist() == [[2, 4], [1, 2]]
    assert got == evaluation.metrics_from_ranks(ranks, ks=(1, 2, 3, 5))  # the evaluator's numbers, to the last digit


def test_without_histories_nothing_is_masked(metrics):
    # user 2 unmasked: item 1 (0.9) is above the target, which ties with item 3: positions 2..3
    got = metrics["scores"].compute(predictions=SCORES[1:], references=TARGETS[1:], ks=[1, 2, 3])
    assert got["hr@1"] == 0 and got["hr@2"] == pytest.approx(1 / 2) and got["hr@3"] == pytest.approx(1)
    assert got["mrr@3"] == pytest.approx((1 / 2 + 1 / 3) / 2)


def test_ranked_lists_match_the_evaluator(metrics):
    # a ranked list has no ties; 0 pads a short list and is no item; a target not in its list is a miss
    got = metrics["default"].compute(predictions=[[4, 2, 9], [1, 0, 0], [3, 5, 7]], references=[9, 6, 3], ks=[1, 5])
    assert got["hr@1"] == pytest.approx(1 / 3) and got["hr@5"] == pytest.approx(2 / 3)
    assert got["ndcg@5"] == pytest.approx((1 / math.log2(4) + 1) / 3)
    assert got["mrr@5"] == pytest.approx((1 / 3 + 1) / 3)
    assert got["num_users"] == 3


def test_refusals(metrics):
    import evaluate

    with pytest.raises(ValueError, match="`config_name` must be one of"):
        evaluate.load(FULL_RANKING_METRIC_PATH, "sampled")
    with pytest.raises(ValueError, match="target item ids must lie in 1..5"):
        metrics["scores"].compute(predictions=SCORES[:1], references=[6])
