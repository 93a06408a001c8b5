# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
r"""Learning curves of Stage 2: validation nDCG@10 on one fixed user sample against the training samples seen, for the
paper configuration and for each warm-start remedy (docs/LEARNING.md).

Every variant trains on the same users in the same order (a seeded shuffle of the training users, read sequentially)
for one cosine schedule over the largest budget, and is validated on the same sampled validation users each time it
has seen a budget's worth of samples: the points are "anytime" figures of one run, not separately tuned runs.
Variants are the finetune config plus overrides (`VARIANTS`); each is resumable at variant granularity (a finished
variant in `results.json` is skipped).

Commands:
    # the CPU curve of docs/LEARNING.md (2 cores: about 15 minutes per variant)
    python recipes/learning_curve.py --config recipes/configs/beauty-smollm2-135m/finetune.yaml \
        --run_dir outputs/beauty-smollm2-135m --budgets 1000 2500 5000 --eval_users 2000 \
        --variants paper distill zero_head
    # redraw the table and the plot from results.json
    python recipes/learning_curve.py --run_dir outputs/beauty-smollm2-135m --report_only
    # the curve at full-data budgets: the validations of finished finetune.py runs (their results.json), one row each
    python recipes/learning_curve.py --run_dir outputs/beauty-smollm2-135m \
        --full_runs paper=docs/results/full-run/finetune_results.json \
        new_lr=docs/results/full-run-newlr/finetune_results.json \
        --baselines docs/results/curve/baselines.json --doc docs/LEARNING.md
    # the 4-epoch causal run: baselines computed on its validation users, our SASRec's per-epoch validation below
    python recipes/learning_curve.py --run_dir outputs/beauty-smollm2-135m \
        --full_runs causal_4_epochs=docs/results/full-run-causal/finetune_results.json \
        --baselines docs/results/full-run-causal/baselines.json \
        --baselines_sasrec outputs/beauty-smollm2-135m/embeddings/sasrec --doc docs/RESULTS.md --doc_block full-run-causal-curve

Reads the run's `data/`, `embeddings/` and `sids/` (as recipes/finetune.py does) and writes `<run_dir>/curve/` (or
`--curve_dir`): `results.json` (every point with its protocol), `curve.md` and `curve.png`.
"""

import argparse
import itertools
import json
import math
import sys
import time
from pathlib import Path

import torch
from transformers import TrainerCallback
from trl import ModelConfig, TrlParser


sys.path.insert(0, str(Path(__file__).resolve().parent))
from finetune import ScriptArguments, _users_subset, build_trainer

from mmesid_artifacts import Run, atomic_write_json, load_stats, write_between_markers
from mmesid_artifacts.recipe_args import document
from mmesid_artifacts.run import DEFAULT_RUN_DIR
from modeling_mmesid import evaluation
from modeling_mmesid.trainer import MMESIDTrainingConfig
from tokenization.diagnostics import SPECTRUM_COLOURS, _png_bytes


# The full recipe's configuration (finetune-full-causal.yaml) over the main job's: the base of the part-3 rows
_T1_32U = {"layout": "causal", "new_modules_learning_rate": 3e-3, "distill_weight": 0.5, "fusion_temperature": 1.0,
           "per_device_train_batch_size": 32}

# name -> (overrides of the script / training arguments, what it tests)
VARIANTS = {
    "paper": ({}, "the paper's configuration (library defaults)"),
    "zero_head": ({"item_head_init": "zero"}, "item table e initialized to zero"),
    "collab_head": ({"item_head_init": "collaborative"}, "item table e initialized to W_c c_j"),
    "token_head": ({"item_head_init": "item_tokens"}, "item table e initialized to the fused item tokens"),
    "torch_gate": ({"fusion_gate_init": "torch"}, "fusion gate with PyTorch's default init (official code)"),
    "new_lr": ({"new_modules_learning_rate": 3e-3}, "new modules at 10x the learning rate (3e-3)"),
    "distill": ({"distill_weight": 0.5}, "SASRec softmax distilled, weight 0.5 annealed to 0"),
    "distill_zero_lr": (
        {"distill_weight": 0.5, "item_head_init": "zero", "new_modules_learning_rate": 3e-3},
        "distill + zero item table + 10x new-module learning rate",
    ),
    "new_lr_distill": (
        {"new_modules_learning_rate": 3e-3, "distill_weight": 0.5},
        "10x new-module learning rate + distill (the best full run, chat layout)",
    ),
    "causal": ({"layout": "causal"}, "causal layout: read out at each item token, one causal pass per user"),
    "causal_new_lr_distill": (
        {"layout": "causal", "new_modules_learning_rate": 3e-3, "distill_weight": 0.5},
        "causal layout + 10x new-module learning rate + distill",
    ),
    "causal_new_lr_distill_32u": (
        {"layout": "causal", "new_modules_learning_rate": 3e-3, "distill_weight": 0.5,
         "per_device_train_batch_size": 32},
        "causal_new_lr_distill with 32 users per step (a quarter of the updates)",
    ),
    "causal_new_lr_distill_32u_2xlr": (
        {"layout": "causal", "learning_rate": 6e-4, "new_modules_learning_rate": 6e-3, "distill_weight": 0.5,
         "per_device_train_batch_size": 32},
        "causal_new_lr_distill with 32 users per step and both learning rates doubled (square-root scaling)",
    ),
    "causal_new_lr_distill_equal_fusion": (
        {"layout": "causal", "new_modules_learning_rate": 3e-3, "distill_weight": 0.5, "fusion": "equal"},
        "causal_new_lr_distill with equal fusion weights (no frequency gate)",
    ),
    "causal_new_lr_distill_torch_gate": (
        {"layout": "causal", "new_modules_learning_rate": 3e-3, "distill_weight": 0.5, "fusion_gate_init": "torch"},
        "causal_new_lr_distill with the fusion gate in PyTorch's default init (official code)",
    ),
    "causal_new_lr_distill_gate_base_lr": (
        {"layout": "causal", "new_modules_learning_rate": 3e-3, "distill_weight": 0.5,
         "fusion_gate_learning_rate": 3e-4},
        "causal_new_lr_distill with the fusion gate at the base learning rate (3e-4, not 10x)",
    ),
    "causal_new_lr_distill_gate_t1": (
        {"layout": "causal", "new_modules_learning_rate": 3e-3, "distill_weight": 0.5, "fusion_temperature": 1.0},
        "causal_new_lr_distill with the fusion gate's softmax at temperature 1 (official code: 1e-3)",
    ),
    "causal_new_lr_distill_32u_gate_t1": (
        dict(_T1_32U),
        "causal_new_lr_distill_32u with the fusion gate's softmax at temperature 1",
    ),
    "causal_new_lr_distill_32u_gate_t1_no_sids": (
        {**_T1_32U, "item_token_sids": False},
        "causal_new_lr_distill_32u_gate_t1 with item tokens without SID code embeddings (the SIDs' contribution)",
    ),
    "causal_new_lr_distill_32u_gate_t1_no_text": (
        {**_T1_32U, "modalities": ["collaborative"]},
        "causal_new_lr_distill_32u_gate_t1 with the collaborative modality only (no text embedding, SIDs or head)",
    ),
    "causal_new_lr_distill_32u_gate_t1_2xlr": (
        {**_T1_32U, "learning_rate": 6e-4, "new_modules_learning_rate": 6e-3},
        "causal_new_lr_distill_32u_gate_t1 with both learning rates doubled (square-root scaling)",
    ),
    "causal_new_lr_distill_16u_gate_t1": (
        {**_T1_32U, "per_device_train_batch_size": 16},
        "causal_new_lr_distill_32u_gate_t1 with 16 users per step (twice the updates)",
    ),
    "causal_new_lr_distill_32u_gate_base_lr": (
        {"layout": "causal", "new_modules_learning_rate": 3e-3, "distill_weight": 0.5,
         "fusion_gate_learning_rate": 3e-4, "per_device_train_batch_size": 32},
        "causal_new_lr_distill_32u with the fusion gate at the base learning rate (3e-4)",
    ),
}


class BudgetCallback(TrainerCallback):
    """Ask for an evaluation at the end of the step in which the samples seen reach each budget, record it, and stop
    after the last one. The samples are counted over all processes (`MMESIDTrainer._global_samples_seen`, a
    collective call: every process calls it at the same step, so all of them evaluate and stop together); a point is
    recorded by the main process only."""

    def __init__(self, trainer, budgets, on_point):
        self.trainer, self.budgets, self.on_point = trainer, sorted(budgets), on_point
        self.next = 0
        self.start = time.time()
        self.train_seconds = 0.0
        self.step_start = None

    def on_step_begin(self, args, state, control, **kwargs):
        self.step_start = time.time()

    def on_step_end(self, args, state, control, **kwargs):
        self.train_seconds += time.time() - self.step_start
        if self.next < len(self.budgets) and self.trainer._global_samples_seen() >= self.budgets[self.next]:
            control.should_evaluate = True

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        seen = self.trainer._global_samples_seen()
        losses = [h["loss"] for h in state.log_history if "loss" in h]
        if state.is_world_process_zero:
            self.on_point({
                "budget": self.budgets[self.next], "samples_seen": seen, "step": state.global_step,
                "train_seconds": round(self.train_seconds, 1), "train_loss": losses[-1] if losses else None,
                **{k.removeprefix("eval_"): v for k, v in (metrics or {}).items()},
            })
        while self.next < len(self.budgets) and seen >= self.budgets[self.next]:
            self.next += 1
        if self.next >= len(self.budgets):
            control.should_training_stop = True


def run_variant(name, base_args, budgets, eval_users, seed, on_point, overrides=None, split="validation"):
    """Train variant `name` (`VARIANTS[name]` or `overrides`) on the seeded user shuffle until `max(budgets)` samples,
    ranking `eval_users` sampled users of `split` (`validation`, or `test` for recipes/ablation.py) at each budget.
    Returns `(stats, number of ranked users)`."""
    script_args, training_args, model_args = base_args  # parsed afresh for every variant
    overrides = VARIANTS[name][0] if overrides is None else overrides
    for key, value in overrides.items():
        target = script_args if hasattr(script_args, key) else training_args
        setattr(target, key, value)
    script_args.max_train_users = None
    script_args.max_eval_users = eval_users if split == "validation" else 1
    script_args.max_test_users = eval_users if split == "test" else 1
    trainer, splits, stats = build_trainer(script_args, training_args, model_args)
    trainer.eval_dataset = splits[split]
    users = trainer.train_dataset.shuffle(seed=seed)
    counts = [len(items) - start for items, start in zip(users["items"], users["start"])]
    total, keep = 0, 0
    while keep < len(counts) and total < max(budgets):
        total += counts[keep]
        keep += 1
    trainer.train_dataset = users.select(range(keep))
    trainer.add_callback(BudgetCallback(trainer, budgets, on_point))
    print(f"[{name}] {keep:,} users · {total:,} samples · {split} {splits[split].num_rows:,} users")
    trainer.train()
    return stats, splits[split].num_rows


def training_args_for(args, config_path):
    parser = TrlParser((ScriptArguments, MMESIDTrainingConfig, ModelConfig))
    argv = ["--config", config_path, "--run_dir", args.run_dir, "--output_dir", str(args.curve_dir / "tmp"),
            "--eval_strategy", "steps", "--eval_steps", str(10**9), "--save_strategy", "no",
            "--load_best_model_at_end", "false", "--train_sampling_strategy", "sequential", "--num_train_epochs", "1",
            "--logging_steps", "10", "--seed", str(args.seed), "--save_full_model", "false"]
    return parser.parse_args_and_config(argv + args.extra)


def report(curve_dir: Path, doc: str | None = None) -> str:
    results = json.loads((curve_dir / "results.json").read_text())
    variants = results["variants"]
    budgets = sorted({p["budget"] for v in variants.values() for p in v["points"]})
    lines = [f"Protocol: {results['protocol']}", "",
             "| variant | " + " | ".join(f"{b:,} samples" for b in budgets) + " | what |",
             "|---|" + "---|" * (len(budgets) + 1)]
    for name, v in variants.items():
        by_budget = {p["budget"]: p for p in v["points"]}
        cells = [f"{by_budget[b]['ndcg@10']:.4f}" if b in by_budget else "" for b in budgets]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {v['description']} |")
    lines.append("")
    lines.append("Validation nDCG@10 at each budget (samples actually seen: `results.json`).")
    table = "\n".join(lines)
    (curve_dir / "curve.md").write_text(table + "\n")
    save_curve_plot({n: v["points"] for n, v in variants.items()}, curve_dir / "curve.png")
    legend = ", ".join(f"{n}: rgb{c}" for n, c in zip(variants, SPECTRUM_COLOURS * 2))
    if doc:
        write_between_markers(Path(doc), "curve", f"{table}\n\nPlot colours: {legend}.")
    return table


def cumulative_samples_seen(history: list[dict]) -> list[dict]:
    """`log_history` with `samples_seen` counted over the whole run. Before 2026-12-05 a resumed run's counter restarted
    from 0 after its checkpoint (checkpoints now keep the count, `trainer.SAMPLES_SEEN_FILE`): a count below the one
    logged before it is such a restart, and the earlier count is added to it and to every later one."""
    out, offset, last = [], 0, 0
    for entry in history:
        if entry.get("samples_seen") is not None:
            if entry["samples_seen"] + offset < last:
                offset = last
            entry = {**entry, "samples_seen": entry["samples_seen"] + offset}
            last = entry["samples_seen"]
        out.append(entry)
    return out


def full_run_table(runs: dict[str, str | Path], run_dir: str | Path, baselines: str | Path | None = None,
                   metric: str = "ndcg@10") -> str:
    """Validation `metric` at every evaluation of finished `recipes/finetune.py` runs (their `results.json` log
    history), one row per run and one column per step: the learning curve at full-data budgets. The runs must have
    been validated on the same sampled users (`max_eval_users` and `seed` of their configs); `baselines` is an
    evaluate.py-style `{model: metrics}` file measured on those users, printed below the table."""
    stats = load_stats(Run(run_dir).data)
    rows, samples, users = {}, {}, set()
    for name, path in runs.items():
        saved = json.loads(Path(path).read_text())
        try:
            config = saved["run_info"]["config"]
            history = saved["train_info"]["log_history"]
        except KeyError as missing:
            raise ValueError(f"{path}: not a finetune.py results.json (no {missing})") from None
        users.add((config["script"].get("max_eval_users"), config["training"].get("seed")))
        rows[name] = {}
        for entry in cumulative_samples_seen(history):
            if f"eval_{metric}" in entry:
                rows[name][entry["step"]] = entry[f"eval_{metric}"]
                samples.setdefault(entry["step"], set()).add(entry.get("samples_seen"))
    if len(users) != 1:
        raise ValueError(f"the runs were validated on different users (max_eval_users, seed): {sorted(users, key=str)}")
    (num_users, seed), = users
    steps = sorted(samples)
    protocol = evaluation.protocol_line(stats["num_items"], num_users or stats["num_validation"], "validation",
                                        sampled=(seed + 1, stats["num_validation"]))

    def column(step):
        seen = sorted(n for n in samples[step] if n is not None)
        return f"step {step:,} ({'/'.join(f'{n:,}' for n in seen)} samples)" if seen else f"step {step:,}"

    lines = [f"Protocol: {protocol}; validation {metric} of each run at each evaluation", "",
             "| run | " + " | ".join(column(step) for step in steps) + " |", "|---|" + "---|" * len(steps)]
    for name, points in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{points[s]:.4f}" if s in points else "" for s in steps) + " |")
    lines.append("")
    lines.append("Sources: " + ", ".join(f"{name} `{path}`" for name, path in runs.items()) + ".")
    if baselines:
        scores = json.loads(Path(baselines).read_text())
        lines.append(f"On the same users (`{baselines}`): "
                     + ", ".join(f"{model} {row[metric]:.4f}" for model, row in scores.items()) + ".")
    return "\n".join(lines)


def validation_baselines(run_dir: str | Path, num_users: int | None, seed: int, sasrec_dir: str | Path | None = None) -> dict:
    """Popularity, last-item transition and (with `sasrec_dir`) SASRec on the validation users that `finetune.py`
    validates on with `max_eval_users=num_users` and `seed` (`num_users` sampled with `seed + 1`), under the
    evaluator's protocol: the baselines of a `full_run_table`."""
    from modeling_mmesid import baselines
    from modeling_mmesid import data as mmesid_data

    run = Run(run_dir)
    num_items = load_stats(run.data)["num_items"]
    split = _users_subset(mmesid_data.load_splits(run.data)["validation"], num_users, seed + 1)
    from tokenization.sasrec import SASRecModel, sasrec_scorer

    sasrec = sasrec_scorer(SASRecModel.from_pretrained(sasrec_dir)) if sasrec_dir else None
    scorers = baselines.baseline_scorers(run.data, num_items, sasrec)
    return {name: evaluation.evaluate_scorer(scorer, split, num_items) for name, scorer in scorers.items()}


def sasrec_epochs_line(results_json: str | Path, metric: str = "ndcg@10") -> str:
    """SASRec's validation `metric` after each of its epochs (`encode_items.py`'s `embeddings/sasrec/results.json`)."""
    saved = json.loads(Path(results_json).read_text())
    log = saved["train_info"]["log"]
    return (f"Our SASRec after each epoch (validation {metric}, {saved['protocol'].split(', ')[-1]}; `{results_json}`): "
            + ", ".join(f"{entry['epoch']}: {entry['metric']:.4f}" for entry in log) + ".")


def save_curve_plot(series: dict[str, list[dict]], path: Path, width: int = 640, height: int = 400) -> None:
    """PNG of nDCG@10 (y, from 0 to the largest value) against log10(samples seen) (x), one line per variant in
    `SPECTRUM_COLOURS` order (legend in results.json order), written without matplotlib."""
    margin = 24
    image = torch.full((height, width, 3), 255, dtype=torch.uint8)
    points = [(p["samples_seen"], p["ndcg@10"]) for s in series.values() for p in s]
    if not points:
        return
    x_lo, x_hi = math.log10(min(x for x, _ in points)), math.log10(max(x for x, _ in points))
    y_hi = max(y for _, y in points) * 1.1 or 1.0
    plot_w, plot_h = width - 2 * margin, height - 2 * margin

    def to_pixel(x, y):
        fx = (math.log10(x) - x_lo) / max(x_hi - x_lo, 1e-9)
        return margin + round((1 - y / y_hi) * (plot_h - 1)), margin + round(fx * (plot_w - 1))

    for k in range(6):
        image[margin + round(k / 5 * (plot_h - 1)), margin : width - margin] = 225
    for pts, colour in zip(series.values(), SPECTRUM_COLOURS * 2):
        pixels = [to_pixel(p["samples_seen"], p["ndcg@10"]) for p in sorted(pts, key=lambda p: p["samples_seen"])]
        colour_t = torch.tensor(colour, dtype=torch.uint8)
        for (r0, c0), (r1, c1) in itertools.pairwise(pixels):
            steps = max(abs(r1 - r0), abs(c1 - c0), 1)
            for t in range(steps + 1):
                r, c = round(r0 + (r1 - r0) * t / steps), round(c0 + (c1 - c0) * t / steps)
                image[max(r - 1, 0) : r + 2, c] = colour_t
        for r, c in pixels:
            image[max(r - 3, 0) : r + 4, max(c - 3, 0) : c + 4] = colour_t
    path.write_bytes(_png_bytes(image))


def variant_parser(doc: str, writes: str) -> argparse.ArgumentParser:
    """The arguments of a recipe that trains finetune variants (this one, recipes/ablation.py): `--config`, `--run_dir`."""
    parser = document(argparse.ArgumentParser(), doc, config=False)
    parser.add_argument(
        "--config", default="recipes/configs/beauty-smollm2-135m/finetune.yaml",
        help="The finetune YAML every variant starts from (recipes/finetune.py --help lists its arguments).",
    )
    parser.add_argument("--run_dir", default=str(DEFAULT_RUN_DIR),
                        help=f"Run folder outputs/<run>/: reads data/, embeddings/, sids/; writes {writes}.")
    return parser


def main():
    parser = variant_parser(__doc__, "curve/")
    parser.add_argument("--curve_dir", default=None, help="Where the curve goes (default: <run_dir>/curve).")
    parser.add_argument("--budgets", type=int, nargs="+", default=[1000, 2500, 5000], help="Training samples.")
    parser.add_argument("--eval_users", type=int, default=2000, help="Fixed validation sample (seed + 1).")
    parser.add_argument("--variants", nargs="+", default=["paper", "distill", "zero_head"], choices=sorted(VARIANTS))
    parser.add_argument("--seed", type=int, default=42, help="Seed of the user shuffle, the sample and training.")
    parser.add_argument("--report_only", action="store_true", help="Only redraw curve.md and curve.png.")
    parser.add_argument("--doc", default=None,
                        help="Also write the table into this Markdown file between `<!-- curve:start -->` and "
                             "`<!-- curve:end -->` (e.g. docs/LEARNING.md), so documented figures come from results.json.")
    parser.add_argument("--full_runs", nargs="+", default=None, metavar="NAME=RESULTS_JSON",
                        help="Train nothing: tabulate the validations of finished finetune.py runs (their results.json) "
                             "and write the table between `<!-- full-epoch:start/end -->` in --doc, if given.")
    parser.add_argument("--baselines", default=None,
                        help="With --full_runs: a {model: metrics} JSON of the baselines on the same validation users.")
    parser.add_argument("--doc_block", default=None,
                        help="With --full_runs: the name of the --doc markers (default full-epoch).")
    parser.add_argument("--baselines_sasrec", default=None,
                        help="With --full_runs and --baselines: compute the baselines (popularity, transition and this "
                             "SASRec folder) on the runs' validation users, write them to --baselines, and add "
                             "SASRec's per-epoch validation from the folder's results.json below the table.")
    args, extra = parser.parse_known_args()
    args.extra = extra  # further finetune arguments, e.g. --per_device_train_batch_size 2
    if args.full_runs:
        pairs = [item.partition("=") for item in args.full_runs]
        bad = [item for item, (_, sep, path) in zip(args.full_runs, pairs) if not sep or not path]
        if bad:
            parser.error(f"--full_runs takes NAME=RESULTS_JSON pairs, got {bad}")
        runs = {name: path for name, _, path in pairs}
        if args.baselines_sasrec:
            if not args.baselines:
                parser.error("--baselines_sasrec writes the baselines to --baselines: name the JSON file")
            config = json.loads(Path(next(iter(runs.values()))).read_text())["run_info"]["config"]
            scores = validation_baselines(args.run_dir, config["script"].get("max_eval_users"),
                                          config["training"]["seed"], args.baselines_sasrec)
            atomic_write_json(Path(args.baselines), scores)
        table = full_run_table(runs, args.run_dir, args.baselines)
        sasrec_results = Path(args.baselines_sasrec or "", "results.json")
        if args.baselines_sasrec and sasrec_results.is_file():
            table += "\n" + sasrec_epochs_line(sasrec_results)
        if args.doc:
            write_between_markers(Path(args.doc), args.doc_block or "full-epoch", table)
        print(table)
        return
    curve_dir = args.curve_dir = Path(args.curve_dir or Run(args.run_dir).curve)
    if args.report_only:
        print(report(curve_dir, args.doc))
        return
    path = curve_dir / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {"variants": {}}
    for name in args.variants:
        done = results["variants"].get(name)
        if done and done.get("finished") and {p["budget"] for p in done["points"]} >= set(args.budgets):
            print(f"[{name}] done, skipped")
            continue
        start = time.time()
        entry = {"description": VARIANTS[name][1], "overrides": VARIANTS[name][0], "points": [], "finished": False}
        results["variants"][name] = entry

        def on_point(point, entry=entry, name=name, start=start):
            point["wall_seconds"] = round(time.time() - start, 1)
            entry["points"].append(point)
            print(f"[{name}] {point['samples_seen']:,} samples: nDCG@10 {point['ndcg@10']:.4f} "
                  f"(train loss {point['train_loss']}, {point['wall_seconds']:.0f} s)", flush=True)
            atomic_write_json(path, results)

        stats, num_eval = run_variant(name, training_args_for(args, args.config), args.budgets, args.eval_users,
                                      args.seed, on_point)
        results["protocol"] = (
            evaluation.protocol_line(stats["num_items"], num_eval, "validation",
                                     sampled=(args.seed + 1, stats["num_validation"]))
            + "; training: the same "
            f"{args.seed}-shuffled users for every variant, one cosine schedule over {max(args.budgets):,} samples"
        )
        entry["finished"] = True
        atomic_write_json(path, results)
    print(report(curve_dir, args.doc))


if __name__ == "__main__":
    main()
