# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Quality of semantic IDs: collisions, codebook usage, reconstruction, distance structure (Kendall's tau), rank.

All functions take tensors (no model objects) except `reconstruction_error`, so they also score IDs made elsewhere.
"""

import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from .modeling_mmrqvae import MMRQVAE


def collision_rate(ids: torch.LongTensor) -> float:
    """Share of items whose whole ID is shared with at least one other item.

    Args:
        ids (`torch.LongTensor` of shape `(num_items, ...)`): one ID per row (e.g. `(num_items, num_levels)` for
            one modality, `(num_items, num_modalities, num_levels)` for the combined ID); no padding row.

    Example: IDs `[1,2], [1,2], [3,4]` → 2 of 3 items collide → 0.667.
    """
    flat = ids.reshape(ids.shape[0], -1)
    _, inverse, counts = torch.unique(flat, dim=0, return_inverse=True, return_counts=True)
    return float((counts[inverse] > 1).float().mean())


def codebook_usage(codes: torch.LongTensor, codebook_size: int) -> dict[str, list[float]]:
    """Per level: utilization (share of the `codebook_size` codes used at least once) and perplexity
    `exp(-Σ_c p_c log p_c)` of the code distribution (= `codebook_size` when perfectly balanced).

    Args:
        codes (`torch.LongTensor` of shape `(num_items, num_levels)`).
    """
    utilization, perplexity = [], []
    for level in range(codes.shape[1]):
        counts = torch.bincount(codes[:, level], minlength=codebook_size).double()
        p = counts / counts.sum()
        entropy = -(p[p > 0] * p[p > 0].log()).sum()
        utilization.append(float((counts > 0).double().mean()))
        perplexity.append(float(entropy.exp()))
    return {"utilization": utilization, "perplexity": perplexity}


def _pairwise_concordance(
    a: torch.Tensor, b: torch.Tensor, lengths: torch.LongTensor, statistic: str = "fraction"
) -> torch.Tensor:
    """Per row, over pairs i < j (within `lengths`): the fraction ordered the same way by `a` and `b`
    (`"fraction"`), or Kendall's tau-a `(concordant - discordant) / pairs` (`"tau"`)."""
    n = a.shape[1]
    valid = torch.arange(n, device=a.device).unsqueeze(0) < lengths.unsqueeze(1)  # (users, n)
    upper = torch.ones(n, n, dtype=torch.bool, device=a.device).triu(1)
    pair_mask = valid.unsqueeze(2) & valid.unsqueeze(1) & upper  # (users, n, n)
    sign_a = torch.sign(a.unsqueeze(2) - a.unsqueeze(1))
    sign_b = torch.sign(b.unsqueeze(2) - b.unsqueeze(1))
    concordant = ((sign_a * sign_b) > 0) & pair_mask
    pairs = pair_mask.sum((1, 2)).clamp_min(1).double()
    if statistic == "tau":
        discordant = ((sign_a * sign_b) < 0) & pair_mask
        return (concordant.sum((1, 2)) - discordant.sum((1, 2))).double() / pairs
    return concordant.sum((1, 2)).double() / pairs


def kendall_tau_concordance(
    histories: list[list[int]],
    targets: list[int],
    pretrained: torch.Tensor,
    derived: torch.Tensor,
    similarity: str = "cosine",
    batch_size: int = 512,
    statistic: str = "fraction",
) -> float:
    """The paper's Kendall's-tau concordance of SID embeddings (paper §4.4, Table 6).

    For each user, rank the history items by similarity to the target item under the `pretrained` embeddings and
    under the `derived` (code-derived, e.g. sum of code vectors over levels) embeddings; the score is the fraction of
    history-item pairs ordered the same way (concordant) by both. Ties in either ranking count as not concordant.
    Users with fewer than two history items are skipped; the result is the mean over the remaining users.

    Args:
        histories (`list[list[int]]`): item ids (1-based) per user.
        targets (`list[int]`): the item each history is compared with.
        pretrained, derived (`torch.Tensor` of shape `(num_items + 1, dim)`): per-item tables, row = item id.
        similarity (`str`): `"cosine"` or `"dot"`.
        statistic (`str`): `"fraction"` (share of concordant pairs, METHOD.md's reading; 0.5 for random tables) or
            `"tau"` (Kendall's tau-a, (concordant − discordant) / pairs; 0 for random tables).

    NOTE: the paper's random-init value 0.0550 fits tau-a (≈ 0 for unrelated rankings) rather than the concordant
    fraction (≈ 0.5), so `semantic_id_diagnostics` reports both.

    Paper values: RQ-VAE with MSE 0.3714, with MMD 0.4436, SIDs learned from random init 0.0550.
    """
    if statistic not in ("fraction", "tau"):
        raise ValueError(f"`statistic` must be 'fraction' or 'tau', got {statistic!r}.")
    if similarity not in ("cosine", "dot"):
        raise ValueError(f"`similarity` must be 'cosine' or 'dot', got {similarity!r}.")
    if len(histories) != len(targets):
        raise ValueError(f"{len(histories)} histories but {len(targets)} targets.")
    if similarity == "cosine":
        pretrained, derived = F.normalize(pretrained.double(), dim=-1), F.normalize(derived.double(), dim=-1)
    else:
        pretrained, derived = pretrained.double(), derived.double()
    keep = [i for i, h in enumerate(histories) if len(h) >= 2]
    scores = []
    for begin in range(0, len(keep), batch_size):
        chunk = keep[begin : begin + batch_size]
        lengths = torch.tensor([len(histories[i]) for i in chunk])
        padded = torch.zeros(len(chunk), int(lengths.max()), dtype=torch.long)
        for row, i in enumerate(chunk):
            padded[row, : len(histories[i])] = torch.as_tensor(histories[i])
        tgt = torch.as_tensor([targets[i] for i in chunk])
        sim_a = (pretrained[padded] * pretrained[tgt].unsqueeze(1)).sum(-1)  # (users, length)
        sim_b = (derived[padded] * derived[tgt].unsqueeze(1)).sum(-1)
        scores.append(_pairwise_concordance(sim_a, sim_b, lengths, statistic))
    if not scores:
        return float("nan")
    return float(torch.cat(scores).mean())


def spectrum_summary(table: torch.Tensor) -> dict[str, float]:
    """Singular-value summary of an item table `(num_items, dim)`: effective rank `exp(H(σ/Σσ))` (Roy & Vetterli,
    2007) and the number of directions holding 90% / 99% of the energy Σσ² (the paper's embedding-collapse check)."""
    s = torch.linalg.svdvals(table.double() - table.double().mean(0))
    p = s / s.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    energy = (s**2).cumsum(0) / (s**2).sum()
    return {
        "effective_rank": float(entropy.exp()),
        "dims_90pct_energy": int((energy < 0.9).sum()) + 1,
        "dims_99pct_energy": int((energy < 0.99).sum()) + 1,
        "dim": int(table.shape[1]),
    }


@torch.no_grad()
def reconstruction_error(model: MMRQVAE, embeddings: dict[str, torch.Tensor], batch_size: int = 4096) -> dict:
    """Per modality, the MSE and the mean cosine similarity of decoder(argmin codes) vs input, over items
    (`embeddings` without padding row)."""
    model.eval()
    device = next(model.parameters()).device
    n = next(iter(embeddings.values())).shape[0]
    sq = {m: 0.0 for m in model.config.modalities}
    cos = {m: 0.0 for m in model.config.modalities}
    for begin in range(0, n, batch_size):
        batch = {m: embeddings[m][begin : begin + batch_size].float().to(device) for m in model.config.modalities}
        out = model(batch)
        for m, x in batch.items():
            sq[m] += float(((out.reconstructions[m] - x) ** 2).mean(-1).sum())
            cos[m] += float(F.cosine_similarity(out.reconstructions[m], x, dim=-1).sum())
    return {m: {"mse": sq[m] / n, "cosine": cos[m] / n} for m in model.config.modalities}


def read_validation_pairs(path: str | os.PathLike) -> tuple[list[list[int]], list[int]]:
    """Validation (history, target) pairs from `data/validation.parquet` (columns `history`, `target`) or from a raw
    `user item item ...` file such as `Beauty_new.txt` (history = items[:-2], target = items[-2])."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; pass `data/validation.parquet` or the raw interaction file.")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path, columns=["history", "target"]).to_pydict()
        return [list(h) for h in table["history"]], list(table["target"])
    from modeling_mmesid.data import leave_one_out, read_sequence_file  # the one reader of sequence files

    validation = leave_one_out(read_sequence_file(path)).validation
    return [history for _, history, _ in validation], [target for _, _, target in validation]


def semantic_id_diagnostics(
    sids: torch.LongTensor,
    codebooks: dict[str, torch.Tensor],
    modalities: list[str],
    embeddings: dict[str, torch.Tensor] | None = None,
    histories: list[list[int]] | None = None,
    targets: list[int] | None = None,
    seed: int = 0,
) -> dict:
    """All diagnostics of one SID table.

    Args:
        sids (`torch.LongTensor` of shape `(num_items + 1, num_modalities, num_levels)`): row 0 = padding.
        codebooks (`dict[str, torch.Tensor]`, each `(num_levels, codebook_size, e_dim)`).
        embeddings (`dict[str, torch.Tensor]`, each `(num_items + 1, dim)`, *optional*): the pre-trained tables,
            for Kendall's tau and the spectrum of the inputs.
        histories, targets (*optional*): validation pairs for Kendall's tau.

    Returns a JSON-ready dict: `collision_rate` per modality and `combined`, `codebook` usage per modality,
    `kendall_tau` per modality (code-derived vs pre-trained, plus a random-table baseline), `spectrum`.
    """
    items = sids[1:]
    report = {"num_items": int(items.shape[0]), "collision_rate": {}, "codebook": {}, "kendall_tau": {}, "spectrum": {}}
    for i, m in enumerate(modalities):
        report["collision_rate"][m] = collision_rate(items[:, i])
        report["codebook"][m] = codebook_usage(items[:, i], codebooks[m].shape[1])
    report["collision_rate"]["combined"] = collision_rate(items)
    generator = torch.Generator().manual_seed(seed)
    for i, m in enumerate(modalities):
        books = codebooks[m].float()  # (levels, codes, e_dim)
        derived = torch.stack([books[level][sids[:, i, level]] for level in range(books.shape[0])]).sum(0)
        report["spectrum"][f"{m}_codes"] = spectrum_summary(derived[1:])
        if embeddings is None or m not in embeddings:
            continue
        report["spectrum"][f"{m}_input"] = spectrum_summary(embeddings[m][1:].float())
        if histories is not None and targets is not None:
            random_table = torch.randn(derived.shape, generator=generator)
            report["kendall_tau"][m] = {
                "codes": kendall_tau_concordance(histories, targets, embeddings[m], derived),
                "random": kendall_tau_concordance(histories, targets, embeddings[m], random_table),
                "codes_tau_a": kendall_tau_concordance(histories, targets, embeddings[m], derived, statistic="tau"),
                "random_tau_a": kendall_tau_concordance(
                    histories, targets, embeddings[m], random_table, statistic="tau"
                ),
                "num_users": sum(len(h) >= 2 for h in histories),
                "similarity": "cosine",
            }
    return report


def format_diagnostics(report: dict) -> str:
    """A plain-text table of `semantic_id_diagnostics` for the console."""
    lines = [f"items {report['num_items']:,}"]
    for m, rate in report["collision_rate"].items():
        line = f"{m:>13}: collision {rate:.4f}"
        if m in report["codebook"]:
            usage = report["codebook"][m]
            line += " · utilization " + "/".join(f"{u:.2f}" for u in usage["utilization"])
            line += " · perplexity " + "/".join(f"{p:.1f}" for p in usage["perplexity"])
        if m in report["kendall_tau"]:
            tau = report["kendall_tau"][m]
            line += (
                f" · concordant fraction {tau['codes']:.4f} (random {tau['random']:.4f})"
                f" · tau-a {tau['codes_tau_a']:.4f} (random {tau['random_tau_a']:.4f})"
            )
        lines.append(line)
    for name, s in report["spectrum"].items():
        if not math.isnan(s["effective_rank"]):
            lines.append(
                f"{name:>22}: effective rank {s['effective_rank']:.1f} of {s['dim']} · "
                f"90%/99% energy in {s['dims_90pct_energy']}/{s['dims_99pct_energy']} dims"
            )
    return "\n".join(lines)


__all__ = [
    "codebook_usage",
    "collision_rate",
    "format_diagnostics",
    "kendall_tau_concordance",
    "read_validation_pairs",
    "reconstruction_error",
    "semantic_id_diagnostics",
    "spectrum_summary",
]
