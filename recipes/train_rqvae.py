# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
r"""Stage 1b: train MM-RQ-VAE on the item embeddings → `<run_dir>/rqvae/{config.json, model.safetensors,
results.json}`.

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

Reads `<run_dir>/embeddings/<modality>.safetensors` (row 0 = padding, excluded from training). Then run
`recipes/assign_sids.py` for the semantic IDs, codebooks and diagnostics.
"""

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from accelerate import Accelerator
from trl import TrlParser

from mmesid_artifacts import Run, atomic_write_json, load_modality_tables, run_info
from mmesid_artifacts.recipe_args import document, library_default, run_dir_field
from tokenization.configuration_mmrqvae import MMRQVAEConfig
from tokenization.diagnostics import codebook_usage, collision_rate
from tokenization.train_rqvae import MMRQVAETrainingArguments, train_mmrqvae


# Defaults of the arguments: the library's (`MMRQVAEConfig`, the paper's official run); the YAML sets a run's.
_LIBRARY = MMRQVAEConfig()


@dataclass
class ScriptArguments:
    run_dir: str = run_dir_field("reads embeddings/; writes rqvae/")
    modalities: list[str] = library_default(_LIBRARY, "modalities", "Branches (paper: all three; CPU YAML: no image).")
    embeddings_dir: str | None = field(default=None, metadata={"help": "Defaults to <run_dir>/embeddings."})
    output_dir: str | None = field(default=None, metadata={"help": "Defaults to <run_dir>/rqvae."})


@dataclass
class ModelArguments:
    """MM-RQ-VAE sizes and losses. Each default is `MMRQVAEConfig`'s (the paper's official run; see its docstring for
    each field's source); `recipes/configs/<run>/rqvae.yaml` sets the values a run uses (CPU: `e_dim: 576`)."""

    hidden_dims: list[int] = library_default(_LIBRARY, "hidden_dims", "Encoder hidden sizes (CPU YAML [512, 512]).")
    e_dim: int = library_default(_LIBRARY, "e_dim", "Code-vector size = the LLM's hidden size (CPU YAML 576).")
    num_levels: int = library_default(_LIBRARY, "num_levels", "Residual levels.")
    codebook_size: int = library_default(_LIBRARY, "codebook_size", "Codes per level.")
    kmeans_method: str = library_default(_LIBRARY, "kmeans_method", "constrained or plain.")
    kmeans_iters: int = library_default(_LIBRARY, "kmeans_iters", "k-means iterations of the init.")
    sinkhorn_epsilon: float = library_default(_LIBRARY, "sinkhorn_epsilon", "Last-level Sinkhorn epsilon; 0 = off.")
    sinkhorn_iters: int = library_default(_LIBRARY, "sinkhorn_iters", "Sinkhorn iterations.")
    dead_code_restart: bool = library_default(
        _LIBRARY, "dead_code_restart",
        "Whether unused codes are re-seeded after each epoch (docs/SID_QUALITY.md); `--no_dead_code_restart` = official.",
    )
    restart_usage_fraction: float = library_default(
        _LIBRARY, "restart_usage_fraction",
        "Re-seed codes picked by fewer than this fraction of a balanced share of the items (0 = unused codes only).",
    )
    normalize_latents: bool = library_default(
        _LIBRARY, "normalize_latents", "L2-normalize encoder outputs (× sqrt(e_dim)) before quantization."
    )
    recon_loss: str = library_default(_LIBRARY, "recon_loss", "mmd (paper) or mse (ablation).")
    mmd_bandwidth_multipliers: list[float] = library_default(_LIBRARY, "mmd_bandwidth_multipliers", "Kernel α.")
    beta: float = library_default(_LIBRARY, "beta", "Commitment weight (official accidental 0.01).")
    recon_weight: float = library_default(_LIBRARY, "recon_weight", "Reconstruction weight.")
    vq_weight: float = library_default(_LIBRARY, "vq_weight", "VQ loss weight.")
    alignment_weight: float = library_default(_LIBRARY, "alignment_weight", "InfoNCE weight.")
    alignment_temperature: float = library_default(_LIBRARY, "alignment_temperature", "InfoNCE temperature.")
    alignment_anchor: str = library_default(_LIBRARY, "alignment_anchor", "Anchor modality of InfoNCE.")


def main(script_args: ScriptArguments, training_args: MMRQVAETrainingArguments, model_args: ModelArguments):
    start = time.perf_counter()
    accelerator = Accelerator()
    run = Run(script_args.run_dir)
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
    parser = document(TrlParser((ScriptArguments, MMRQVAETrainingArguments, ModelArguments)), __doc__, __file__)
    main(*parser.parse_args_and_config())
