# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
r"""SASRec training speed: one epoch of ours next to one epoch of RecBole 1.2.1's CE SASRec, same data, same run.

Commands:
    # ours only
    python recipes/benchmark_sasrec.py --run_dir outputs/beauty-smollm2-135m
    # ours and RecBole (RecBole needs numpy<2 etc., so it lives in its own venv; it runs as a subprocess)
    python3 -m venv /work/recbole-venv && /work/recbole-venv/bin/pip install torch==2.13.0 && \
        /work/recbole-venv/bin/pip install "numpy<2" "pandas<2.3" "scipy<1.14" "setuptools<70" recbole==1.2.1
    python recipes/benchmark_sasrec.py --run_dir outputs/beauty-smollm2-135m \
        --sequences ../shared/data/Beauty/mmesid/Beauty_new.txt --recbole_python /work/recbole-venv/bin/python
    # a quicker estimate on a busy machine: the first 100 optimizer steps of each, extrapolated to an epoch
    python recipes/benchmark_sasrec.py ... --max_steps 100

Both sides use RecBole's settings (64-d, 2 layers, 2 heads, dropout 0.5, max length 50, CE over all items, Adam
1e-3, batch 256 samples) and the same number of CPU threads. RecBole trains one augmented sample per prefix, padded
to 50; ours trains every position of each user's sequence at once (`tokenization/sasrec.py`). Timed: the optimizer
loop only (data loading and model building excluded on both sides). Prints the ratio and writes `results.json`.
"""

import json
import os
import random
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from trl import TrlParser

import mmesid_artifacts as art
from mmesid_artifacts.recipe_args import document, run_dir_field
from modeling_mmesid import evaluation
from tokenization.sasrec import SASRecConfig, SASRecModel, build_training_batches


# Runs inside the RecBole venv; uses RecBole's public API only.
RECBOLE_DRIVER = r"""
import json, os, sys, time, torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.model.sequential_recommender import SASRec
from recbole.utils import init_seed
data_path, threads, max_steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
config = Config(model="SASRec", dataset="beauty_new", config_dict={
    "data_path": data_path, "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
    "load_col": {"inter": ["user_id", "item_id", "timestamp"]}, "MAX_ITEM_LIST_LENGTH": 50, "loss_type": "CE",
    "train_neg_sample_args": None, "train_batch_size": 256, "learning_rate": 1e-3,
    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
    "device": "cpu", "use_gpu": False, "show_progress": False, "checkpoint_dir": data_path, "seed": 42,
})
init_seed(config["seed"], config["reproducibility"])
train_data, _, _ = data_preparation(config, create_dataset(config))
model = SASRec(config, train_data.dataset)
optimizer = torch.optim.Adam(model.parameters(), lr=config["learning_rate"])
model.train()
steps, samples, start = 0, 0, time.perf_counter()
for interaction in train_data:
    optimizer.zero_grad()
    loss = model.calculate_loss(interaction)
    loss.backward()
    optimizer.step()
    steps += 1
    samples += len(interaction)
    if max_steps and steps >= max_steps:
        break
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "steps": steps, "samples": samples, "steps_per_epoch": len(train_data),
                  "epoch_samples": len(train_data.dataset), "loss": float(loss)}))
"""


@dataclass
class BenchmarkArguments:
    run_dir: str = run_dir_field("reads data/train_sequences.parquet")
    sequences: str | None = field(default=None, metadata={"help": "`user item item ...` file for RecBole."})
    recbole_python: str | None = field(default=None, metadata={"help": "Python of a venv with recbole==1.2.1."})
    num_threads: int = field(default=1, metadata={"help": "torch CPU threads, the same on both sides."})
    max_steps: int = field(default=0, metadata={"help": "Time only this many steps and extrapolate (0 = epoch)."})
    output_dir: str = field(default="outputs/benchmark-sasrec", metadata={"help": "Where results.json goes."})
    seed: int = field(default=42, metadata={"help": "Seed."})


def time_ours(args: BenchmarkArguments, num_items: int) -> dict:
    torch.manual_seed(args.seed)
    model = SASRecModel(SASRecConfig(num_items=num_items)).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    sequences = art.load_train_sequences(art.Run(args.run_dir).data)
    batches = build_training_batches(sequences, 50, 256, random.Random(args.seed))
    timed = batches[: args.max_steps] if args.max_steps else batches
    start = time.perf_counter()
    for input_ids, labels in timed:
        loss = model(input_ids=input_ids, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    targets = [int((labels != 0).sum()) for _, labels in batches]
    return {
        "seconds": seconds,
        "steps": len(timed),
        "samples": sum(targets[: len(timed)]),
        "steps_per_epoch": len(batches),
        "epoch_samples": sum(targets),
        "loss": float(loss.detach()),
    }


def time_recbole(args: BenchmarkArguments) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="recbole-")) / "beauty_new"
    folder.mkdir()
    with open(folder / "beauty_new.inter", "w") as f:  # RecBole atomic file; timestamp = position in the sequence
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for line in Path(args.sequences).read_text().splitlines():
            user, *items = line.split()
            f.writelines(f"{user}\t{item}\t{t}\n" for t, item in enumerate(items))
    env = {**os.environ, "PYTHONPATH": ""}
    proc = subprocess.run(
        [args.recbole_python, "-c", RECBOLE_DRIVER, str(folder.parent), str(args.num_threads), str(args.max_steps)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"RecBole failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def epoch_seconds(timing: dict) -> float:
    """Measured epoch time, or the timed steps extrapolated by samples to a full epoch."""
    return timing["seconds"] * timing["epoch_samples"] / max(timing["samples"], 1)


def main(args: BenchmarkArguments):
    torch.set_num_threads(args.num_threads)
    stats = art.load_stats(art.Run(args.run_dir).data)
    timed = f"first {args.max_steps} steps, extrapolated" if args.max_steps else "full epoch"
    print(
        f"SASRec epoch benchmark · users {stats['num_users']:,} · items {stats['num_items']:,} · "
        f"{args.num_threads} thread(s) · {timed}"
    )
    start = time.perf_counter()
    results = {"ours": time_ours(args, stats["num_items"])}
    if args.recbole_python and args.sequences:
        results["recbole"] = time_recbole(args)
    for name, timing in results.items():
        timing["epoch_seconds"] = epoch_seconds(timing)
        print(
            f"{name:8s} {timing['epoch_seconds']:8.1f} s/epoch · {timing['steps_per_epoch']:,} steps · "
            f"{timing['epoch_samples']:,} samples · timed {timing['steps']:,} steps in {timing['seconds']:.1f}s"
        )
    if "recbole" in results:
        ratio = results["recbole"]["epoch_seconds"] / results["ours"]["epoch_seconds"]
        results["speedup"] = ratio
        print(f"ours is {ratio:.1f}x faster per epoch than RecBole 1.2.1 SASRec (CE) on the same machine")
    else:
        print("RecBole not run: pass --sequences and --recbole_python (a venv with recbole==1.2.1).")
    out = Path(args.output_dir) / "results.json"
    evaluation.write_results(
        out,
        results,
        "SASRec training epoch, CE over all items, batch 256 samples",
        run_info=evaluation.run_info(time.perf_counter() - start, asdict(args)),
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*document(TrlParser((BenchmarkArguments,)), __doc__, __file__).parse_args_and_config())
