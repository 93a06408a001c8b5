# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Non-learned baselines for the full-ranking evaluator: most-popular and last-item transition.

Both are fit on the training prefixes only (`train_sequences.parquet`), so validation and test targets never leak.
Each returns a *scorer* `(histories [B, L] right-padded with 0, lengths [B]) -> scores [B, num_items + 1]`.
"""

from collections.abc import Sequence

import numpy as np
import torch

from mmesid_artifacts.data_files import item_counts


class PopularityScorer:
    """Score every item by its number of training interactions (the same for every user)."""

    def __init__(self, item_counts: np.ndarray | torch.Tensor):
        self.scores = torch.as_tensor(np.asarray(item_counts), dtype=torch.float32)

    @classmethod
    def fit(cls, train_sequences: Sequence[Sequence[int]], num_items: int) -> "PopularityScorer":
        return cls(item_counts(train_sequences, num_items))

    def __call__(self, histories: torch.LongTensor, lengths: torch.LongTensor) -> torch.Tensor:
        return self.scores.to(histories.device).expand(histories.shape[0], -1)


class TransitionScorer:
    """First-order item-to-item transitions with a popularity back-off.

    `score(j | history) = T[last, j] + pop(j) / (max pop + 1)`, where `T[a, j]` counts how often `j` directly
    follows `a` in the training prefixes and `last` is the most recent history item. The popularity term is below
    one, so it only orders items with equal transition counts (and everything for an empty history).
    """

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, counts: np.ndarray, popularity: np.ndarray):
        self.indptr, self.indices, self.counts = indptr, indices, counts
        pop = torch.as_tensor(popularity, dtype=torch.float64)
        self.backoff = (pop / (pop.max() + 1)).float()

    @classmethod
    def fit(cls, train_sequences: Sequence[Sequence[int]], num_items: int) -> "TransitionScorer":
        src, dst = [], []
        train_sequences = list(train_sequences)
        popularity = item_counts(train_sequences, num_items)
        for seq in train_sequences:
            arr = np.asarray(seq, dtype=np.int64)
            src.append(arr[:-1])
            dst.append(arr[1:])
        src = np.concatenate(src) if src else np.zeros(0, np.int64)
        dst = np.concatenate(dst) if dst else np.zeros(0, np.int64)
        # CSR by source item: unique (src, dst) pairs with their counts
        keys, counts = np.unique(src * (num_items + 1) + dst, return_counts=True)
        rows, cols = keys // (num_items + 1), keys % (num_items + 1)
        indptr = np.zeros(num_items + 2, dtype=np.int64)
        np.add.at(indptr, rows + 1, 1)
        return cls(np.cumsum(indptr), cols, counts.astype(np.float32), popularity)

    def __call__(self, histories: torch.LongTensor, lengths: torch.LongTensor) -> torch.Tensor:
        batch = histories.shape[0]
        scores = self.backoff.expand(batch, -1).clone()
        last = histories.gather(1, (lengths - 1).clamp(min=0)[:, None])[:, 0].cpu().numpy()
        lengths_np = lengths.cpu().numpy()
        for row in range(batch):
            if lengths_np[row] == 0:
                continue
            a, b = self.indptr[last[row]], self.indptr[last[row] + 1]
            cols = torch.from_numpy(self.indices[a:b])
            scores[row, cols] += torch.from_numpy(self.counts[a:b])
        return scores.to(histories.device)


def baseline_scorers(data_dir, num_items: int, sasrec=None) -> dict:
    """The baselines every accuracy table prints beside MME-SID, fit on a prepared run's `data/` (`data_dir`):
    `{"popularity", "transition"}`, and `"sasrec"` when a SASRec scorer is given
    (`tokenization.sasrec.sasrec_scorer(SASRecModel.from_pretrained(...))`, built by the caller: `tokenization`
    sits above this package)."""
    from mmesid_artifacts import load_item_counts, load_train_sequences

    scorers = {
        "popularity": PopularityScorer(load_item_counts(data_dir, num_items)),
        "transition": TransitionScorer.fit(load_train_sequences(data_dir), num_items),
    }
    if sasrec is not None:
        scorers["sasrec"] = sasrec
    return scorers
