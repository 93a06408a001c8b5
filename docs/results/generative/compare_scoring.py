"""The generate and rerank rows of one head=both model under the old beam scores (renormalized over the
allowed codes at each step) and the corrected ones (the model's own probabilities), on the users evaluate.py samples
(`--max_users 500`, seed 0, test split). Same model, same users: the difference is the scoring alone."""

import json
import sys
import time

import numpy as np
import torch
from transformers import AutoModel, AutoProcessor

from mmesid_artifacts import Run, load_split_table, load_stats
from modeling_mmesid import MMESIDRecommender, evaluation


run_dir, model_dir, out_path = sys.argv[1], sys.argv[2], sys.argv[3]
variants = sys.argv[4].split(",") if len(sys.argv) > 4 else ["renormalized", "model"]
run = Run(run_dir)
num_items = load_stats(run.data)["num_items"]
split = load_split_table(run.data, "test")
keep = np.sort(np.random.default_rng(0).choice(split.num_rows, size=500, replace=False))
split = split.take(keep)
histories, targets = split.column("history").to_pylist(), split.column("target").to_pylist()
model = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)
recommender = MMESIDRecommender(model, processor, batch_size=32)
tic = time.time()
logits = recommender.score_histories(histories).float().cpu()
rank_seconds = time.time() - tic
out = {"num_users": len(targets), "score_histories_seconds": round(rank_seconds, 2), "results": {}}
tgt = torch.tensor(targets)
for variant in variants:
    tic = time.time()
    items, scores = recommender.generate_items(histories, k=20, renormalize=variant == "renormalized")
    seconds = time.time() - tic
    gen = evaluation.metrics_from_ranks(evaluation.ranks_from_recommendations(items, tgt))
    cand = logits.gather(1, items).masked_fill(items == 0, float("-inf"))
    reranked = items.gather(1, cand.argsort(dim=-1, descending=True, stable=True))
    rer = evaluation.metrics_from_ranks(evaluation.ranks_from_recommendations(reranked, tgt))
    out["results"][f"generate ({variant})"] = {**gen, "seconds": round(seconds, 2)}
    out["results"][f"rerank ({variant})"] = rer
    out[f"items ({variant})"] = items.tolist()
    print(variant, {k: round(v, 4) for k, v in gen.items() if "@" in k}, f"{seconds:.0f}s", flush=True)
    with open(out_path, "w") as f:
        json.dump(out, f)
