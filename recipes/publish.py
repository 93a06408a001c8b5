# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
r"""Publish a run to the Hugging Face Hub: the model (full weights + LoRA adapter), the dataset, the MM-RQ-VAE.

Builds `<run_dir>/hub/{model,dataset,rqvae}` (the exact repo folders, cards rendered from `hub_cards/`), checks
them (card metadata, no local path/token/pickle) and, without `--dry-run`, creates the repos and uploads the folders.
The token comes from `HF_TOKEN` or `hf auth login`, never from an argument. See `modeling_mmesid/hub.py`.
It needs no source checkout: with mmesid installed from its wheel, the card templates ship inside the package.

Commands:
    # build and check the folders only (offline)
    python recipes/publish.py --run_dir outputs/beauty-smollm2-135m --dry_run
    # publish under your namespace
    HF_TOKEN=... python recipes/publish.py --run_dir outputs/beauty-smollm2-135m \
        --model_repo_id you/mmesid-beauty --dataset_repo_id you/mmesid-beauty-data \
        --rqvae_repo_id you/mmesid-beauty-rqvae
    # the full-data run, its card showing evaluate.py's table (MME-SID beside the baselines, full test split)
    python recipes/publish.py --run_dir outputs/beauty-smollm2-135m --finetune_dir outputs/beauty-smollm2-135m/finetune-full \
        --eval_results outputs/beauty-smollm2-135m/eval-full/results.json --output_dir outputs/beauty-smollm2-135m/hub-full --dry_run
    # the main job's model with evaluate.py's table and recipes/ablation.py's table in its card
    python recipes/publish.py --run_dir outputs/beauty-smollm2-135m --eval_results outputs/beauty-smollm2-135m/eval/results.json \
        --ablation_results outputs/beauty-smollm2-135m/ablation/results.json --dry_run
    # a run without an MM-RQ-VAE folder
    python recipes/publish.py --run_dir outputs/<run> --components model dataset --dry_run
"""

from dataclasses import dataclass, field

from trl import TrlParser

from mmesid_artifacts.recipe_args import document, run_dir_field
from modeling_mmesid import hub


@dataclass
class ScriptArguments:
    run_dir: str = run_dir_field("reads data/, embeddings/, sids/, rqvae/, finetune/; writes hub/")
    model_repo_id: str = field(default="org/mmesid-beauty", metadata={"help": "Model repo `namespace/name`."})
    dataset_repo_id: str = field(default="org/mmesid-beauty-data", metadata={"help": "Dataset repo id."})
    rqvae_repo_id: str = field(default="org/mmesid-beauty-rqvae", metadata={"help": "MM-RQ-VAE repo id."})
    base_model_id: str = field(
        default=hub.DEFAULT_BASE_MODEL_ID,
        metadata={"help": "Hub id of the backbone (the adapter's `base_model_name_or_path`); never a local path."},
    )
    components: list[str] = field(default_factory=lambda: list(hub.COMPONENTS), metadata={"help": "Repos to build."})
    output_dir: str | None = field(default=None, metadata={"help": "Defaults to <run_dir>/hub."})
    training_config: str | None = field(
        default=None, metadata={"help": "Fine-tuning YAML; defaults to the `--config` recorded in results.json."}
    )
    dataset_license: str | None = field(
        default=None, metadata={"help": "Licence id of the dataset card; default `other` for Amazon data, else `unknown`."}
    )
    finetune_dir: str | None = field(
        default=None, metadata={"help": "Fine-tuning folder to publish; default <run_dir>/finetune."}
    )
    eval_results: str | None = field(
        default=None,
        metadata={"help": "An evaluate.py results.json whose table (MME-SID beside the baselines) the model card shows."},
    )
    ablation_results: str | None = field(
        default=None,
        metadata={"help": "A recipes/ablation.py results.json whose table the model card shows under Ablations."},
    )
    space_repo_id: str | None = field(
        default=None, metadata={"help": "A Space running the demo app (app.py) for this model; the model card links it."}
    )
    private: bool = field(default=False, metadata={"help": "Create private repos."})
    dry_run: bool = field(default=False, metadata={"help": "Build and check the folders; push nothing."})


def main(args: ScriptArguments) -> dict:
    folders = hub.build_repo_folders(
        args.run_dir, args.output_dir, model_repo_id=args.model_repo_id, dataset_repo_id=args.dataset_repo_id,
        rqvae_repo_id=args.rqvae_repo_id, base_model_id=args.base_model_id, components=args.components,
        training_config_path=args.training_config, dataset_license=args.dataset_license,
        finetune_dir=args.finetune_dir, evaluation_results=args.eval_results, ablation_results=args.ablation_results,
        space_repo_id=args.space_repo_id,
    )
    repo_ids = {"model": args.model_repo_id, "dataset": args.dataset_repo_id, "rqvae": args.rqvae_repo_id}
    for kind, folder in folders.items():
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        files = sum(1 for p in folder.rglob("*") if p.is_file())
        print(f"{kind:8s} {repo_ids[kind]:40s} {files:,} files · {size / 2**20:,.1f} MiB · {folder}")
    if args.dry_run:
        print("dry run: nothing pushed; the folders above are exactly what would be uploaded.")
        return folders
    placeholders = [r for r in repo_ids.values() if r.startswith("org/")]
    if placeholders:
        raise ValueError(f"Repo ids {placeholders} use the placeholder namespace `org`; pass your own "
                         "(`--model_repo_id you/mmesid-beauty` ...).")
    for kind, folder in folders.items():
        url = hub.push_folder(folder, repo_ids[kind], repo_type="dataset" if kind == "dataset" else "model",
                              private=args.private)
        print(f"pushed {kind}: {url}")
    return folders


if __name__ == "__main__":
    main(*document(TrlParser((ScriptArguments,)), __doc__, __file__).parse_args_and_config())
