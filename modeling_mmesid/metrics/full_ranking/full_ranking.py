# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""`evaluate` metric module: nDCG / HR / MRR @ K for next-item recommendation with one target per user.

Load it offline from the installed package:

    import evaluate
    from modeling_mmesid.metrics import FULL_RANKING_METRIC_PATH
    metric = evaluate.load(FULL_RANKING_METRIC_PATH)
    metric.compute(predictions=[[3, 7, 1], [5, 2, 9]], references=[7, 4], ks=[1, 2, 3])

`predictions` are ranked item lists (best first, history already removed); `references` the held-out item.
With `r` the 1-based position of the reference in its list (absent = miss):
`hr@k = 1[r <= k]`, `ndcg@k = 1[r <= k] / log2(r + 1)`, `mrr@k = 1[r <= k] / r`, averaged over users.
This file is self-contained (evaluate copies it into its module cache); `modeling_mmesid.evaluation` computes the
same numbers from full score matrices without depending on it. A ranked list has already broken any ties among
scores; `modeling_mmesid.evaluation` instead averages each metric over the tied positions (its module docstring),
so the two agree exactly when the scores have no ties.
"""

import math

import datasets
import evaluate


_CITATION = """@inproceedings{wang2025mmesid,
  title={Empowering Large Language Model for Sequential Recommendation via Multimodal Embeddings and Semantic IDs},
  author={Wang, Yuhao and others}, booktitle={CIKM}, year={2025}}"""


class FullRanking(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation=_CITATION,
            inputs_description="predictions: list of ranked item-id lists; references: one target item id each.",
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("int64")), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, ks=(5, 10, 20)):
        if len(predictions) == 0:
            raise ValueError("No users to evaluate.")
        ranks = []
        for ranked, target in zip(predictions, references):
            ranked = list(ranked)
            ranks.append(ranked.index(target) + 1 if target in ranked else math.inf)
        out = {}
        for k in ks:
            hits = [r <= k for r in ranks]
            out[f"ndcg@{k}"] = sum(1 / math.log2(r + 1) for r, h in zip(ranks, hits) if h) / len(ranks)
            out[f"hr@{k}"] = sum(hits) / len(ranks)
            out[f"mrr@{k}"] = sum(1 / r for r, h in zip(ranks, hits) if h) / len(ranks)
        return out
