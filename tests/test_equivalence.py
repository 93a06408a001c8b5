# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Every fast path equals the plain one (docs/METHOD.md, "What we add, all exact").

- Prefix-tree packing (4D mask, position ids, one row per user) gives the per-sample logits, loss and gradients.
- The shared prompt computed once (KV cache, or prepended: under gradient checkpointing, and in a one-row training
  batch) gives the same outputs as recomputing it in every row.
- Batched ranking (shared-prompt cache, precomputed item tokens and item score table, length bucketing) equals the
  one-user-at-a-time loop of the official inference.
Speed is measured in `recipes/benchmark.py`, never here.
"""

import pytest
import torch
from mmesid_testing import tiny_mmesid

from modeling_mmesid import MMESIDRecommender, evaluation
from modeling_mmesid.packing import (
    MMESIDPackedCollator,
    count_tokens,
    group_samples_by_user,
    pack_user,
    tree_attention_mask,
    user_samples,
)


NUM_ITEMS = 30
# (items, start): start 0 includes the empty-history sample, which the Llama-3 template renders differently
USERS = [([3, 7, 7, 1, 12, 5], 0), ([4, 9, 2], 1), ([8, 30, 11, 2, 6, 14, 1, 9], 2), ([5, 6], 0)]


def build_model(attn_implementation="eager", seed=0, tie_fusion=False, layout="chat"):
    """Tiny MME-SID (`mmesid_testing.tiny_mmesid`, 30 items) with the given attention implementation and prompt
    `layout`; `tie_fusion` makes the fusion weights smooth (temperature 1) instead of the paper's near one-hot 1e-3."""
    text_config_kwargs = {"num_key_value_heads": 2, "attn_implementation": attn_implementation}
    model, processor, _ = tiny_mmesid(num_items=NUM_ITEMS, seed=seed, text_config_kwargs=text_config_kwargs,
                                      fusion_temperature=1.0 if tie_fusion else 1e-3, layout=layout)
    model.config._attn_implementation = attn_implementation
    model.model.language_model.config._attn_implementation = attn_implementation
    return model, processor


def per_sample_inputs(processor, users=USERS):
    samples = [s for items, start in users for s in user_samples(items, start)]
    inputs = dict(processor([h for h, _ in samples]))
    inputs["labels"] = torch.tensor([t for _, t in samples])
    return inputs


def packed_inputs(processor, users=USERS, share_prompt=True, one_row=True):
    rows = [{"items": items, "start": start} for items, start in users]
    return MMESIDPackedCollator(processor, share_prompt=share_prompt, one_row=one_row)(rows)


# ----------------------------------------------------------------------------------------------- packing
@pytest.mark.parametrize("layout", ["chat", "causal"])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("share_prompt", [True, False])
@pytest.mark.parametrize("one_row", [True, False])
def test_packed_logits_equal_per_sample(attn, share_prompt, one_row, layout):
    model, processor = build_model(attn, layout=layout)
    with torch.no_grad():
        expected = model(**per_sample_inputs(processor))
        inputs = packed_inputs(processor, share_prompt=share_prompt, one_row=one_row)
        assert inputs["input_ids"].shape[0] == (1 if one_row else len(USERS))
        packed = model(**inputs)
    assert packed.item_logits.shape == expected.item_logits.shape == (16, NUM_ITEMS + 1)
    finite = torch.isfinite(expected.item_logits)
    diff = (packed.item_logits[finite] - expected.item_logits[finite]).abs().max()
    assert diff < 1e-4, f"max abs difference {diff:.2e}"
    torch.testing.assert_close(packed.user_embeddings, expected.user_embeddings, rtol=0, atol=1e-5)
    torch.testing.assert_close(packed.loss, expected.loss, rtol=0, atol=1e-5)


@pytest.mark.parametrize("layout", ["chat", "causal"])
@pytest.mark.parametrize("one_row", [True, False])
def test_packed_loss_and_gradients_equal_per_sample(one_row, layout):
    model, processor = build_model("sdpa", tie_fusion=True, layout=layout)
    model.train()  # no dropout in the tiny backbone: same function, gradients on
    grads = []
    for inputs in (per_sample_inputs(processor), packed_inputs(processor, one_row=one_row)):
        model.zero_grad()
        loss = model(**inputs).loss
        loss.backward()
        grads.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (loss_a, grad_a), (loss_b, grad_b) = grads
    torch.testing.assert_close(loss_b, loss_a, rtol=0, atol=1e-5)
    assert grad_a.keys() == grad_b.keys() and any("layers.0" in n for n in grad_a)
    for name in grad_a:
        torch.testing.assert_close(grad_b[name], grad_a[name], rtol=1e-4, atol=1e-5, msg=name)


def test_shared_prompt_under_gradient_checkpointing_matches_cache_path():
    """Checkpointed layers drop caches, so the model prepends the shared prompt to every row instead."""
    model, processor = build_model("eager", tie_fusion=True)
    model.train()
    inputs = packed_inputs(processor)
    reference = model(**inputs).loss
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    checkpointed = model(**inputs).loss
    torch.testing.assert_close(checkpointed, reference, rtol=0, atol=1e-5)
    checkpointed.backward()
    assert model.model.item_fusion.linear_1.weight.grad is not None


@pytest.mark.parametrize("layout", ["chat", "causal"])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_one_row_training_batch_runs_the_shared_prompt_inline(attn, layout):
    """A training batch of one packed row runs the shared prompt inside the row (one backbone pass, not a separate
    pass for the prompt's cache): the same loss and gradients as the cache path (eval mode, same function)."""
    model, processor = build_model(attn, tie_fusion=True, layout=layout)
    inputs = packed_inputs(processor, one_row=True)
    calls = []
    model.model.language_model.register_forward_hook(lambda module, args, output: calls.append(module.training))
    results = []
    # no dropout in the tiny backbone: the same function in both modes; the switch restores the separate pass
    for training, inline in ((False, True), (True, False), (True, True)):
        model.train(training)
        model.model.inline_shared_prompt = inline
        model.zero_grad()
        calls.clear()
        loss = model(**inputs).loss
        loss.backward()
        results.append((len(calls), loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                                    if p.grad is not None}))
    (eval_calls, loss_cache, grad_cache), (separate_calls, loss_separate, _), (inline_calls, loss_inline, grad_inline) = (
        results
    )
    assert (eval_calls, separate_calls, inline_calls) == (2, 2, 1)  # prompt + row, or the row with the prompt inside
    torch.testing.assert_close(loss_separate, loss_cache, rtol=0, atol=0)
    torch.testing.assert_close(loss_inline, loss_cache, rtol=0, atol=1e-5)
    assert grad_cache.keys() == grad_inline.keys() and any("layers.0" in n for n in grad_cache)
    for name in grad_cache:
        torch.testing.assert_close(grad_inline[name], grad_cache[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_shared_prompt_2d_mask_equals_full_prompts(attn):
    model, processor = build_model(attn)
    histories = [[1, 2, 3], [4], [], [30, 7, 7, 9, 11]]
    with torch.no_grad():
        full = model(**processor(histories))
        tail = processor(histories, shared_prompt=True)
        shared = model(**tail, shared_prompt_ids=torch.tensor([processor.shared_prompt_ids()]))
    assert tail["input_ids"].shape[1] + len(processor.shared_prompt_ids()) == processor(histories)["input_ids"].shape[1]
    torch.testing.assert_close(shared.item_logits, full.item_logits, rtol=0, atol=1e-5)


def test_prefix_tree_layout():
    _, processor = build_model()
    num_shared = len(processor.shared_prompt_ids())
    tree = pack_user(processor, [3, 7, 7, 1], 0, num_shared)
    assert tree.targets == [3, 7, 7, 1]
    assert tree.item_ids == [3, 7, 7]  # each history item once
    one = processor.prompt_token_ids(1)
    before_items = one.index(processor.item_token_id) - num_shared  # instruction tokens after the shared prompt
    response = len(one) - one.index(processor.item_token_id) - 1  # copied after each target position
    empty_branch = len(processor.prompt_token_ids(0)) - num_shared  # the empty history renders differently
    assert len(tree.input_ids) == empty_branch + before_items + 3 + 3 * response
    for readout, t in zip(tree.readouts, range(4)):
        assert tree.depths[readout] == len(processor.prompt_token_ids(t)) - 1  # its own prompt's final position
    mask = tree_attention_mask(tree.parents)
    for readout, t in zip(tree.readouts, range(4)):  # each copy sees exactly its own prompt
        assert int(mask[readout].sum()) == len(processor.prompt_token_ids(t)) - num_shared


def test_causal_layout_is_one_chain_per_user():
    """`layout="causal"`: every prompt is the previous one plus an item token, so a user's tree is one chain (no
    copies), read out at the instruction's last token (empty history) and then at each history item."""
    _, chat = build_model()
    _, processor = build_model(layout="causal")
    one = chat.prompt_token_ids(1)
    prefix = one[: one.index(chat.item_token_id)]  # the chat rendering up to the first placeholder
    item = processor.item_token_id
    assert processor.prompt_token_ids(0) == prefix
    assert processor.prompt_token_ids(3) == prefix + [item] * 3
    num_shared = len(processor.shared_prompt_ids())
    assert num_shared == len(prefix) - 1  # the instruction's last token stays in every row: the empty history's readout
    tree = pack_user(processor, [3, 7, 7, 1], 0, num_shared)
    assert tree.input_ids == [prefix[-1]] + [item] * 3  # 1 + 3 tokens for 4 samples (chat: one copy of the suffix each)
    assert tree.parents == [-1, 0, 1, 2] and tree.item_ids == [3, 7, 7] and tree.targets == [3, 7, 7, 1]
    assert tree.readouts == [0, 1, 2, 3] and tree.depths == list(range(num_shared, num_shared + 4))
    mask = tree_attention_mask(tree.parents)
    assert torch.equal(mask, torch.ones(4, 4, dtype=torch.bool).tril())  # plain causal
    tree = pack_user(processor, [4, 9, 2], 1, num_shared)  # start 1: the first readout is the first item
    assert tree.readouts == [1, 2] and tree.targets == [9, 2]
    chat_tokens = count_tokens(chat, USERS)["packed_shared_prompt"]
    causal_tokens = count_tokens(processor, USERS)["packed_shared_prompt"]
    # per user: one instruction token plus every item but the last
    assert causal_tokens - num_shared == sum(1 + len(items) - 1 for items, _ in USERS)
    assert causal_tokens < chat_tokens


def test_processor_and_model_must_share_the_layout():
    model, chat = build_model()
    _, causal = build_model(layout="causal")
    assert model.config.layout == "chat"
    with pytest.raises(ValueError, match="layout='causal'"):
        MMESIDRecommender(model, causal)
    MMESIDRecommender(model, chat).score_histories([[1, 2]])  # the matching processor is accepted


def test_one_row_keeps_the_users_apart():
    _, processor = build_model()
    one = packed_inputs(processor)
    per_user = packed_inputs(processor, one_row=False)
    sizes = [int((positions > 0).sum()) for positions in per_user["position_ids"]]  # padding sits at position 0
    # one row of exactly the users' tokens (no padding), fewer than the per-user rows padded to the longest user
    assert per_user["input_ids"].shape[0] == len(USERS)
    assert one["input_ids"].shape == (1, sum(sizes))
    assert sum(sizes) < per_user["input_ids"].numel()
    mask, start = one["attention_mask"][0, 0], 0
    for size in sizes:  # block diagonal: no token sees another user's tokens
        block = slice(start, start + size)
        assert not mask[block, :start].any() and not mask[block, start + size :].any()
        start += size
    assert one["labels"].tolist() == per_user["labels"].tolist()
    assert one["item_ids"].tolist() == per_user["item_ids"].tolist()


def test_one_row_context_check_counts_positions_not_the_row():
    model, processor = build_model()
    inputs = packed_inputs(processor)
    deepest = int(inputs["position_ids"].max()) + 1
    assert inputs["input_ids"].shape[1] > deepest  # several users side by side
    model.config.text_config.max_position_embeddings = deepest
    with torch.no_grad():
        model(**inputs)  # every prompt fits
    model.config.text_config.max_position_embeddings = deepest - 1
    with pytest.raises(ValueError, match=rf"The prompt has {deepest} tokens, more than the backbone's context"):
        model(**inputs)


def sample_rows() -> dict[str, list]:
    """The per-sample training rows (user_id, history, target) of `USERS`."""
    rows = {"user_id": [], "history": [], "target": []}
    for user, (items, start) in enumerate(USERS, start=1):
        for history, target in user_samples(items, start):
            rows["user_id"].append(user)
            rows["history"].append(history)
            rows["target"].append(target)
    return rows


def test_group_samples_by_user_and_count_tokens():
    _, processor = build_model()
    rows = sample_rows()
    grouped = group_samples_by_user(rows)
    assert [(r["items"], r["start"]) for r in grouped] == [(list(i), s) for i, s in USERS]
    counts = count_tokens(processor, USERS)
    per_sample = sum(len(processor.prompt_token_ids(len(h))) for h in rows["history"])
    assert counts["per_sample"] == per_sample and counts["samples"] == len(rows["target"])
    assert counts["packed_shared_prompt"] == counts["packed"] - counts["shared_prompt_tokens"] * (len(USERS) - 1)
    assert counts["packed"] < counts["per_sample"]
    bad = {"user_id": [1, 1], "history": [[1], [2, 3]], "target": [2, 4]}
    with pytest.raises(ValueError, match="not the prefixes of one sequence"):
        group_samples_by_user(bad)


def test_packed_rows_read_from_train_sequences_equal_the_regrouped_split(tmp_path):
    """`train_sequences.parquet` carries each user's `start`: the per-user rows read from it equal those regrouped
    from `train.parquet` exactly (users of 1..12 items, at most 4 samples each), and so do the packed loss."""
    from modeling_mmesid import data

    sequences = {9: [3], 2: [4, 9], 14: [1, 2, 3], 5: [8, 30, 11, 2, 6, 14, 1, 9, 4, 4, 7, 2], 7: [5, 6, 7, 8],
                 30: [12, 13, 14, 15, 16, 17]}
    data.write_dataset(tmp_path, sequences, max_train_samples_per_user=4)
    direct = data.load_train_users(tmp_path)
    regrouped = group_samples_by_user(data.load_splits(tmp_path)["train"])
    assert direct.column_names == regrouped.column_names == ["user_id", "items", "start"]
    assert direct.to_dict() == regrouped.to_dict()
    assert [len(i) - s for i, s in zip(direct["items"], direct["start"])] == [1, 2, 1, 4, 2, 4]  # 5 capped at 4

    model, processor = build_model("sdpa")
    collator = MMESIDPackedCollator(processor)
    batches = [collator(list(rows)) for rows in (direct, regrouped)]
    assert batches[0].keys() == batches[1].keys()
    assert all(torch.equal(batches[0][k], batches[1][k]) for k in batches[0])
    with torch.no_grad():
        losses = [model(**batch).loss for batch in batches]
        per_sample = model(**per_sample_inputs(processor, list(zip(direct["items"], direct["start"])))).loss
    assert torch.equal(losses[0], losses[1])
    torch.testing.assert_close(losses[0], per_sample, rtol=1e-5, atol=1e-5)


def test_packed_collator_routes_per_sample_rows():
    _, processor = build_model()
    collator = MMESIDPackedCollator(processor)
    with pytest.raises(ValueError, match="per-sample rows"):
        collator([{"history": [1], "target": 2}])
    fallback = MMESIDPackedCollator(processor, per_sample_collator=lambda rows: {"n": len(rows)})
    assert fallback([{"history": [1], "target": 2}]) == {"n": 1}


def test_4d_mask_needs_position_ids_and_readouts():
    model, processor = build_model()
    inputs = packed_inputs(processor)
    with pytest.raises(ValueError, match="needs explicit `position_ids`"):
        model(**{k: v for k, v in inputs.items() if k != "position_ids"})
    with pytest.raises(ValueError, match="needs `readout_positions`"):
        model(**{k: v for k, v in inputs.items() if k not in ("readout_positions", "labels")})


# ----------------------------------------------------------------------------------------------- ranking
def per_user_official_loop(model, processor, histories):
    """The official inference: one user at a time, full prompt, every candidate's projections recomputed."""
    recommender = MMESIDRecommender(model, processor)
    return torch.cat([recommender.score_histories([h], batch_size=1, use_cache=False) for h in histories])


@pytest.mark.parametrize("layout", ["chat", "causal"])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_batched_ranking_equals_per_user_loop(attn, layout):
    model, processor = build_model(attn, layout=layout)
    histories = [[1, 2, 3], [4], [], [30, 7, 7, 9, 11], [5, 5], [12, 13, 14, 15, 16, 17, 18], [2]]
    expected = per_user_official_loop(model, processor, histories)
    batched = MMESIDRecommender(model, processor).score_histories(histories, batch_size=3)
    torch.testing.assert_close(batched, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(batched.argsort(dim=-1, descending=True)[:, :10], expected.argsort(dim=-1, descending=True)[:, :10])

    # through the evaluator: same ranks and metrics as the per-user loop
    targets = [9, 8, 1, 2, 3, 19, 20]
    split = {"history": histories, "target": targets}
    plain = MMESIDRecommender(model, processor).as_scorer(batch_size=1, use_cache=False)
    fast = MMESIDRecommender(model, processor).as_scorer(batch_size=4)
    ranks_plain = evaluation.rank_split(plain, split, batch_size=1)
    ranks_fast = evaluation.rank_split(fast, split, batch_size=4)
    assert ranks_fast.tolist() == ranks_plain.tolist()


def test_item_score_table_equals_score_heads():
    model, _ = build_model()
    h = torch.randn(5, 32)
    with torch.no_grad():
        expected, _, _ = model.score_items(h)
        table = model.item_score_table()
        folded = h @ table.T
    torch.testing.assert_close(folded[:, 1:], expected[:, 1:], rtol=1e-5, atol=1e-5)


def test_modality_scores_project_the_user_not_the_catalog():
    """`score_items` computes <h W_m, x_j>; the plain Eq. 8 head projects every item, <h, W_m x_j>. Same logits and
    the same gradients for the user states and the projections (what training back-propagates through)."""
    model, _ = build_model(tie_fusion=True)
    h = torch.randn(5, 32, requires_grad=True)
    upstream = torch.randn(5, NUM_ITEMS + 1)
    item_logits, modality_logits, weights = model.score_items(h)
    fast = (item_logits[:, 1:] * upstream[:, 1:]).sum()
    fast_grads = torch.autograd.grad(fast, [h, *model.model.modality_projections.parameters()])

    plain_scores = [model.item_head(h)]
    for modality in model.config.modalities:
        items = model.model.modality_projections[modality](model.model.modality_embeddings(modality))
        plain_scores.append(h @ items.T)
    plain_logits = (torch.stack(plain_scores, dim=-1) * weights).sum(-1)
    plain = (plain_logits[:, 1:] * upstream[:, 1:]).sum()
    plain_grads = torch.autograd.grad(plain, [h, *model.model.modality_projections.parameters()])

    torch.testing.assert_close(modality_logits[..., 1:], torch.stack(plain_scores[1:], -1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(item_logits[:, 1:], plain_logits[:, 1:], rtol=1e-5, atol=1e-5)
    assert len(fast_grads) == 1 + len(model.config.modalities)
    for got, expected in zip(fast_grads, plain_grads):
        assert expected.abs().max() > 0
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------- trainer
def test_trainer_packing_switch_gives_the_per_sample_loss(tmp_path):
    from datasets import Dataset

    from modeling_mmesid.trainer import MMESIDCollator, MMESIDTrainer, MMESIDTrainingConfig

    model, processor = build_model("sdpa", tie_fusion=True)
    rows = sample_rows()
    train = Dataset.from_dict(rows)
    args = MMESIDTrainingConfig(
        output_dir=str(tmp_path), prefix_packing=True, per_device_train_batch_size=len(USERS), use_cpu=True,
        eval_strategy="no", save_strategy="no", load_best_model_at_end=False, report_to="none", disable_tqdm=True,
    )
    trainer = MMESIDTrainer(model=model, args=args, train_dataset=train, processing_class=processor,
                            data_collator=MMESIDCollator(processor))
    assert args.prefix_packing and not args.packing  # ours on, TRL's text packing off
    assert isinstance(trainer.data_collator, MMESIDPackedCollator)
    assert trainer.train_dataset.num_rows == len(USERS)
    model.train()
    packed_batch = trainer.data_collator(list(trainer.train_dataset))
    per_sample_batch = MMESIDCollator(processor)(list(train))
    with torch.no_grad():
        packed = trainer.compute_loss(model, packed_batch)
        per_sample = trainer.compute_loss(model, per_sample_batch)
    torch.testing.assert_close(packed, per_sample, rtol=0, atol=1e-5)
    # evaluation rows stay per sample
    assert "history" in trainer.data_collator([{"user_id": 1, "history": [1, 2], "target": 3}])


def _one_sgd_step(tmp_path, rows, batch_size, accumulation, prefix_packing):
    """Trainable parameters before and after one optimizer step of `MMESIDTrainer` (LoRA, plain SGD, no clipping)."""
    from datasets import Dataset
    from peft import LoraConfig

    from modeling_mmesid.trainer import MMESIDCollator, MMESIDTrainer, MMESIDTrainingConfig

    model, processor = build_model("sdpa")
    args = MMESIDTrainingConfig(
        output_dir=str(tmp_path / f"b{batch_size}-ga{accumulation}"), prefix_packing=prefix_packing,
        per_device_train_batch_size=batch_size, gradient_accumulation_steps=accumulation, max_steps=1,
        optim="sgd", learning_rate=1e-2, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        max_grad_norm=0.0, train_sampling_strategy="sequential", use_cpu=True, eval_strategy="no",
        save_strategy="no", load_best_model_at_end=False, report_to="none", disable_tqdm=True, seed=0,
    )
    peft_config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["gate_proj", "up_proj", "down_proj"],
                             modules_to_save=model.non_backbone_module_names(), init_lora_weights="gaussian")
    trainer = MMESIDTrainer(model=model, args=args, train_dataset=Dataset.from_dict(rows), processing_class=processor,
                            data_collator=MMESIDCollator(processor), peft_config=peft_config)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    after = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    return before, after


@pytest.mark.parametrize(
    "prefix_packing, users, batch_size",
    [(False, USERS, 8), (True, USERS[:2], 1)],  # packed: micro-batches of 6 and 2 samples (one user each)
    ids=["per-sample", "packed-unequal-micro-batches"],
)
def test_gradient_accumulation_equals_one_big_batch(tmp_path, prefix_packing, users, batch_size):
    """2 accumulated micro-batches of b give the update of one batch of 2b: the loss is the mean over all samples of
    the optimizer step (not the mean of micro-batch means, and not GA x too large)."""
    rows = sample_rows()
    keep = [i for i, u in enumerate(rows["user_id"]) if u <= len(users)]
    rows = {k: [v[i] for i in keep] for k, v in rows.items()}
    before, big = _one_sgd_step(tmp_path, rows, 2 * batch_size, 1, prefix_packing)
    _, accumulated = _one_sgd_step(tmp_path, rows, batch_size, 2, prefix_packing)
    update = max(float((big[n] - before[n]).abs().max()) for n in big)
    diff = max(float((big[n] - accumulated[n]).abs().max()) for n in big)
    print(f"max |update| {update:.3e}, max |big - accumulated| {diff:.3e}")
    assert update > 1e-3  # the step moved the parameters
    assert diff <= 1e-5 * update, f"accumulated update differs from the big batch's by {diff:.3e} (update {update:.3e})"


@pytest.mark.parametrize("attn", ["flash_attention_2", "flex_attention"])
def test_4d_mask_refused_with_untested_attention(attn, tmp_path):
    from datasets import Dataset

    from modeling_mmesid.trainer import MMESIDTrainer, MMESIDTrainingConfig

    model, processor = build_model("sdpa")
    inputs = packed_inputs(processor)
    model.model.language_model.config._attn_implementation = attn  # the string only: no kernel is ever called
    with pytest.raises(ValueError, match=f"tested exact only with the `eager` and `sdpa`.*got '{attn}'"):
        model(**inputs)
    args = MMESIDTrainingConfig(
        output_dir=str(tmp_path), prefix_packing=True, use_cpu=True, eval_strategy="no", save_strategy="no",
        load_best_model_at_end=False, report_to="none", disable_tqdm=True,
    )
    with pytest.raises(ValueError, match=f"tested exact only with the `eager` and `sdpa`.*got '{attn}'"):
        MMESIDTrainer(model=model, args=args, train_dataset=Dataset.from_dict(sample_rows()), processing_class=processor)


def test_trainer_validation_through_the_cached_ranking_path_equals_the_per_sample_forward(tmp_path, monkeypatch):
    """`eval_cached_ranking` (shared-prompt KV cache, item tables once per evaluation) gives the per-sample forward's
    metrics and loss, with LoRA adapters and trained MME-SID modules active (a step of training first)."""
    from datasets import Dataset
    from peft import LoraConfig

    from modeling_mmesid import MMESIDForSequentialRecommendation
    from modeling_mmesid.trainer import MMESIDCollator, MMESIDTrainer, MMESIDTrainingConfig, compute_ranking_metrics

    prepared = []  # one entry per build of the recommender's ranking tables (the score table is one of them)
    original = MMESIDForSequentialRecommendation.item_score_table
    monkeypatch.setattr(MMESIDForSequentialRecommendation, "item_score_table",
                        lambda self, *a, **k: prepared.append(1) or original(self, *a, **k))
    rows = sample_rows()
    metrics = {}
    for cached in (False, True):
        model, processor = build_model("sdpa")
        args = MMESIDTrainingConfig(
            output_dir=str(tmp_path / str(cached)), per_device_train_batch_size=4, per_device_eval_batch_size=3,
            max_steps=2, learning_rate=5e-2, warmup_steps=0, use_cpu=True, eval_strategy="no", save_strategy="no",
            load_best_model_at_end=False, report_to="none", disable_tqdm=True, seed=3, eval_cached_ranking=cached,
        )
        lora = LoraConfig(r=4, lora_alpha=8, target_modules=["gate_proj", "up_proj", "down_proj"],
                          modules_to_save=model.non_backbone_module_names())
        trainer = MMESIDTrainer(model=model, args=args, train_dataset=Dataset.from_dict(rows),
                                eval_dataset=Dataset.from_dict(rows), processing_class=processor,
                                data_collator=MMESIDCollator(processor), peft_config=lora,
                                compute_metrics=compute_ranking_metrics)
        trainer.train()
        metrics[cached] = trainer.evaluate()
        assert len(prepared) == int(cached)  # the cached path builds its tables once per evaluation, the plain never
    plain, cached = metrics[False], metrics[True]
    assert abs(plain["eval_loss"] - cached["eval_loss"]) < 1e-4, (plain["eval_loss"], cached["eval_loss"])
    for key in ("eval_ndcg@10", "eval_hr@10", "eval_mrr@10", "eval_ndcg@5"):
        assert abs(plain[key] - cached[key]) < 1e-6, (key, plain[key], cached[key])


def test_trainer_evaluates_users_sorted_by_history_length_with_the_same_metrics(tmp_path):
    """`MMESIDTrainer.evaluate` batches the users by history length (less padding); the metrics are those of the
    dataset's own order (`SFTTrainer.evaluate`, unsorted)."""
    from datasets import Dataset
    from trl import SFTTrainer

    from modeling_mmesid.trainer import (
        MMESIDCollator,
        MMESIDTrainer,
        MMESIDTrainingConfig,
        compute_ranking_metrics,
        length_sorted,
    )

    rows = sample_rows()
    dataset = Dataset.from_dict(rows)
    ordered = length_sorted(dataset)
    lengths = [len(h) for h in ordered["history"]]
    assert lengths == sorted(lengths) and len(set(lengths)) > 1 and lengths != [len(h) for h in rows["history"]]
    assert sorted(map(tuple, ordered["history"])) == sorted(map(tuple, rows["history"]))
    assert length_sorted(Dataset.from_dict({"items": [[1, 2]]}))["items"] == [[1, 2]]  # no history: unchanged

    model, processor = build_model("sdpa")
    args = MMESIDTrainingConfig(
        output_dir=str(tmp_path), per_device_eval_batch_size=3, use_cpu=True, report_to="none", disable_tqdm=True,
    )
    trainer = MMESIDTrainer(model=model, args=args, train_dataset=dataset, eval_dataset=dataset,
                            processing_class=processor, data_collator=MMESIDCollator(processor),
                            compute_metrics=compute_ranking_metrics)
    sorted_metrics = trainer.evaluate()
    plain = SFTTrainer.evaluate(trainer)
    for key in ("eval_loss", "eval_ndcg@10", "eval_hr@10", "eval_mrr@10", "eval_ndcg@5"):
        assert abs(plain[key] - sorted_metrics[key]) < 1e-5, (key, plain[key], sorted_metrics[key])


# ----------------------------------------------------------------------------------------------- trainable SID rows
@pytest.mark.parametrize("layout", ["chat", "causal"])
def test_trainable_token_lookup_equals_peft_forward(layout):
    """`embed_token_ids` (the SID rows from PEFT's delta table, the rest from the frozen embedding) gives finetune.py's
    adapter exactly PEFT's own forward: the same loss and the same gradients, bit for bit, on a packed batch whose item
    tokens read trained SID rows; and it steps aside where PEFT's path is the only right one (adapter disabled)."""
    from types import SimpleNamespace

    from peft import get_peft_model
    from trl import ModelConfig

    import modeling_mmesid.modeling_mmesid as modeling
    from modeling_mmesid.trainer import lora_config_for

    model, processor = build_model("sdpa", layout=layout)
    lora = lora_config_for(model, ModelConfig(lora_r=4, lora_alpha=8, lora_dropout=0.0),
                           SimpleNamespace(sid_trainable=True))
    peft_model = get_peft_model(model, lora)
    embeddings = peft_model.get_base_model().get_input_embeddings()
    deltas = embeddings.token_adapter.trainable_tokens_delta["default"]
    with torch.no_grad():  # trained rows differ from the frozen ones, so a wrong source shows
        deltas.add_(torch.randn_like(deltas))
    peft_model.train()
    inputs = packed_inputs(processor)
    fast = modeling.embed_token_ids
    results = []
    layer_class = type(embeddings.token_adapter)
    merge = layer_class.get_merged_weights

    def no_merge(*args, **kwargs):
        raise AssertionError("the whole embedding matrix was rebuilt")

    for lookup, merged_weights in ((lambda module, ids: module(ids), merge), (fast, no_merge)):
        modeling.embed_token_ids, layer_class.get_merged_weights = lookup, merged_weights
        try:
            peft_model.zero_grad()
            loss = peft_model(**inputs).loss
            loss.backward()
        finally:
            modeling.embed_token_ids, layer_class.get_merged_weights = fast, merge
        results.append((loss.detach(), {n: p.grad.clone() for n, p in peft_model.named_parameters()
                                        if p.grad is not None}))
    (loss_peft, grad_peft), (loss_fast, grad_fast) = results
    assert torch.equal(loss_fast, loss_peft)
    assert grad_peft.keys() == grad_fast.keys() and any("trainable_tokens_delta" in n for n in grad_peft)
    for name in grad_peft:
        assert torch.equal(grad_fast[name], grad_peft[name]), name
    ids = torch.arange(model.config.sid_token_offset - 2, model.config.sid_token_offset + 3)
    assert torch.equal(fast(embeddings, ids), embeddings(ids))
    with peft_model.disable_adapter():  # PEFT's own path: the frozen rows only
        assert torch.equal(fast(embeddings, ids), embeddings.token_adapter.base_layer(ids))
