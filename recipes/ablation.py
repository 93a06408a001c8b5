# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
r"""The ablation table of Stage 2 (paper Table 4-5): the full model and one component taken away at a time, each
trained on the same users in the same order for the same number of samples and tested on the same sampled test users
(docs/LEARNING.md).

Every variant is the finetune config plus overrides (`ABLATIONS`), trained through `recipes/learning_curve.py`'s
machinery with one budget: a seeded shuffle of the training users read sequentially until the budget is reached, one
cosine schedule, then full ranking of `--test_users` sampled test users. Resumable at variant granularity (a finished
variant in `results.json` is skipped).

Commands:
    # the MSE ablation's semantic IDs first (the main job's RQ-VAE settings with the MSE reconstruction loss)
    accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/train_rqvae.py \
        --config recipes/configs/beauty-smollm2-135m/rqvae.yaml --num_epochs 40 --recon_loss mse \
        --output_dir outputs/beauty-smollm2-135m/rqvae-mse
    python recipes/assign_sids.py --run_dir outputs/beauty-smollm2-135m --max_validation_users 2000 \
        --rqvae_dir outputs/beauty-smollm2-135m/rqvae-mse --output_dir outputs/beauty-smollm2-135m/sids-mse
    # the table at the main job's budget (2 cores: docs/RESULTS.md says how long)
    python recipes/ablation.py --run_dir outputs/beauty-smollm2-135m --budget 13700 --test_users 3000 \
        --doc docs/RESULTS.md
    # redraw the table from results.json
    python recipes/ablation.py --run_dir outputs/beauty-smollm2-135m --report_only

Reads the run's `data/`, `embeddings/`, `sids/` (and `--mse_sids_dir`) and writes `<run_dir>/ablation/` (or
`--output_dir`): `results.json` (every variant's test metrics with the protocol) and `ablation.md`.
"""

import json
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from learning_curve import run_variant, training_args_for, variant_parser

from mmesid_artifacts import Run, atomic_write_json, write_between_markers
from modeling_mmesid import evaluation
from modeling_mmesid.hub import ablation_table


MSE_SIDS = "<mse_sids_dir>"  # placeholder for --mse_sids_dir in the overrides below
# name -> (overrides of the script / training arguments, what it takes away); the first is the reference row
ABLATIONS = {
    "full": ({}, "the full model (paper configuration, library defaults)"),
    "no_sids": ({"item_token_sids": False}, "item tokens without SID code embeddings (projected raw embeddings only)"),
    "no_text": ({"modalities": ["collaborative"]}, "collaborative modality only (no text embedding, SIDs or head)"),
    "mse_sids": ({"sids_dir": MSE_SIDS}, "SIDs of an MM-RQ-VAE trained with MSE instead of MMD reconstruction"),
    "random_sid_init": ({"sid_init": "random"}, "SID embeddings from the backbone's random init, not the codebooks"),
    "equal_fusion": ({"fusion": "equal"}, "equal instead of frequency-aware fusion weights"),
}


def report(output_dir: Path, doc: str | None = None, doc_block: str = "ablation") -> str:
    """`ablation.md` from `results.json` (and the same table into `doc` between its `doc_block` markers)."""
    table = ablation_table(json.loads((output_dir / "results.json").read_text()))
    (output_dir / "ablation.md").write_text(table + "\n")
    if doc:
        write_between_markers(Path(doc), doc_block, table)
    return table


def main():
    parser = variant_parser(__doc__, "ablation/")
    parser.add_argument("--output_dir", default=None, help="Where the table goes (default: <run_dir>/ablation).")
    parser.add_argument("--budget", type=int, default=13700,
                        help="Training samples of every variant (default: about the main job's 2,000 users).")
    parser.add_argument("--test_users", type=int, default=3000, help="Sampled test users (seed + 2), all variants.")
    parser.add_argument("--variants", nargs="+", default=list(ABLATIONS), choices=list(ABLATIONS))
    parser.add_argument("--mse_sids_dir", default=None,
                        help="Semantic IDs of the MSE MM-RQ-VAE for `mse_sids` (default: <run_dir>/sids-mse, written "
                             "by assign_sids.py --output_dir; the commands above).")
    parser.add_argument("--seed", type=int, default=42, help="Seed of the user shuffle, the test sample and training.")
    parser.add_argument("--report_only", action="store_true", help="Only rewrite ablation.md (and --doc).")
    parser.add_argument("--doc", default=None,
                        help="Also write the table into this Markdown file between `<!-- ablation:start -->` and "
                             "`<!-- ablation:end -->` (or --doc_block's markers).")
    parser.add_argument("--doc_block", default="ablation", help="Marker name of --doc's block.")
    args, extra = parser.parse_known_args()
    args.extra = extra  # further finetune arguments, e.g. --per_device_train_batch_size 2
    run = Run(args.run_dir)
    output_dir = args.curve_dir = Path(args.output_dir or run.ablation)  # training_args_for writes under curve_dir
    if args.report_only:
        print(report(output_dir, args.doc, args.doc_block))
        return
    mse_sids_dir = Path(args.mse_sids_dir) if args.mse_sids_dir else run.root / "sids-mse"
    if "mse_sids" in args.variants and not (mse_sids_dir / "sids.json").is_file():
        raise SystemExit(f"--mse_sids_dir {mse_sids_dir}: no sids.json. Train the MSE MM-RQ-VAE and assign its SIDs "
                         "first (`recipes/ablation.py --help` gives the commands), or leave out `mse_sids`.")
    path = output_dir / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {"variants": {}}
    setting = {"budget": args.budget, "test_users": args.test_users, "seed": args.seed, "config": args.config,
               "extra": extra}
    if results.get("setting", setting) != setting:
        raise SystemExit(f"{path}: written with {results['setting']}, asked for {setting}; every row of the table must "
                         "share one setting (pass another --output_dir, or delete the file).")
    results["setting"] = setting
    for name in args.variants:
        if results["variants"].get(name, {}).get("finished"):
            print(f"[{name}] done, skipped")
            continue
        overrides, description = ABLATIONS[name]
        overrides = {k: str(mse_sids_dir) if v == MSE_SIDS else v for k, v in overrides.items()}
        start = time.time()
        points = []
        stats, num_test = run_variant(name, training_args_for(args, args.config), [args.budget], args.test_users,
                                      args.seed, points.append, overrides=overrides, split="test")
        metrics = points[-1]
        metrics["wall_seconds"] = round(time.time() - start, 1)
        results["protocol"] = (
            evaluation.protocol_line(stats["num_items"], num_test, "test", sampled=(args.seed + 2, stats["num_test"]))
            + f"; training: the same {args.seed}-shuffled"
            f" users for every variant, one cosine schedule over {args.budget:,} samples"
        )
        results["variants"][name] = {"description": description, "overrides": overrides, "metrics": metrics,
                                     "finished": True}
        atomic_write_json(path, results)
        print(f"[{name}] nDCG@10 {metrics['ndcg@10']:.4f} ({metrics['samples_seen']:,} samples, "
              f"{metrics['wall_seconds']:.0f} s)", flush=True)
    print(report(output_dir, args.doc, args.doc_block))


if __name__ == "__main__":
    main()
