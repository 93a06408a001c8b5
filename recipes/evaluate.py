# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
r"""Full-ranking evaluation of MME-SID next to the baselines, on the same users; prints a table, writes JSON.

Reads `<run_dir>/data/` and writes `<run_dir>/eval/results.json` (or `--output_dir`'s).

Commands:
    # baselines only (popularity, last-item transition) on Beauty_new test
    python recipes/evaluate.py --run_dir outputs/beauty-smollm2-135m
    # a fine-tuned run (a folder or a Hub repo id) next to popularity, transition and SASRec, on 2,000 sampled users
    python recipes/evaluate.py --run_dir outputs/beauty-smollm2-135m \
        --model outputs/beauty-smollm2-135m/finetune/model --sasrec outputs/beauty-smollm2-135m/embeddings/sasrec \
        --max_users 2000
    # a model with a generative head (`head: both`): ranking and constrained beam search on the same users
    python recipes/evaluate.py --run_dir outputs/beauty-smollm2-135m \
        --model outputs/beauty-smollm2-135m/finetune-both/model --methods rank generate rerank --max_users 2000 \
        --output_dir outputs/beauty-smollm2-135m/eval-both
    # the full-data run on the whole test split, its table also written into docs/RESULTS.md (`full-run` markers)
    python recipes/evaluate.py --run_dir outputs/beauty-smollm2-135m \
        --model outputs/beauty-smollm2-135m/finetune-full/model --sasrec outputs/beauty-smollm2-135m/embeddings/sasrec \
        --output_dir outputs/beauty-smollm2-135m/eval-full --doc docs/RESULTS.md --doc_block full-run
    # RecBole's protocol (history items stay candidates), to print beside RecBole's numbers
    python recipes/evaluate.py --run_dir outputs/beauty-smollm2-135m --no_mask_history \
        --output_dir outputs/beauty-smollm2-135m/eval-unmasked
    # (re)write a docs block from a committed results.json, ranking nothing
    python recipes/evaluate.py --report_only docs/results/full-run-newlr/eval_results.json --doc docs/RESULTS.md \
        --doc_block full-run-newlr
"""

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from trl import TrlParser

from mmesid_artifacts import (
    Run,
    load_split_table,
    load_stats,
    read_results,
    run_info,
    write_between_markers,
    write_results,
)
from mmesid_artifacts.recipe_args import document, run_dir_field
from modeling_mmesid import MMESIDRecommender, baselines, evaluation, hub


@dataclass
class EvaluateArguments:
    run_dir: str = run_dir_field("reads data/; writes eval/ unless --output_dir names another")
    output_dir: str | None = field(default=None, metadata={"help": "Where results.json goes; default <run_dir>/eval."})
    split: str = field(default="test", metadata={"help": "test or validation."})
    model: str | None = field(default=None, metadata={"help": "Fine-tuned MME-SID folder or Hub repo id."})
    sasrec: str | None = field(default=None, metadata={"help": "SASRec folder (encode_items.py writes embeddings/sasrec)."})
    max_users: int | None = field(default=None, metadata={"help": "Evaluate N users sampled with `seed` (says so)."})
    no_mask_history: bool = field(
        default=False, metadata={"help": "Keep history items as candidates (RecBole's protocol; ours masks them)."}
    )
    methods: list[str] = field(
        default_factory=lambda: ["rank"],
        metadata={"help": "How --model recommends: rank (full ranking), generate (constrained beam search over "
                  "semantic IDs, max(ks) beams; needs a generative head) and/or rerank (the beams ordered by the "
                  "ranking head; needs head=both)."},
    )
    rerank_candidates: int | None = field(
        default=None, metadata={"help": "Beams proposed per user for --methods rerank (default: max(ks) = 20)."}
    )
    seed: int = 0
    batch_size: int = 256
    model_batch_size: int = 32
    doc: str | None = field(
        default=None,
        metadata={"help": "Also write the table (Markdown, from results.json) into this file between "
                  "`<!-- <doc_block>:start -->` and `<!-- <doc_block>:end -->`, e.g. README.md."},
    )
    doc_block: str = field(default="results", metadata={"help": "Name of the --doc markers."})
    report_only: str | None = field(
        default=None,
        metadata={"help": "Rank nothing: write --doc's block from this existing results.json (of an earlier run)."},
    )


def markdown_block(saved: dict, source: str) -> str:
    """The table of an evaluate.py `results.json` as Markdown, with its protocol, commit and wall time."""
    info = saved.get("run_info", {})
    lines = [hub.metrics_table(saved["results"]), "", f"Protocol: {saved['protocol']}."]
    seconds = {name: row.get("seconds") for name, row in saved["results"].items() if row.get("seconds") is not None}
    lines.append(f"Source: `{source}` (commit {(info.get('git_commit') or 'unknown')[:7]}, evaluation wall time "
                 f"{info.get('wall_time_s', 0):,.0f} s; per model: "
                 + ", ".join(f"{name} {value:,.0f} s" for name, value in seconds.items()) + ").")
    return "\n".join(lines)


def main(args: EvaluateArguments) -> dict:
    if args.report_only:
        if not args.doc:
            raise ValueError("--report_only writes a table into --doc: name the Markdown file with --doc")
        if not Path(args.report_only).is_file():
            raise FileNotFoundError(f"--report_only {args.report_only}: no such results.json")
        saved = read_results(args.report_only)
        write_between_markers(args.doc, args.doc_block, markdown_block(saved, args.report_only))
        print(f"wrote the table of {args.report_only} into {args.doc} (`{args.doc_block}` markers)")
        return saved["results"]
    start = time.time()
    run = Run(args.run_dir)
    stats = load_stats(run.data)
    num_items = stats["num_items"]
    split = load_split_table(run.data, args.split)
    total = split.num_rows
    if args.max_users is not None and args.max_users < total:
        keep = np.sort(np.random.default_rng(args.seed).choice(total, size=args.max_users, replace=False))
        split = split.take(keep)
    from tokenization.sasrec import SASRecModel, sasrec_scorer

    sasrec = sasrec_scorer(SASRecModel.from_pretrained(args.sasrec)) if args.sasrec else None
    scorers = baselines.baseline_scorers(run.data, num_items, sasrec)
    if args.model:
        from transformers import AutoModel, AutoProcessor

        model = AutoModel.from_pretrained(args.model, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=True)
        mmesid = MMESIDRecommender(model, processor, batch_size=args.model_batch_size)
        unknown = sorted(set(args.methods) - {"rank", "generate", "rerank"})
        if unknown or not args.methods:
            raise ValueError(f"`--methods` must be a non-empty subset of rank, generate, rerank; got {args.methods}.")
        if "rank" in args.methods:
            scorers["mmesid"] = mmesid.as_scorer()
    results = {}
    for name, scorer in scorers.items():
        tic = time.time()
        batch_size = args.model_batch_size if name == "mmesid" else args.batch_size
        results[name] = evaluation.evaluate_scorer(
            scorer, split, num_items, batch_size=batch_size, mask_history=not args.no_mask_history
        )
        results[name]["seconds"] = round(time.time() - tic, 2)
    k = max(evaluation.DEFAULT_KS)  # beams = the largest cut-off: an item not generated is a miss at every K
    for method in [m for m in ("generate", "rerank") if args.model and m in args.methods]:
        tic = time.time()
        extra = {"num_candidates": args.rerank_candidates} if method == "rerank" else {}

        def recommender(histories, method=method, extra=extra):
            return mmesid.recommend(histories, k=k, method=method, exclude_history=not args.no_mask_history, **extra)

        results[f"mmesid-{method}"] = evaluation.evaluate_recommender(
            recommender, split, num_items, batch_size=args.model_batch_size
        )
        results[f"mmesid-{method}"]["seconds"] = round(time.time() - tic, 2)
    protocol = evaluation.protocol_line(num_items, split.num_rows, args.split, mask_history=not args.no_mask_history,
                                        sampled=(args.seed, total))
    generated = [name for name in ("mmesid-generate", "mmesid-rerank") if name in results]
    if generated:
        protocol += (f"; {' and '.join(generated)}: constrained beam search, {k} beams per user, "
                     "items not generated count as misses")
    if "mmesid-rerank" in results:
        protocol += f" (mmesid-rerank: {args.rerank_candidates or k} beams, ordered by the ranking head)"
    print(evaluation.format_table(results, protocol=protocol))
    path = Path(args.output_dir) / "results.json" if args.output_dir else run.results_file("eval")
    write_results(path, results, protocol, run_info=run_info(time.time() - start, vars(args)))
    print(f"wrote {path}")
    if args.doc:
        write_between_markers(args.doc, args.doc_block, markdown_block(read_results(path), str(path)))
        print(f"wrote the table into {args.doc} (`{args.doc_block}` markers)")
    return results


if __name__ == "__main__":
    (script_args,) = document(TrlParser((EvaluateArguments,)), __doc__, __file__).parse_args_and_config()
    main(script_args)
