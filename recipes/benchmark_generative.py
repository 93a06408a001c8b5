# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Cost per user of full ranking vs constrained beam search over semantic IDs, as the catalog grows.

Synthetic catalogs of 10,000 / 100,000 / 1,000,000 items with random semantic IDs (one modality, 4 levels x 256
codes, so the generated ID is 4 codes + the collision suffix), a tiny random Llama backbone (2 layers, 32 hidden) and
the same random users for every catalog. For each catalog, in one process:
- the trie: build time (generative IDs with the collision suffix, then `SIDTrie`) and the memory of its arrays;
- (a) full ranking: `MMESIDRecommender.score_histories` with the item tables prepared once (`prepare_ranking`, timed
  apart), history masked, top-20; (b) constrained beam search, `recommend(method="generate")` with K = 10 and 20
  beams, history excluded. Latency is per user (batches of `--batch_size` users); peak memory is the largest resident-set growth
  over the call, sampled every millisecond (what the call allocates on top of the model; glibc is told to give
  freed blocks back at once, so the figure is not hidden by memory the allocator keeps).
Ratios: each latency against the 10,000-item catalog's (the goal: beam search within 2x from 10k to 1M), and beam
search against ranking on the same catalog.

Commands:
    OMP_NUM_THREADS=1 python recipes/benchmark_generative.py                  # 10k / 100k / 1M
    python recipes/benchmark_generative.py --sizes 10000 100000 --users 16    # quicker
Writes `results.json` (run_info with the figures) to `--output_dir`.
"""

import gc
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig
from trl import TrlParser


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mmesid_artifacts import atomic_write_json  # noqa: E402
from mmesid_artifacts.recipe_args import document  # noqa: E402
from modeling_mmesid import MMESIDForSequentialRecommendation, MMESIDProcessor, MMESIDRecommender, evaluation  # noqa: E402


@dataclass
class BenchmarkArguments:
    sizes: list[int] = field(default_factory=lambda: [10_000, 100_000, 1_000_000], metadata={"help": "Catalogs."})
    users: int = field(default=32, metadata={"help": "Users timed per catalog and method."})
    batch_size: int = field(default=8, metadata={"help": "Users per batch (ranking and beam search)."})
    beams: list[int] = field(default_factory=lambda: [10, 20], metadata={"help": "K for beam search."})
    threads: int = field(default=1, metadata={"help": "torch CPU threads."})
    repeats: int = field(default=3, metadata={"help": "Timed passes per method (the fastest is reported)."})
    seed: int = 0
    output_dir: str = field(default="outputs/benchmark-generative", metadata={"help": "Where results.json goes."})


def _libc():
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: the peak figures then include memory the allocator keeps
        return None


LIBC = _libc()
M_MMAP_THRESHOLD = -3


class PeakRSS:
    """Largest resident-set growth (MB) while the block runs, sampled every millisecond from /proc/self/statm.

    Under glibc, allocations above 128 KiB go through mmap inside the block (a fixed `M_MMAP_THRESHOLD`), so a freed
    tensor leaves the resident set at once and the growth measures what the call holds; that is slower, so timed
    passes run outside this block (the threshold is raised again on exit).
    """

    def __enter__(self):
        if LIBC is not None:
            LIBC.mallopt(M_MMAP_THRESHOLD, 128 * 1024)
            LIBC.malloc_trim(0)
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.start = self.peak = self._rss()
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self._rss())
            time.sleep(0.001)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self._rss())
        self.mb = (self.peak - self.start) / 2**20
        if LIBC is not None:
            LIBC.mallopt(M_MMAP_THRESHOLD, 32 * 2**20)


def build(num_items: int, seed: int):
    tokenizer = AutoTokenizer.from_pretrained(REPO / "tests" / "fixtures" / "tiny-llama3-tokenizer")
    processor = MMESIDProcessor(tokenizer, modalities=["collaborative"], num_levels=4, codebook_size=256,
                                num_items=num_items)
    g = torch.Generator().manual_seed(seed)
    sids = torch.randint(0, 256, (num_items + 1, 1, 4), generator=g)
    sids[0] = 0
    embeddings = {"collaborative": torch.randn(num_items + 1, 8, generator=g)}
    embeddings["collaborative"][0] = 0
    text_config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                              num_key_value_heads=2, intermediate_size=64, max_position_embeddings=512)
    torch.manual_seed(seed)
    model = MMESIDForSequentialRecommendation.from_backbone(
        text_config, processor, embeddings, sids, sid_init="random", head="both"
    )
    return model.eval(), processor


def time_per_user(fn, histories, batch_size, repeats) -> tuple[float, float]:
    """(milliseconds per user, peak MB) of `fn(batch)` over `histories` in batches: the fastest of `repeats` passes
    after a warm-up batch, and the peak of one batch's call (measured apart)."""
    fn(histories[:batch_size])  # warm-up (allocator, kernels)
    best = float("inf")
    for _ in range(repeats):
        tic = time.perf_counter()
        for start in range(0, len(histories), batch_size):
            fn(histories[start : start + batch_size])
        best = min(best, time.perf_counter() - tic)
    with PeakRSS() as peak:  # one batch: the peak of one call
        fn(histories[:batch_size])
    return 1000 * best / len(histories), peak.mb


@torch.no_grad()
def measure(num_items: int, histories: list[list[int]], args: BenchmarkArguments) -> dict:
    model, processor = build(num_items, args.seed)
    row = {"num_items": num_items}
    recommender = MMESIDRecommender(model, processor)
    with PeakRSS() as peak:
        tic = time.perf_counter()
        index = recommender.generative_index()
        trie, codes = index.trie, index.codes
        row["trie_build_s"] = time.perf_counter() - tic
    row["trie_mb"] = trie.nbytes / 2**20
    row["id_table_mb"] = codes.numel() * codes.element_size() / 2**20
    row["trie_build_peak_mb"] = peak.mb
    row["max_collision_suffix"] = int(codes[1:, -1].max())

    tic = time.perf_counter()
    recommender.prepare_ranking()  # once per evaluation: item tokens, score table, prompt cache
    row["rank_prepare_s"] = time.perf_counter() - tic

    def rank(batch):
        scores = recommender.score_histories(batch, batch_size=len(batch))
        for r, history in enumerate(batch):
            scores[r, history] = float("-inf")
        return scores.topk(20, dim=-1).indices

    row["rank_ms"], row["rank_peak_mb"] = time_per_user(rank, histories, args.batch_size, args.repeats)
    for k in args.beams:
        def generate(batch, k=k):
            return recommender.recommend(batch, k=k, method="generate", batch_size=len(batch))

        row[f"gen{k}_ms"], row[f"gen{k}_peak_mb"] = time_per_user(generate, histories, args.batch_size, args.repeats)
        items = recommender.recommend(histories[: args.batch_size], k=k, method="generate")
        for history, beams in zip(histories, items.tolist()):  # every beam an item, none in the history, K distinct
            assert all(i > 0 for i in beams) and not set(beams) & set(history) and len(set(beams)) == k
    return row


def main(args: BenchmarkArguments) -> list[dict]:
    torch.set_num_threads(args.threads)
    start = time.time()
    g = torch.Generator().manual_seed(args.seed + 1)
    if min(args.sizes) < 1_000:
        raise ValueError(f"`sizes` must be at least 1,000 items each, got {args.sizes}.")
    lengths = torch.randint(5, 21, (args.users,), generator=g).tolist()  # items 1..1,000 exist in every catalog
    histories = [torch.randint(1, 1_001, (n,), generator=g).tolist() for n in lengths]
    print(f"users {args.users:,} (histories of 5-20 items) · batches of {args.batch_size} · threads {args.threads} · "
          "tiny random Llama (2 layers, 32 hidden) · random SIDs 1 x 4 x 256 + collision suffix")
    measure(1_000, histories[: args.batch_size], args)  # warm-up catalog, not reported: one-time costs
    rows = []
    for n in args.sizes:
        rows.append(measure(n, histories, args))
        gc.collect()
        print(f"  {n:>9,} items done ({time.time() - start:.0f} s)", flush=True)
    base = rows[0]
    gen = [f"gen{k}" for k in args.beams]
    header = (f"{'items':>10} {'trie s':>7} {'trie MB':>8} {'IDs MB':>7} {'rank ms/u':>10} {'rank MB':>8} "
              + " ".join(f"{g + ' ms/u':>11} {g + ' MB':>9}" for g in gen)
              + f" {'rank x10k':>9} " + " ".join(f"{g + ' x10k':>10}" for g in gen)
              + " " + " ".join(f"{g + '/rank':>10}" for g in gen))
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['num_items']:>10,} {r['trie_build_s']:>7.2f} {r['trie_mb']:>8.1f} {r['id_table_mb']:>7.1f} "
            f"{r['rank_ms']:>10.2f} {r['rank_peak_mb']:>8.1f} "
            + " ".join(f"{r[g + '_ms']:>11.2f} {r[g + '_peak_mb']:>9.1f}" for g in gen)
            + f" {r['rank_ms'] / base['rank_ms']:>9.2f} "
            + " ".join(f"{r[g + '_ms'] / base[g + '_ms']:>10.2f}" for g in gen)
            + " " + " ".join(f"{r[g + '_ms'] / r['rank_ms']:>10.2f}" for g in gen)
        )
    print("\n".join(lines))
    print("ms/u: milliseconds per user (ranking: item tables prepared once, timed apart as rank_prepare_s); MB: peak "
          "resident-set growth during the calls; x10k: latency over the 10,000-item catalog's; gen/rank: beam search "
          "over ranking on the same catalog. rank_prepare_s: "
          + ", ".join(f"{r['num_items']:,}: {r['rank_prepare_s']:.2f}" for r in rows))
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "results.json", {
        "results": rows, "run_info": evaluation.run_info(time.time() - start, vars(args)),
    })
    print(f"wrote {out / 'results.json'}")
    return rows


if __name__ == "__main__":
    (script_args,) = document(TrlParser((BenchmarkArguments,)), __doc__, __file__).parse_args_and_config()
    main(script_args)
