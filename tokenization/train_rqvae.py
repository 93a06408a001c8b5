# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Training loop of MM-RQ-VAE (paper §3.2; official `MM-RQ-VAE/trainer_new_mm.py`); the embedding-file reader
`load_modality_tables` lives in `mmesid_artifacts.tables` (re-exported here)."""

import copy
import os
import resource
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers.utils import logging

from mmesid_artifacts.tables import load_modality_tables

from .configuration_mmrqvae import MMRQVAEConfig
from .diagnostics import codebook_usage
from .modeling_mmrqvae import MMRQVAE


logger = logging.get_logger(__name__)


@dataclass
class MMRQVAETrainingArguments:
    """
    Optimization settings of MM-RQ-VAE training.

    > Parameters that control the optimizer (official `main_new_MM.py`)

    Args:
        learning_rate (`float`, defaults to 2e-4): AdamW learning rate (official `--lr 2e-4`).
        weight_decay (`float`, defaults to 1e-4): AdamW weight decay (official default).
        batch_size (`int`, defaults to 1024): items per step (official `--batch_size 1024`).

    > Parameters that control the schedule

    Args:
        num_epochs (`int`, defaults to 20000): maximum epochs (official `--epochs 20000`).
        patience (`int`, defaults to 2000): stop after this many epochs without a lower training loss
            (official `--maxe 2000`); the lowest-loss weights are kept.
        seed (`int`, defaults to 42): seed of k-means init, shuffling and weights.

    > Parameters that control the codebook monitoring

    Args:
        low_perplexity_fraction (`float`, defaults to 0.1): warn when a level's code perplexity on the catalog is
            below this fraction of `codebook_size` (a collapsing level; 0 disables the warning): with
            `dead_code_restart`, only at the end of training, for the kept epoch (early epochs run below it while the
            restart revives the codes); without it, in the epoch it first falls below.
    """

    learning_rate: float = field(default=2e-4, metadata={"help": "AdamW learning rate (official --lr 2e-4)."})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay (official 1e-4)."})
    batch_size: int = field(default=1024, metadata={"help": "Items per step (official --batch_size 1024)."})
    num_epochs: int = field(default=20000, metadata={"help": "Maximum epochs (official 20000)."})
    patience: int = field(
        default=2000, metadata={"help": "Epochs without a lower training loss before stopping (official --maxe)."}
    )
    seed: int = field(default=42, metadata={"help": "Seed of k-means init, shuffling and weights."})
    low_perplexity_fraction: float = field(
        default=0.1, metadata={"help": "Warn when a level's perplexity < this × codebook_size (0 = never)."}
    )

    def __post_init__(self):
        for name in ("learning_rate", "batch_size", "num_epochs", "patience"):
            if getattr(self, name) <= 0:
                raise ValueError(f"`{name}` must be positive, got {getattr(self, name)}.")
        if not 0 <= self.low_perplexity_fraction <= 1:
            raise ValueError(f"`low_perplexity_fraction` must be in [0, 1], got {self.low_perplexity_fraction}.")


def save_model_atomically(model: MMRQVAE, output_dir: str | os.PathLike) -> None:
    """`save_pretrained` into a temporary folder next to `output_dir`, then `os.replace` each file into place."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output_dir, prefix=".tmp-") as tmp:
        model.save_pretrained(tmp)
        for name in os.listdir(tmp):
            os.replace(os.path.join(tmp, name), output_dir / name)


def _warn_low_perplexity(usage: dict[str, dict], threshold: float, epoch: int, warned: set) -> None:
    """Without the restart: warn once per (modality, level) when its perplexity first falls below `threshold` (again
    if it recovers). Nothing revives a code that no item picks, so the fall is for good."""
    for m, u in usage.items():
        for level, ppl in enumerate(u["perplexity"]):
            key = (m, level)
            if ppl < threshold and key not in warned:
                warned.add(key)
                logger.warning(
                    f"MM-RQ-VAE epoch {epoch}: {m} level {level + 1} perplexity {ppl:.1f} < {threshold:.1f} "
                    f"(utilization {u['utilization'][level]:.1%}): its codebook is collapsing and, with "
                    "`dead_code_restart=False`, codes no item picks never move again; set `dead_code_restart=True` "
                    "(docs/SID_QUALITY.md, \"Dead-code restart\")."
                )
            elif ppl >= threshold:
                warned.discard(key)


def _warn_low_final_perplexity(usage_history: dict, threshold: float, epoch: int) -> None:
    """With the restart: warn per (modality, level) whose perplexity at the kept `epoch` is still below `threshold`,
    after the restart had every epoch before it to revive the level's codes."""
    for m, per_epoch in usage_history["perplexity"].items():
        for level, ppl in enumerate(per_epoch[epoch]):
            if ppl < threshold:
                logger.warning(
                    f"MM-RQ-VAE: {m} level {level + 1} perplexity {ppl:.1f} < {threshold:.1f} (utilization "
                    f"{usage_history['utilization'][m][epoch][level]:.1%}) at the kept epoch {epoch}, although "
                    "`dead_code_restart` re-seeded its rarely used codes after every epoch: its items crowd onto few "
                    "codes (expect collisions). Train for more epochs (the restart acts once per epoch) or raise "
                    "`restart_usage_fraction`; `train_info.perplexity` in results.json has the trajectory "
                    "(docs/SID_QUALITY.md, \"Dead-code restart\")."
                )


def _reset_optimizer_rows(optimizer: torch.optim.Optimizer, codebooks: torch.nn.Parameter, dead: torch.Tensor) -> None:
    """Zero both AdamW moments (`exp_avg`, `exp_avg_sq`) of the re-seeded code vectors `dead` `(levels, codes)` of
    `codebooks` `(levels, codes, e_dim)`: old momentum no longer pushes a fresh code back towards where it was.

    The zeroed second moment also makes the fresh code's first steps long: the step count (shared by all rows) runs
    on, so its bias correction is ~1 and the next k steps divide by `sqrt((1 - beta2^k) g²)`: 3-6x a normal step
    while k ≤ 100 (1.9x at k = 300). That is kept on purpose: a re-seeded code reaches its new cluster sooner, and
    level 1 of the Beauty main job ends with a higher perplexity than with the second moment kept
    (docs/SID_QUALITY.md, "Optimizer state of re-seeded codes")."""
    if not dead.any():
        return
    state = optimizer.state.get(codebooks, {})
    for key in ("exp_avg", "exp_avg_sq"):
        if key in state:
            state[key][dead] = 0


def train_mmrqvae(
    config: MMRQVAEConfig,
    embeddings: dict[str, torch.Tensor],
    args: MMRQVAETrainingArguments | None = None,
    accelerator=None,
    output_dir: str | os.PathLike | None = None,
) -> tuple[MMRQVAE, dict]:
    """Train MM-RQ-VAE on item embeddings and return the lowest-training-loss model and a history.

    Args:
        config (`MMRQVAEConfig`): model configuration; `input_dims` must match the embeddings.
        embeddings (`dict[str, torch.Tensor]`, each `(num_items, dim)`): one row per item, padding row already removed.
        args (`MMRQVAETrainingArguments`, *optional*): optimization settings.
        accelerator (`accelerate.Accelerator`, *optional*): device placement and gradient sync; one is created
            when omitted.
        output_dir (`str`, *optional*): when given, the best model is saved there (atomically) at the end.

    Returns:
        `(model, history)`; `history` holds `best_loss`, `best_epoch`, `epochs_run`, `stopped_early`, per-epoch
        mean losses and, per modality, per-epoch per-level `utilization`, `perplexity` (of the nearest-code IDs of
        the whole catalog at the end of the epoch, before any restart) and `restarted_codes`.

    The codebooks are k-means-initialized on the whole catalog before the first step (official: the catalog is the
    first batch). Early stopping watches the mean training loss per epoch (official; there is no validation set).
    With `config.dead_code_restart`, after each epoch (and after the best-checkpoint snapshot, so the kept weights
    are those the epoch's loss and usage were measured on) every code that fewer than `max(1,
    config.restart_usage_fraction × num_items / codebook_size)` items are assigned to (as training assigns them:
    Sinkhorn on the last level) is re-seeded and its AdamW moments zeroed (`MMRQVAE.restart_dead_codes`).
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    args = args or MMRQVAETrainingArguments()
    accelerator = accelerator or Accelerator(cpu=not torch.cuda.is_available())
    set_seed(args.seed)
    for m in config.modalities:
        if m not in embeddings:
            raise ValueError(f"No embeddings for modality {m!r}; got {sorted(embeddings)}.")
    num_items = {e.shape[0] for e in embeddings.values()}
    if len(num_items) != 1:
        raise ValueError(f"Every modality needs one row per item; got row counts {sorted(num_items)}.")
    num_items = num_items.pop()
    data = {m: embeddings[m].float() for m in config.modalities}

    model = MMRQVAE(config)
    model.initialize_codebooks(data)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    model, optimizer = accelerator.prepare(model, optimizer)
    device = accelerator.device
    data = {m: t.to(device) for m, t in data.items()}
    # Each process takes its own slice of a shared permutation (same seed everywhere).
    rank, world = accelerator.process_index, accelerator.num_processes

    best_loss, best_epoch, best_state, since_best = float("inf"), -1, None, 0
    loss_keys = ("loss", "reconstruction_loss", "vq_loss", "alignment_loss")
    history = {k: [] for k in loss_keys}
    usage_history = {key: {m: [] for m in config.modalities} for key in ("utilization", "perplexity", "restarted_codes")}
    warned = set()
    stopped_early = False
    start = time.perf_counter()
    bar = tqdm(range(args.num_epochs), desc="MM-RQ-VAE", disable=not accelerator.is_local_main_process)
    generator = torch.Generator().manual_seed(args.seed)
    # A generator of its own, so restarts never shift the shuffling stream (restart off = the official run).
    restart_generator = torch.Generator().manual_seed(args.seed + 1)
    for epoch in bar:
        perm = torch.randperm(num_items, generator=generator)
        sums = {k: 0.0 for k in loss_keys}
        steps = 0
        for begin in range(0, num_items, args.batch_size * world):
            idx = perm[begin : begin + args.batch_size * world][rank::world].to(device)
            if idx.numel() < 2:  # MMD and InfoNCE need pairs
                continue
            out = model({m: t[idx] for m, t in data.items()})
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(out.loss)
            optimizer.step()
            for k in loss_keys:
                sums[k] += float(out[k].detach())
            steps += 1
        means = {k: accelerator.reduce(torch.tensor(v / steps, device=device), "mean").item() for k, v in sums.items()}
        for k, v in means.items():
            history[k].append(v)
        unwrapped = accelerator.unwrap_model(model)
        # Every process holds the whole catalog and identical weights, so usage and restarts agree across ranks.
        usage = {m: codebook_usage(c, config.codebook_size) for m, c in unwrapped.get_codes(data).items()}
        for m, u in usage.items():
            usage_history["utilization"][m].append(u["utilization"])
            usage_history["perplexity"][m].append(u["perplexity"])
        if not config.dead_code_restart:
            _warn_low_perplexity(usage, config.codebook_size * args.low_perplexity_fraction, epoch, warned)
        if means["loss"] < best_loss:
            best_loss, best_epoch, since_best = means["loss"], epoch, 0
            best_state = copy.deepcopy(unwrapped.state_dict())
        else:
            since_best += 1
        restarted = {m: [0] * config.num_levels for m in config.modalities}
        if config.dead_code_restart:
            masks = unwrapped.restart_dead_codes(data, restart_generator, args.batch_size)
            for m, per_level in masks.items():
                _reset_optimizer_rows(optimizer, unwrapped.quantizers[m].codebooks, torch.stack(per_level))
                restarted[m] = [int(mask.sum()) for mask in per_level]
        for m in config.modalities:
            usage_history["restarted_codes"][m].append(restarted[m])
        first = {m[:4]: f"{u['utilization'][0]:.0%}/{u['perplexity'][0]:.0f}" for m, u in usage.items()}
        bar.set_postfix(loss=f"{means['loss']:.4f}", best=f"{best_loss:.4f}@{best_epoch}", **{f"L1 {k}": v for k, v in first.items()})
        logger.info(
            f"epoch {epoch}: " + ", ".join(f"{k} {v:.5f}" for k, v in means.items()) + " · "
            + " · ".join(
                f"{m} utilization " + "/".join(f"{x:.2f}" for x in u["utilization"])
                + " perplexity " + "/".join(f"{x:.1f}" for x in u["perplexity"])
                + " restarted " + "/".join(str(x) for x in restarted[m])
                for m, u in usage.items()
            )
        )
        if since_best >= args.patience:
            stopped_early = True
            break

    if config.dead_code_restart:
        _warn_low_final_perplexity(usage_history, config.codebook_size * args.low_perplexity_fraction, best_epoch)
    model = accelerator.unwrap_model(model)
    model.load_state_dict(best_state)
    model.eval()
    history.update(
        **usage_history,
        best_loss=best_loss,
        best_epoch=best_epoch,
        epochs_run=len(history["loss"]),
        stopped_early=stopped_early,
        train_seconds=time.perf_counter() - start,
        num_items=num_items,
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        peak_memory_mb=(
            torch.cuda.max_memory_allocated() / 2**20
            if torch.cuda.is_available()
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak RSS of the process (Linux: KiB)
        ),
        training_args=asdict(args),
    )
    if output_dir is not None and accelerator.is_main_process:
        save_model_atomically(model, output_dir)
    return model, history


__all__ = ["MMRQVAETrainingArguments", "load_modality_tables", "save_model_atomically", "train_mmrqvae"]
