# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Full-ranking evaluation of the baselines (and trained models) on the same users; prints a table, writes JSON.

Commands:
    python recipes/evaluate.py --data_dir outputs/beauty-smollm2-135m/data --output_dir outputs/beauty-smollm2-135m/eval
    python recipes/evaluate.py --data_dir outputs/beauty-smollm2-135m/data --split validation --max_users 2000
"""

import time
from dataclasses import dataclass, field
from pathlib import Path

from trl import TrlParser

from modeling_mmesid import baselines, data, evaluation


@dataclass
class EvaluateArguments:
    data_dir: str = field(metadata={"help": "Output folder of recipes/prepare_data.py."})
    output_dir: str | None = field(default=None, metadata={"help": "Where results.json goes (default: next to data)."})
    split: str = field(default="test", metadata={"help": "test or validation."})
    max_users: int | None = field(default=None, metadata={"help": "Evaluate the first N users only (says so)."})
    batch_size: int = 512


def main(args: EvaluateArguments) -> dict:
    start = time.time()
    stats = data.load_stats(args.data_dir)
    num_items = stats["num_items"]
    split = data.load_split_table(args.data_dir, args.split)
    if args.max_users is not None:
        split = split.slice(0, args.max_users)
    train_sequences = data.load_train_sequences(args.data_dir)
    scorers = {
        "popularity": baselines.PopularityScorer(data.load_item_counts(args.data_dir)),
        "transition": baselines.TransitionScorer.fit(train_sequences, num_items),
    }
    results = {name: evaluation.evaluate_scorer(s, split, num_items, batch_size=args.batch_size) for name, s in scorers.items()}
    protocol = evaluation.protocol_line(num_items, split.num_rows, args.split)
    if args.max_users is not None:
        protocol += f" (first {split.num_rows:,} of {stats[f'num_{args.split}']:,} users)"
    print(evaluation.format_table(results, protocol=protocol))
    out_dir = Path(args.output_dir or Path(args.data_dir).parent / "eval")
    out_dir.mkdir(parents=True, exist_ok=True)
    evaluation.write_results(
        out_dir / "results.json", results, protocol, run_info=evaluation.run_info(time.time() - start, vars(args))
    )
    print(f"wrote {out_dir / 'results.json'}")
    return results


if __name__ == "__main__":
    (script_args,) = TrlParser((EvaluateArguments,)).parse_args_and_config()
    main(script_args)
