# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
r"""Compare semantic-ID runs: one table row per run and modality from each `sids/diagnostics.json` (assign_sids.py)
and the `results.json` of the MM-RQ-VAE it coded with (docs/SID_QUALITY.md).

Commands:
    # an MMD and an MSE MM-RQ-VAE, each early-stopped, coded and compared
    for loss in mmd mse; do
      accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/train_rqvae.py \
          --config recipes/configs/beauty-smollm2-135m/rqvae.yaml --recon_loss $loss \
          --output_dir outputs/beauty-smollm2-135m/rqvae-$loss
      python recipes/assign_sids.py --rqvae_dir outputs/beauty-smollm2-135m/rqvae-$loss \
          --output_dir outputs/beauty-smollm2-135m/sids-$loss --max_validation_users 2000
    done
    python recipes/compare_sids.py --run_dir outputs/beauty-smollm2-135m --sids_dirs sids-mmd sids-mse \
        --names mmd mse --output outputs/beauty-smollm2-135m/sids-comparison.json \
        --doc docs/SID_QUALITY.md --doc_block mmd-vs-mse

Prints the table; `--output` writes it with the inputs' paths as JSON; `--doc` writes it between
`<!-- <doc_block>:start -->` and `<!-- <doc_block>:end -->` of that file.
"""

from dataclasses import dataclass, field
from pathlib import Path

from trl import TrlParser

from mmesid_artifacts import Run, atomic_write_json, read_json
from mmesid_artifacts.recipe_args import document, run_dir_field
from mmesid_artifacts.results import write_between_markers
from tokenization.diagnostics import comparison_table


@dataclass
class CompareArguments:
    run_dir: str = run_dir_field("reads the --sids_dirs under it and the MM-RQ-VAE folders they name")
    sids_dirs: list[str] = field(
        default_factory=lambda: ["sids"],
        metadata={"help": "Folders written by assign_sids.py, relative to --run_dir (or absolute)."},
    )
    rqvae_dirs: list[str] | None = field(
        default=None,
        metadata={"help": "The MM-RQ-VAE folder of each, relative to --run_dir (default: the one its run recorded)."},
    )
    names: list[str] | None = field(default=None, metadata={"help": "Row names, one per folder (default: folder)."})
    output: str | None = field(default=None, metadata={"help": "Write the table and its inputs as JSON here."})
    doc: str | None = field(default=None, metadata={"help": "Write the table between the --doc_block markers here."})
    doc_block: str = field(default="sid-comparison", metadata={"help": "Name of the --doc markers."})


def read_run(sids_dir: Path, rqvae_dir: Path | None = None) -> tuple[dict, dict, Path]:
    """`(diagnostics, rqvae results, rqvae dir)` of one assign_sids.py folder; the MM-RQ-VAE folder is `rqvae_dir`,
    else the one its run recorded (`--rqvae_dir`, else `<run_dir>/rqvae`)."""
    names = Run(".")  # file names only: a folder of another run keeps them
    diagnostics = read_json(sids_dir / names.diagnostics_file.name, "Semantic-ID diagnostics", "run recipes/assign_sids.py")
    config = (diagnostics.get("run_info") or {}).get("config") or {}
    rqvae_dir = rqvae_dir or Path(config.get("rqvae_dir") or Run(config.get("run_dir", ".")).rqvae)
    results = read_json(rqvae_dir / names.results_file("rqvae").name, "MM-RQ-VAE results", "run recipes/train_rqvae.py")
    return diagnostics, results, rqvae_dir


def main(args: CompareArguments) -> str:
    names = args.names or [Path(d).name for d in args.sids_dirs]
    rqvae_dirs = args.rqvae_dirs or [None] * len(args.sids_dirs)
    for flag, values in (("--names", names), ("--rqvae_dirs", rqvae_dirs)):
        if len(values) != len(args.sids_dirs):
            raise ValueError(f"{flag} has {len(values)} entries but --sids_dirs has {len(args.sids_dirs)}.")
    runs, sources = {}, {}
    for name, sids_dir, rqvae_dir in zip(names, args.sids_dirs, rqvae_dirs):
        # relative to --run_dir; an absolute path stays itself
        rqvae_dir = Path(args.run_dir) / rqvae_dir if rqvae_dir else None
        diagnostics, results, rqvae_dir = read_run(Path(args.run_dir) / sids_dir, rqvae_dir)
        runs[name] = (diagnostics, results)
        sources[name] = {"sids_dir": str(sids_dir), "rqvae_dir": str(rqvae_dir)}
    table = comparison_table(runs)
    print(table)
    if args.output:
        atomic_write_json(args.output, {"table": table, "runs": sources})
    if args.doc:
        write_between_markers(args.doc, args.doc_block, table)
        print(f"wrote the table into {args.doc} (`{args.doc_block}` markers)")
    return table


if __name__ == "__main__":
    main(*document(TrlParser((CompareArguments,)), __doc__, __file__).parse_args_and_config())
