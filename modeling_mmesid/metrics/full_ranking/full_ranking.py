# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""`evaluate` metric module: nDCG / HR / MRR @ K for next-item recommendation with one target per user.

It computes through the evaluator's own functions (`modeling_mmesid.evaluation`: `target_ranks`,
`ranks_from_recommendations`, `metrics_from_ranks`), so its numbers are the evaluator's; the formulas and the
handling of ties, misses and NaN scores are in that module's docstring. Two input forms, chosen by `config_name`:

- `"default"`: `predictions` are ranked item-id lists (best first, history already removed, 0 = no item) and
  `references` the held-out items. A ranked list has already broken any ties; a target not in its list is a miss.
- `"scores"`: `predictions` hold one score per item id (index 0 is padding and never ranked), `references` the
  held-out items. Tied scores are averaged, not broken: each metric is its expectation over the positions the target
  can take among the items scoring the same. `histories` (one item list per user) removes those items from the
  candidates, the paper's protocol.

Load it offline from the installed package:

    import evaluate
    from modeling_mmesid.metrics import FULL_RANKING_METRIC_PATH
    metric = evaluate.load(FULL_RANKING_METRIC_PATH)
    metric.compute(predictions=[[3, 7, 1], [5, 2, 9]], references=[7, 4], ks=[1, 2, 3])
    scores = evaluate.load(FULL_RANKING_METRIC_PATH, "scores")
    scores.compute(predictions=[[0.0, 0.9, 0.5, 0.5]], references=[2], histories=[[1]], ks=[1, 2])  # hr@1 = 0.5
"""

import datasets
import evaluate
import torch

from modeling_mmesid.evaluation import (
    DEFAULT_KS,
    metrics_from_ranks,
    pad_histories,
    ranks_from_recommendations,
    target_ranks,
)


_CITATION = """@inproceedings{wang2025mmesid,
  title={Empowering Large Language Model for Sequential Recommendation via Multimodal Embeddings and Semantic IDs},
  author={Wang, Yuhao and others}, booktitle={CIKM}, year={2025}}"""
_PREDICTIONS = {
    "default": ("ranked item-id lists, best first", datasets.Value("int64")),
    "scores": ("one score per item id (index 0 = padding)", datasets.Value("float32")),
}


class FullRanking(evaluate.Metric):
    def _info(self):
        if self.config_name not in _PREDICTIONS:
            raise ValueError(f"`config_name` must be one of {sorted(_PREDICTIONS)}, got {self.config_name!r}.")
        what, value = _PREDICTIONS[self.config_name]
        return evaluate.MetricInfo(
            description=__doc__,
            citation=_CITATION,
            inputs_description=f"predictions: {what} per user; references: one target item id each; ks: cut-offs"
            + ("; histories: item ids to remove from each user's candidates" if self.config_name == "scores" else ""),
            features=datasets.Features(
                {"predictions": datasets.Sequence(value), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, ks=DEFAULT_KS, histories=None):
        if len(predictions) == 0:
            raise ValueError("No users to evaluate.")
        targets = torch.as_tensor(references, dtype=torch.long)
        if self.config_name == "scores":
            scores = torch.as_tensor([list(row) for row in predictions], dtype=torch.float32)
            masked = pad_histories(histories)[0] if histories is not None else None
            ranks = target_ranks(scores, targets, masked, mask_history=histories is not None)
        else:
            width = max(1, *(len(row) for row in predictions))
            recommended = torch.zeros(len(predictions), width, dtype=torch.long)  # 0 = no item
            for i, row in enumerate(predictions):
                recommended[i, : len(row)] = torch.as_tensor(list(row), dtype=torch.long)
            ranks = ranks_from_recommendations(recommended, targets)
        return metrics_from_ranks(ranks, ks)
