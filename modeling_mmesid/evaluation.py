# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Full-ranking evaluation (paper §4.1; RecBole `full_sort_predict` + `_full_sort_batch_eval`).

The model never knows the protocol: a *scorer* gives a score to every item, and this module masks the padding item
and the user's history, ranks the target among all remaining items and averages nDCG/HR/MRR@K over users.

Rank of the target (1 = best): `1 + #{j : s_j > s_t} + #{j : s_j = s_t, j < t}` over unmasked items `j`, i.e. the
position the target takes in a stable descending sort by score in which ties go to the lower item id. This is exact
(no top-K truncation), deterministic, and neither optimistic nor pessimistic about ties in a data-dependent way.
A target that also appears in the history is masked like every history item and therefore counts as a miss, as in
RecBole.

Metrics, with one target per user and `r` its rank:
- `hr@k = 1[r <= k]` (= Recall@k with a single relevant item);
- `ndcg@k = 1[r <= k] / log2(r + 1)` (the ideal DCG is 1);
- `mrr@k = 1[r <= k] / r`.
"""

import json
import math
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch


DEFAULT_KS = (5, 10, 20)
Scorer = Callable[[torch.LongTensor, torch.LongTensor], torch.Tensor]


def target_ranks(
    scores: torch.Tensor, targets: torch.LongTensor, histories: torch.LongTensor | None = None
) -> torch.LongTensor:
    """Ranks (1-based) of `targets` among all items after masking padding and history items.

    Args:
        scores (`torch.Tensor` of shape `(batch_size, num_items + 1)`): higher is better; column 0 is padding.
        targets (`torch.LongTensor` of shape `(batch_size,)`): the held-out item of each user.
        histories (`torch.LongTensor` of shape `(batch_size, history_length)`, *optional*):
            items to mask, right-padded with 0.
    """
    if scores.dim() != 2 or scores.shape[0] != targets.shape[0]:
        raise ValueError(
            f"`scores` must have shape (batch_size, num_items + 1) with batch_size {targets.shape[0]}, "
            f"got {tuple(scores.shape)}."
        )
    if bool((targets <= 0).any()) or bool((targets >= scores.shape[1]).any()):
        raise ValueError(f"target item ids must lie in 1..{scores.shape[1] - 1}, got {targets.tolist()}.")
    scores = scores.float().clone()
    scores[:, 0] = -math.inf
    if histories is not None and histories.numel():
        scores.scatter_(1, histories, -math.inf)  # padding 0 is already -inf
    target_scores = scores.gather(1, targets[:, None])  # (batch, 1)
    greater = (scores > target_scores).sum(1)
    ids = torch.arange(scores.shape[1], device=scores.device)[None, :]
    ties_before = ((scores == target_scores) & (ids < targets[:, None])).sum(1)
    ranks = 1 + greater + ties_before
    # a masked target (-inf) ranks behind every unmasked item
    masked = torch.isneginf(target_scores[:, 0])
    if bool(masked.any()):
        ranks = torch.where(masked, torch.full_like(ranks, scores.shape[1]), ranks)
    return ranks


def metrics_from_ranks(ranks: Sequence[int] | np.ndarray | torch.Tensor, ks: Sequence[int] = DEFAULT_KS) -> dict:
    """Average nDCG/HR/MRR@k over users from 1-based target ranks (formulas in the module docstring)."""
    r = torch.as_tensor(ranks, dtype=torch.float64)
    if r.numel() == 0:
        raise ValueError("No users to evaluate.")
    out = {}
    for k in ks:
        if k < 1:
            raise ValueError(f"`k` must be a positive integer, got {k}.")
        hit = (r <= k).double()
        out[f"ndcg@{k}"] = float((hit / torch.log2(r + 1)).mean())
        out[f"hr@{k}"] = float(hit.mean())
        out[f"mrr@{k}"] = float((hit / r).mean())
    out["num_users"] = int(r.numel())
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
def rank_split(
    scorer: Scorer,
    split,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> np.ndarray:
    """The target rank of every user of `split` (in split order), scoring users in length-sorted batches."""
    histories, targets = _as_columns(split)
    order = np.argsort([len(h) for h in histories], kind="stable")  # length bucketing: less padding
    ranks = np.zeros(len(targets), dtype=np.int64)
    batches = range(0, len(order), batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="ranking", unit="batch")
    for start in batches:
        idx = order[start : start + batch_size]
        hist, lengths = pad_histories([histories[i] for i in idx], device)
        tgt = torch.as_tensor([targets[i] for i in idx], dtype=torch.long, device=device)
        scores = scorer(hist, lengths)
        ranks[idx] = target_ranks(scores, tgt, hist).cpu().numpy()
    return ranks


def evaluate_scorer(
    scorer: Scorer,
    split,
    num_items: int | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict:
    """nDCG/HR/MRR@k of `scorer` on a split (full ranking, padding and history masked), averaged over users."""
    ranks = rank_split(scorer, split, batch_size=batch_size, device=device, progress=progress)
    out = metrics_from_ranks(ranks, ks)
    if num_items is not None:
        out["num_items"] = int(num_items)
    return out


def protocol_line(num_items: int, num_users: int, split: str = "test") -> str:
    return (
        f"{split}: leave-one-out, full ranking over {num_items:,} items, history items and padding masked, "
        f"ties to the lower item id, {num_users:,} users"
    )


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


def run_info(wall_time_s: float | None = None, config: dict | None = None) -> dict:
    """Provenance block for `results.json`: command, git commit, versions, device, wall time."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("transformers", "peft", "trl", "accelerate", "datasets"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            pass
    info = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "git_commit": commit or None,
        "meta_info": versions,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "created_unix": int(time.time()),
    }
    if wall_time_s is not None:
        info["wall_time_s"] = round(wall_time_s, 2)
    if config is not None:
        info["config"] = config
    return info


def write_results(path: str | Path, results: dict[str, dict], protocol: str, **extra) -> None:
    """Write the metrics table as JSON (atomically) next to the printed one."""
    from .data import atomic_write_json

    atomic_write_json(path, {"protocol": protocol, "results": results, **extra})


def read_results(path: str | Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))
