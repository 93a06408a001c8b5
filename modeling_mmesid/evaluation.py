# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Full-ranking evaluation (paper §4.1; RecBole `full_sort_predict` + `_full_sort_batch_eval`).

The model never knows the protocol: a *scorer* gives a score to every item, and this module removes the padding item
and (by default, the paper's protocol) the user's history from the candidates, ranks the target among the remaining
items and averages nDCG/HR/MRR@K over users. `mask_history=False` keeps history items as candidates, as RecBole's
full-sort evaluation of sequential models does, so its numbers can be printed beside ours. Scores are compared in
float32, whatever dtype the scorer returns.

Ties are averaged, not broken: with `h` the number of candidates scoring above the target and `t` the number of other
candidates scoring the same, the target's position is uniform over `first = h + 1 .. last = h + t + 1` (a random
tie-break), and every metric is its exact expectation over those positions. Breaking ties by item id is not neutral:
ids follow first appearance, which tracks popularity. `target_ranks` returns the block `(first, last)`; without ties
`first == last` is the rank.

A miss is explicit: `first = last = MISS_RANK` (`+inf`, so ranks are float64), which scores 0 at every k, whatever
the size of the catalog (a finite stand-in such as "number of candidates" or `num_items + 1` is a hit once k reaches
it, in a small catalog).

Non-finite scores: NaN is worse than every number, `-inf` included. A target scored NaN is a miss (no credit for ties
with other NaNs), and a NaN candidate never outranks or ties a non-NaN target, so a diverged (all-NaN) scorer gets 0,
never 1, at every k. `+inf` and `-inf` are ordinary values: they tie with equal infinities. `evaluate_scorer` reports
the number of users with a NaN among their candidates' scores as `nan_users`, and a warning is logged.

A target that is also in the history is, with history masking, not a candidate and counts as a miss, as in RecBole.

Metrics, with one target per user, `r` its position and `E` the mean over `r = first .. last`:
- `hr@k = E 1[r <= k]` (= Recall@k with a single relevant item): the fraction of the tie positions within the top k;
- `ndcg@k = E 1[r <= k] / log2(r + 1)` (the ideal DCG is 1);
- `mrr@k = E 1[r <= k] / r`.
Without ties these are the usual `1[r <= k]`, `1[r <= k] / log2(r + 1)` and `1[r <= k] / r`.
"""

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from transformers.utils import logging

# `results.json` (provenance block, write, read) is the run folder's, shared by every stage: re-exported here
from mmesid_artifacts.results import read_results, run_info, write_results  # noqa: F401

from .recommender_mmesid import length_sorted_batches


logger = logging.get_logger(__name__)


DEFAULT_KS = (5, 10, 20)
MISS_RANK = math.inf  # the rank of a target that is not ranked (masked, NaN-scored, not in a list): 0 at every k
Scorer = Callable[[torch.LongTensor, torch.LongTensor], torch.Tensor]


def _rank_blocks(
    scores: torch.Tensor, targets: torch.LongTensor, histories: torch.LongTensor | None, mask_history: bool
) -> tuple[torch.LongTensor, torch.BoolTensor]:
    """`target_ranks` plus, per user, whether a candidate's score (the target's included) is NaN."""
    if scores.dim() != 2 or scores.shape[0] != targets.shape[0]:
        raise ValueError(
            f"`scores` must have shape (batch_size, num_items + 1) with batch_size {targets.shape[0]}, "
            f"got {tuple(scores.shape)}."
        )
    if bool((targets <= 0).any()) or bool((targets >= scores.shape[1]).any()):
        raise ValueError(f"target item ids must lie in 1..{scores.shape[1] - 1}, got {targets.tolist()}.")
    scores = scores.to(torch.float32)  # ranking comparisons in float32 whatever the scorer's dtype
    candidates = torch.ones_like(scores, dtype=torch.bool)  # (batch, num_items + 1)
    candidates[:, 0] = False
    if mask_history and histories is not None and histories.numel():
        candidates.scatter_(1, histories.to(scores.device), False)  # padding 0 is already out
    is_nan = torch.isnan(scores)
    has_nan = (is_nan & candidates).any(1)
    comparable = candidates & ~is_nan
    target_scores = scores.gather(1, targets[:, None])  # (batch, 1)
    higher = (comparable & (scores > target_scores)).sum(1)
    tied = (comparable & (scores == target_scores)).sum(1)  # the target itself included
    first, last = (1 + higher).double(), (higher + tied).double()
    # a miss (rank +inf): a NaN target (no credit for ties with other NaNs), or a masked target (in the history: no
    # candidate)
    nan_target = torch.isnan(target_scores[:, 0])
    masked = ~candidates.gather(1, targets[:, None])[:, 0]
    miss = torch.full_like(first, MISS_RANK)
    missed = nan_target | masked
    first, last = torch.where(missed, miss, first), torch.where(missed, miss, last)
    return torch.stack([first, last], dim=1), has_nan


def target_ranks(
    scores: torch.Tensor,
    targets: torch.LongTensor,
    histories: torch.LongTensor | None = None,
    mask_history: bool = True,
) -> torch.LongTensor:
    """The positions (1-based) the target can take among the candidates: its tie block `(first, last)`.

    `first = 1 + #higher`, `last = #higher + #tied` (the target included); a random tie-break puts the target at any of
    `first..last` with equal probability, and `metrics_from_ranks` averages each metric over them. NaN scores are
    worse than every number; a target scored NaN or masked is a miss, `first = last = MISS_RANK` (module docstring).

    Args:
        scores (`torch.Tensor` of shape `(batch_size, num_items + 1)`): higher is better; column 0 is padding.
        targets (`torch.LongTensor` of shape `(batch_size,)`): the held-out item of each user.
        histories (`torch.LongTensor` of shape `(batch_size, history_length)`, *optional*):
            items to mask, right-padded with 0.
        mask_history (`bool`, *optional*, defaults to `True`):
            Remove history items from the candidates (the paper's protocol); `False` keeps them (RecBole's).

    Returns:
        `torch.DoubleTensor` of shape `(batch_size, 2)`: `first` and `last` per user (`first == last` without ties),
        integers, or `+inf` for a miss.
    """
    return _rank_blocks(scores, targets, histories, mask_history)[0]


def metrics_from_ranks(ranks: Sequence | np.ndarray | torch.Tensor, ks: Sequence[int] = DEFAULT_KS) -> dict:
    """Average nDCG/HR/MRR@k over users (formulas in the module docstring).

    Args:
        ranks (`(num_users,)` or `(num_users, 2)`): 1-based ranks, or tie blocks `(first, last)` from
            `target_ranks`; each metric is then averaged over the positions `first..last`. A miss is `+inf`
            (`MISS_RANK`, both ends of its block) and scores 0 at every k.
    """
    r = torch.as_tensor(ranks, dtype=torch.float64)
    if r.numel() == 0:
        raise ValueError("No users to evaluate.")
    if r.dim() == 1:
        r = torch.stack([r, r], dim=1)
    if r.dim() != 2 or r.shape[1] != 2:
        raise ValueError(f"`ranks` must have shape (num_users,) or (num_users, 2), got {tuple(r.shape)}.")
    first, last = r[:, 0:1], r[:, 1:2]  # (users, 1)
    if bool(r.isnan().any()) or bool((first < 1).any()) or bool((last < first).any()):
        raise ValueError("`ranks` must be >= 1, and each tie block's `last` must be >= its `first`.")
    missed = torch.isinf(first[:, 0])
    if bool((missed != torch.isinf(last[:, 0])).any()):
        raise ValueError("A miss must be `+inf` at both ends of its tie block.")
    for k in ks:
        if k < 1:
            raise ValueError(f"`k` must be a positive integer, got {k}.")
    size = torch.where(missed, 1.0, last[:, 0] - first[:, 0] + 1)  # a miss: no position inside the top k
    positions = torch.arange(1, max(ks) + 1, dtype=torch.float64)[None]  # (1, max_k)
    inside = ((positions >= first) & (positions <= last)).double()  # (users, max_k): tie positions in the top max_k
    out = {}
    for k in ks:
        hit, pos = inside[:, :k], positions[:, :k]
        out[f"ndcg@{k}"] = float(((hit / torch.log2(pos + 1)).sum(1) / size).mean())
        out[f"hr@{k}"] = float((hit.sum(1) / size).mean())
        out[f"mrr@{k}"] = float(((hit / pos).sum(1) / size).mean())
    out["num_users"] = int(r.shape[0])
    return out


def _as_columns(split) -> tuple[list[list[int]], list[int]]:
    """Histories and targets from an Arrow table, a `datasets.Dataset`, or a dict of lists."""
    if hasattr(split, "column_names") and hasattr(split, "column"):  # pyarrow.Table
        return split.column("history").to_pylist(), split.column("target").to_pylist()
    return list(split["history"]), list(split["target"])


def pad_histories(histories: Sequence[Sequence[int]], device=None) -> tuple[torch.LongTensor, torch.LongTensor]:
    """Right-pad with 0 into `(batch, max_len)`; returns `(histories, lengths)`."""
    lengths = torch.tensor([len(h) for h in histories], dtype=torch.long)
    width = max(int(lengths.max()) if len(histories) else 0, 1)
    out = torch.zeros(len(histories), width, dtype=torch.long)
    for row, items in enumerate(histories):
        if items:
            out[row, : len(items)] = torch.as_tensor(items, dtype=torch.long)
    return out.to(device), lengths.to(device)


@torch.no_grad()
def _rank_split(
    scorer: Scorer, split, batch_size: int, device: str | torch.device, progress: bool, mask_history: bool
) -> tuple[np.ndarray, int]:
    histories, targets = _as_columns(split)
    ranks = np.zeros((len(targets), 2), dtype=np.float64)
    nan_users = 0
    batches = length_sorted_batches([len(h) for h in histories], batch_size)  # less padding
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="ranking", unit="batch")
    for idx in batches:
        hist, lengths = pad_histories([histories[i] for i in idx], device)
        tgt = torch.as_tensor([targets[i] for i in idx], dtype=torch.long, device=device)
        blocks, has_nan = _rank_blocks(scorer(hist, lengths), tgt, hist, mask_history)
        ranks[idx] = blocks.cpu().numpy()
        nan_users += int(has_nan.sum())
    if nan_users:
        logger.warning(f"{nan_users:,} of {len(targets):,} users have NaN scores; NaN ranks below every number.")
    return ranks, nan_users


def rank_split(
    scorer: Scorer,
    split,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    progress: bool = False,
    mask_history: bool = True,
) -> np.ndarray:
    """The target's tie block `(first, last)` (see `target_ranks`) for every user of `split`, in split order, as an
    `(num_users, 2)` float64 array (`+inf` for a miss); users are scored in length-sorted batches."""
    return _rank_split(scorer, split, batch_size, device, progress, mask_history)[0]


def evaluate_scorer(
    scorer: Scorer,
    split,
    num_items: int | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    progress: bool = False,
    mask_history: bool = True,
) -> dict:
    """nDCG/HR/MRR@k of `scorer` on a split (full ranking, padding masked, history masked unless
    `mask_history=False`), averaged over users, plus `num_users` and `nan_users` (users with a NaN score)."""
    ranks, nan_users = _rank_split(scorer, split, batch_size, device, progress, mask_history)
    out = metrics_from_ranks(ranks, ks)
    out["nan_users"] = nan_users
    if num_items is not None:
        out["num_items"] = int(num_items)
    return out


def ranks_from_recommendations(recommended: torch.LongTensor, targets: torch.LongTensor) -> torch.DoubleTensor:
    """Tie blocks `(first, last)` (as `target_ranks`) from ranked lists: the target's 1-based position among the items
    of its row of `recommended` `(batch_size, k)`, or `MISS_RANK` (`+inf`, 0 at every k) where the list does not hold
    it. Padding (0) is no item: never a hit, and not counted in a later item's position. Shape `(batch_size, 2)`."""
    if recommended.dim() != 2 or recommended.shape[0] != targets.shape[0]:
        raise ValueError(
            f"`recommended` must have shape (batch_size, k) with batch_size {targets.shape[0]}, "
            f"got {tuple(recommended.shape)}."
        )
    items = recommended > 0
    hits = (recommended == targets.to(recommended.device)[:, None]) & items
    first_hit = hits.long().argmax(1, keepdim=True)
    position = items.long().cumsum(1).gather(1, first_hit)[:, 0].double()  # items up to the hit, padding skipped
    rank = torch.where(hits.any(1), position, torch.full_like(position, MISS_RANK))
    return torch.stack([rank, rank], dim=1)


def evaluate_recommender(
    recommender: Callable[[list[list[int]]], torch.LongTensor],
    split,
    num_items: int,
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 256,
) -> dict:
    """nDCG/HR/MRR@k of a *recommender* that returns ranked lists, `recommender(histories) -> (batch_size, k)` item
    ids best first (e.g. beam search over generative IDs, `MMESIDRecommender.recommend(..., method="generate")`), on
    the same users and with the same metrics as `evaluate_scorer`. A target missing from its list is a miss (rank beyond every
    cut-off); the recommender excludes history items itself under the masked protocol. `k` must be at least
    `max(ks)`, or the metrics at the larger cut-offs would be undercounted."""
    histories, targets = _as_columns(split)
    ranks = np.zeros((len(targets), 2), dtype=np.float64)
    for idx in length_sorted_batches([len(h) for h in histories], batch_size):
        recommended = recommender([list(histories[i]) for i in idx])
        if recommended.shape[1] < max(ks):
            raise ValueError(
                f"The recommender returned {recommended.shape[1]} items per user, fewer than the largest cut-off "
                f"{max(ks)}; ask it for at least `max(ks)` items."
            )
        tgt = torch.as_tensor([targets[i] for i in idx], dtype=torch.long)
        ranks[idx] = ranks_from_recommendations(recommended.cpu(), tgt).numpy()
    out = metrics_from_ranks(ranks, ks)
    out["num_items"] = int(num_items)
    return out


def protocol_line(num_items: int, num_users: int, split: str = "test", mask_history: bool = True,
                  sampled: tuple[int, int] | None = None) -> str:
    """The protocol printed under every table and stored in every `results.json`. `sampled=(seed, population)` says
    how the users were drawn when they are fewer than the split's `population`."""
    masked = "history items and padding masked" if mask_history else "padding masked, history items kept (RecBole)"
    line = (
        f"{split}: leave-one-out, full ranking over {num_items:,} items, {masked}, "
        f"ties averaged (expected metric over the tied positions), NaN scores ranked last, {num_users:,} users"
    )
    if sampled is not None and num_users < sampled[1]:
        line += f" (sampled with seed {sampled[0]} from {sampled[1]:,})"
    return line


def format_table(results: dict[str, dict], ks: Sequence[int] = DEFAULT_KS, protocol: str | None = None) -> str:
    """A fixed-width metrics table, one row per model, with the protocol line under it."""
    cols = [f"ndcg@{k}" for k in ks] + [f"hr@{k}" for k in ks] + [f"mrr@{k}" for k in ks]
    name_w = max([len("model")] + [len(n) for n in results])
    header = f"{'model':<{name_w}} " + " ".join(f"{c:>8}" for c in cols)
    lines = [header, "-" * len(header)]
    for name, metrics in results.items():
        lines.append(f"{name:<{name_w}} " + " ".join(f"{metrics.get(c, float('nan')):>8.4f}" for c in cols))
    if protocol:
        lines.append(f"protocol: {protocol}")
    return "\n".join(lines)
