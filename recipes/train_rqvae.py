# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Stage 1b: train MM-RQ-VAE on the item embeddings → `outputs/<run>/rqvae/{config.json, model.safetensors, results.json}`.

Commands:
    # CPU default (SmolLM2-135M-sized codes, a few minutes on 2 cores)
    accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/train_rqvae.py \
        --config recipes/configs/beauty-smollm2-135m/rqvae.yaml
    python recipes/train_rqvae.py --config recipes/configs/beauty-smollm2-135m/rqvae.yaml      # same, no launcher
    # MSE ablation (paper Table 5) into another folder
    python recipes/train_rqvae.py --config recipes/configs/beauty-smollm2-135m/rqvae.yaml \
        --recon_loss mse --output_dir outputs/beauty-smollm2-135m/rqvae-mse
    # the paper's settings on a GPU
    accelerate launch --config_file recipes/accelerate_configs/single_gpu.yaml recipes/train_rqvae.py \
        --config recipes/configs/beauty-llama3-8b/rqvae.yaml

Reads `outputs/<run>/embeddings/<modality>.safetensors` (row 0 = padding, excluded from training). Then run
`recipes/assign_sids.py` for the semantic IDs, codebooks and diagnostics.
"""

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from accelerate import Accelerator
from trl import TrlParser

from mmesid_artifacts import Run, atomic_write_json, load_modality_tables, run_info
from tokenization.configuration_mmrqvae import MMRQVAEConfig
from tokenization.diagnostics import codebook_usage, collision_rate
from tokenization.train_rqvae import MMRQVAETrainingArguments, train_mmrqvae


@dataclass
class ScriptArguments:
    run: str = field(default="beauty-smollm2-135m", metadata={"help": "Run name: stages live in outputs/<run>/."})
    modalities: list[str] = field(
        default_factory=lambda: ["collaborative", "text"], metadata={"help": "Branches (paper: all three)."}
    )
    embeddings_dir: str | None = field(default=None, metadata={"help": "Defaults to outputs/<run>/embeddings."})
    output_dir: str | None = field(default=None, metadata={"help": "Defaults to outputs/<run>/rqvae."})


@dataclass
class ModelArguments:
    """MM-RQ-VAE sizes and losses; see `MMRQVAEConfig` for each field's source."""

    hidden_dims: list[int] = field(default_factory=lambda: [512, 512], metadata={"help": "Encoder hidden sizes."})
    e_dim: int = field(default=576, metadata={"help": "Code-vector size (576 = SmolLM2-135M hidden size)."})
    num_levels: int = field(default=4, metadata={"help": "Residual levels (paper 4)."})
    codebook_size: int = field(default=256, metadata={"help": "Codes per level (paper 256)."})
    kmeans_method: str = field(default="constrained", metadata={"help": "constrained or plain."})
    kmeans_iters: int = field(default=10, metadata={"help": "k-means iterations of the init."})
    sinkhorn_epsilon: float = field(default=0.003, metadata={"help": "Last-level Sinkhorn epsilon; 0 = off."})
    sinkhorn_iters: int = field(default=50, metadata={"help": "Sinkhorn iterations."})
    dead_code_restart: bool = field(
        default=True, metadata={"help": "Re-seed unused codes after each epoch (docs/SID_QUALITY.md); off = official."}
    )
    recon_loss: str = field(default="mmd", metadata={"help": "mmd (paper) or mse (ablation)."})
    mmd_bandwidth_multipliers: list[float] = field(default_factory=lambda: [0.5], metadata={"help": "Kernel α."})
    beta: float = field(default=0.25, metadata={"help": "Commitment weight (official accidental 0.01)."})
    recon_weight: float = field(default=3.0, metadata={"help": "Reconstruction weight (official 3)."})
    vq_weight: float = field(default=1.0, metadata={"help": "VQ loss weight (official 1)."})
    alignment_weight: float = field(default=0.01, metadata={"help": "InfoNCE weight (official 0.01)."})
    alignment_temperature: float = field(default=0.1, metadata={"help": "InfoNCE temperature (official 0.1)."})
    alignment_anchor: str = field(default="collaborative", metadata={"help": "Anchor modality of InfoNCE."})


def main(script_args: ScriptArguments, training_args: MMRQVAETrainingArguments, model_args: ModelArguments):
    start = time.perf_counter()
    accelerator = Accelerator()
    run = Run.named(script_args.run)
    embeddings_dir = Path(script_args.embeddings_dir or run.embeddings)
    output_dir = Path(script_args.output_dir or run.rqvae)

    tables, metas = load_modality_tables(embeddings_dir, script_args.modalities)
    items = {m: t[1:] for m, t in tables.items()}  # row 0 is padding: not an item
    config = MMRQVAEConfig(
        modalities=script_args.modalities,
        input_dims={m: t.shape[1] for m, t in items.items()},
        **asdict(model_args),
    )
    num_items = next(iter(items.values())).shape[0]
    steps = -(-num_items // training_args.batch_size)
    accelerator.print(
        f"items {num_items:,} · modalities " + ", ".join(f"{m} {config.input_dims[m]}-d" for m in config.modalities)
        + f" · {config.num_levels} levels × {config.codebook_size} codes × {config.e_dim}-d · recon {config.recon_loss}"
        + f"\nsteps per epoch {steps:,} (batch {training_args.batch_size:,}) · up to {training_args.num_epochs:,} "
        + f"epochs, patience {training_args.patience:,} · → {output_dir}"
    )

    model, history = train_mmrqvae(config, items, training_args, accelerator=accelerator, output_dir=output_dir)
    if not accelerator.is_main_process:
        return
    codes = model.get_codes({m: t.to(model.device) for m, t in items.items()})
    collisions = {m: collision_rate(c.cpu()) for m, c in codes.items()}
    accelerator.print(
        f"best loss {history['best_loss']:.5f} at epoch {history['best_epoch']} of {history['epochs_run']} "
        f"({'early stop' if history['stopped_early'] else 'epoch limit'}) · {history['train_seconds']:.0f}s · "
        f"trainable params {history['trainable_params']:,} · peak memory {history['peak_memory_mb']:,.0f} MB\n"
        "collision rate " + " · ".join(f"{m} {r:.4f}" for m, r in collisions.items())
    )
    for m, c in codes.items():
        usage = codebook_usage(c.cpu(), config.codebook_size)
        accelerator.print(
            f"{m}: utilization per level " + "/".join(f"{u:.1%}" for u in usage["utilization"])
            + " · perplexity " + "/".join(f"{p:.1f}" for p in usage["perplexity"])
            + f" · dead-code restart {'on' if config.dead_code_restart else 'off'}"
        )
    atomic_write_json(
        output_dir / run.results_file("rqvae").name,
        {
            "run_info": run_info(time.perf_counter() - start, {**vars(script_args), **asdict(model_args)}),
            "train_info": {**history, "collision_rate": collisions},
            "meta_info": {"embeddings": {m: {k: v for k, v in meta.items() if k != "mask"} for m, meta in metas.items()}},
        },
    )


if __name__ == "__main__":
    main(*TrlParser((ScriptArguments, MMRQVAETrainingArguments, ModelArguments)).parse_args_and_config())
