# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
r"""The paper's forgetting analysis (§4.4): Kendall's tau-a of the SID embedding rows after fine-tuning with
`sid_init=codebook` vs `sid_init=random`, same data and budget; plus the embedding-collapse spectra of the
fine-tuned item tables (docs/SID_QUALITY.md).

Commands (the CPU budget of `recipes/run_pipeline.sh`, 2,000 sampled users; the two fine-tunings differ only in
`--sid_init`, and the main job's own `finetune/model` is the codebook one):
    for init in codebook random; do
      accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/finetune.py \
          --config recipes/configs/beauty-smollm2-135m/finetune.yaml --run_dir outputs/beauty-smollm2-135m \
          --sid_init $init --output_dir outputs/beauty-smollm2-135m/finetune-$init
    done
    python recipes/forgetting.py --run_dir outputs/beauty-smollm2-135m \
        --codebook_model outputs/beauty-smollm2-135m/finetune-codebook/model \
        --random_model outputs/beauty-smollm2-135m/finetune-random/model --max_validation_users 2000

Writes `<run_dir>/forgetting/forgetting.json` (tau-a and concordant fraction per modality and init, with the tau-a
of the codebook SID rows before fine-tuning) and `spectra-<init>.png` (projected collaborative table, SID rows, fused
item tokens) beside it, or into `--output_dir`. Paper (tau-a): trained-codebook init 0.4436 (MMD), random init 0.0550.
"""

import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from trl import TrlParser

from mmesid_artifacts import Run, atomic_write_json, run_info
from mmesid_artifacts.recipe_args import document, run_dir_field
from modeling_mmesid import MMESIDForSequentialRecommendation
from tokenization.diagnostics import (
    kendall_tau_concordance,
    read_validation_pairs,
    save_spectrum_plot,
    spectrum_summary,
)


@dataclass
class ScriptArguments:
    codebook_model: str = field(metadata={"help": "Fine-tuned with sid_init=codebook (finetune/model)."})
    random_model: str = field(metadata={"help": "Fine-tuned with sid_init=random, same data and budget."})
    run_dir: str = run_dir_field("reads data/validation.parquet; writes forgetting/ (or --output_dir)")
    output_dir: str | None = field(default=None, metadata={"help": "Defaults to <run_dir>/forgetting."})
    max_validation_users: int | None = field(default=None, metadata={"help": "Sample N validation users (seed)."})
    seed: int = 0


@torch.no_grad()
def item_tables(model: MMESIDForSequentialRecommendation) -> dict[str, torch.Tensor]:
    """Per-item tables `(num_items + 1, ·)` of a fine-tuned model: raw inputs, SID rows (sum over levels of the
    item's SID-token embeddings, per modality), the projected collaborative table and the fused item tokens."""
    inner = model.model
    rows = model.model.sid_embedding_rows().float()  # (modalities, levels, codes, hidden)
    sids = inner.sids  # (num_items + 1, modalities, levels)
    items = torch.arange(1, model.config.num_items + 1, device=sids.device)
    tables = {}
    for i, m in enumerate(model.config.modalities):
        tables[f"{m}_input"] = inner.modality_embeddings(m).float()
        tables[f"{m}_sid"] = torch.stack([rows[i, lv][sids[:, i, lv]] for lv in range(rows.shape[1])]).sum(0)
        if m == "collaborative":
            projection = inner.modality_projections[m]
            tables["collaborative_projected"] = projection(inner.modality_embeddings(m).to(projection.weight.dtype))
    fused = inner.get_item_features(items).float()
    tables["item_tokens"] = torch.cat([fused.new_zeros(1, fused.shape[1]), fused])
    return {k: v.float().cpu() for k, v in tables.items()}


def main(args: ScriptArguments) -> dict:
    start = time.perf_counter()
    run = Run(args.run_dir)
    out = Path(args.output_dir or run.forgetting)
    histories, targets = read_validation_pairs(run.split_file("validation"))
    if args.max_validation_users is not None and args.max_validation_users < len(targets):
        keep = sorted(random.Random(args.seed).sample(range(len(targets)), args.max_validation_users))
        print(f"Kendall's tau on {len(keep):,} of {len(targets):,} validation users (seed {args.seed})")
        histories, targets = [histories[i] for i in keep], [targets[i] for i in keep]
    report = {"statistic": "Kendall tau-a = (concordant - discordant) / pairs; cosine; SID rows vs pre-trained table",
              "paper": {"codebook_init_mmd": 0.4436, "codebook_init_mse": 0.3714, "random_init": 0.0550},
              "kendall_tau": {}, "embedding_collapse": {}}
    for init, path in (("codebook", args.codebook_model), ("random", args.random_model)):
        model = MMESIDForSequentialRecommendation.from_pretrained(path).eval()
        if model.config.sid_init != init:
            raise ValueError(f"{path} was fine-tuned with sid_init={model.config.sid_init!r}, expected {init!r}.")
        tables = item_tables(model)
        report["kendall_tau"][init] = {
            m: {
                "tau_a": kendall_tau_concordance(histories, targets, tables[f"{m}_input"], tables[f"{m}_sid"]),
                "concordant_fraction": kendall_tau_concordance(
                    histories, targets, tables[f"{m}_input"], tables[f"{m}_sid"], statistic="fraction"
                ),
            }
            for m in model.config.modalities
        }
        collapse = {k: v[1:] for k, v in tables.items() if not k.endswith("_input")}
        report["embedding_collapse"][init] = {k: spectrum_summary(v) for k, v in collapse.items()}
        legend = save_spectrum_plot(collapse, out / f"spectra-{init}.png")
        report["embedding_collapse"][init]["plot"] = {"path": f"spectra-{init}.png", "legend": dict(legend)}
        for m, tau in report["kendall_tau"][init].items():
            print(f"sid_init={init:>8} · {m:>13}: Kendall tau-a {tau['tau_a']:.4f} · concordant {tau['concordant_fraction']:.4f}")
        for k, s in report["embedding_collapse"][init].items():
            if k != "plot":
                print(f"sid_init={init:>8} · {k:>24}: effective rank {s['effective_rank']:.1f} of {s['dim']} · "
                      f"90%/99% energy in {s['dims_90pct_energy']}/{s['dims_99pct_energy']} dims")
    report["num_users"] = sum(len(h) >= 2 for h in histories)
    report["run_info"] = run_info(time.perf_counter() - start, vars(args))
    atomic_write_json(out / "forgetting.json", report)
    print(f"→ {out / 'forgetting.json'}")
    return report


if __name__ == "__main__":
    main(*document(TrlParser((ScriptArguments,)), __doc__, __file__).parse_args_and_config())
