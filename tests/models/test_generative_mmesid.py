# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Tests of the generative head (issue 16): semantic-ID targets with a collision suffix, the prefix trie, constrained
beam search through `model.generate`, the joint loss, training, and the trainer's handling of the three heads."""

import pytest
import torch
from mmesid_testing import tiny_mmesid, tiny_text_config
from transformers import AutoTokenizer, LogitsProcessor

from modeling_mmesid import MMESIDConfig, MMESIDForSequentialRecommendation
from modeling_mmesid.modeling_mmesid import SIDTrie, SIDTrieLogitsProcessor


NUM_ITEMS = 50
MODALITIES = ["collaborative", "text"]
HISTORIES = [[1, 2, 3], [4], [], [50, 7, 7, 9, 11]]


def build(tokenizer_dir, seed=0, sids=None, **config_kwargs):
    """Tiny MME-SID (`mmesid_testing.tiny_mmesid`): 2-layer random Llama, 50 items, 2 modalities, 2 levels x 8 codes
    (64 collaborative code pairs for 50 items: collisions, so the suffix matters)."""
    model, processor, _ = tiny_mmesid(AutoTokenizer.from_pretrained(tokenizer_dir), num_items=NUM_ITEMS,
                                      modalities=MODALITIES, seed=seed, sids=sids, **config_kwargs)
    return model, processor


def random_histories(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(1, NUM_ITEMS + 1, (int(torch.randint(0, 8, (1,), generator=g)),), generator=g).tolist()
            for _ in range(n)]


def check_beams(model, histories, items, k):
    """Every beam of every user is a catalog item, not in the user's history, and the k beams are k distinct items."""
    assert items.shape == (len(histories), k)
    for user, (history, row) in enumerate(zip(histories, items.tolist())):
        assert all(1 <= i <= model.config.num_items for i in row), f"user {user}: not a catalog item in {row}"
        assert not set(row) & set(history), f"user {user}: history item generated {set(row) & set(history)}"
        assert len(set(row)) == k, f"user {user}: {k} beams gave {len(set(row))} distinct items {row}"


class PassThrough(LogitsProcessor):
    """An unconstrained processor: every SID token at every step."""

    def __call__(self, input_ids, scores):
        return scores


@pytest.fixture
def tokenizer_dir(tiny_tokenizer_dir):
    return tiny_tokenizer_dir


# ----------------------------------------------------------------------------------------------- config
def test_default_head_is_ranking_and_generative_fields_round_trip(tokenizer_dir, tmp_path):
    model, processor = build(tokenizer_dir)
    assert model.config.head == "ranking" and model.config.generative_id == "collaborative"
    out = model(**_inputs(processor))
    assert out.logits is None and out.generative_loss is None and out.item_logits is not None
    config = build(tokenizer_dir, head="both", generative_loss_weight=0.5, generative_id="combined")[0].config
    config.save_pretrained(tmp_path)
    loaded = MMESIDConfig.from_pretrained(tmp_path)
    assert (loaded.head, loaded.generative_loss_weight, loaded.generative_id) == ("both", 0.5, "combined")
    assert loaded.generative_id_length == 2 * 2 + 1 and loaded.generative_modalities == MODALITIES


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"head": "generative", "generative_loss_weight": 0.0}, r"`generative_loss_weight` must be positive, got 0.0"),
        ({"head": "generative", "modalities": ["text"], "modality_dims": [24]},
         r"`generative_id='collaborative'` needs the collaborative modality"),
    ],
)
def test_generative_config_refusals(kwargs, match):
    base = {"text_config": tiny_text_config(vocab_size=200), "num_items": 50,
            "modalities": MODALITIES, "modality_dims": [16, 24], "num_levels": 2, "codebook_size": 8}
    with pytest.raises(ValueError, match=match):
        MMESIDConfig(**{**base, **kwargs})


# ----------------------------------------------------------------------------------------------- IDs and trie
def test_collision_suffix_gives_every_item_one_id(tokenizer_dir):
    sids = torch.zeros(NUM_ITEMS + 1, 2, 2, dtype=torch.long)
    for item in range(1, NUM_ITEMS + 1):  # a unique (collaborative) pair per item ...
        sids[item, 0] = torch.tensor([item // 8, item % 8])
    sids[[3, 9, 20], 0] = torch.tensor([5, 5])  # ... except three items sharing (5, 5), like item 45
    model, _ = build(tokenizer_dir, sids=sids, head="generative")
    codes = model.generative_codes()
    assert codes.shape == (NUM_ITEMS + 1, 3)
    assert codes[[3, 9, 20, 45]].tolist() == [[5, 5, 0], [5, 5, 1], [5, 5, 2], [5, 5, 3]]  # rank by item id
    assert codes[10].tolist() == [1, 2, 0]
    assert len({tuple(r) for r in codes[1:].tolist()}) == NUM_ITEMS
    # token ids: levels 0, 1 of the collaborative block, then the suffix on level 0's tokens
    offset = model.config.sid_token_offset
    assert model.generative_position_token_ids().tolist() == [offset, offset + 8, offset]
    assert model.generative_token_ids(torch.tensor([9])).tolist() == [[offset + 5, offset + 8 + 5, offset + 1]]


def test_collision_suffix_refuses_more_collisions_than_codes(tokenizer_dir):
    sids = torch.zeros(NUM_ITEMS + 1, 2, 2, dtype=torch.long)  # all 50 items share one ID; 8 suffix codes
    model, _ = build(tokenizer_dir, sids=sids, head="generative")
    with pytest.raises(ValueError, match=r"50 items share one `generative_id='collaborative'` ID.*'combined'"):
        model.generative_codes()


def test_trie_children_items_and_paths_hand_computed():
    codes = torch.tensor([[0, 1], [0, 3], [2, 1], [2, 0]])  # items 1..4
    trie = SIDTrie(codes, codebook_size=4)
    assert [k.tolist() for k in trie.keys] == [[0, 2], [1, 3, 4, 5]]  # depth 2: parent * 4 + code
    assert [c.tolist() for c in trie.counts] == [[2, 2], [1, 1, 1, 1]]
    _, child_codes, valid = trie.children(0, torch.tensor([0]))
    assert child_codes[valid].tolist() == [0, 2]
    _, child_codes, valid = trie.children(1, torch.tensor([0, 1]))  # children of prefixes (0,) and (2,)
    assert [child_codes[r][valid[r]].tolist() for r in range(2)] == [[1, 3], [0, 1]]
    assert trie.items(torch.tensor([[2, 0], [0, 3], [1, 1], [0, 2]])).tolist() == [4, 2, 0, 0]
    assert trie.paths(codes).tolist() == [[0, 0], [0, 1], [1, 3], [1, 2]]
    assert trie.nbytes == (2 + 4) * 8 + (2 + 3) * 4 + (2 + 4) * 4 + 4 * 4
    with pytest.raises(ValueError, match="1 items share their ID"):
        SIDTrie(torch.tensor([[0, 1], [0, 1]]), codebook_size=4)
    with pytest.raises(ValueError, match=r"`codes` must lie in 0..3, got 0..4"):
        SIDTrie(torch.tensor([[0, 4]]), codebook_size=4)


def test_logits_processor_keeps_only_children_renormalized_and_excludes_history():
    codes = torch.tensor([[0, 1], [0, 3], [2, 1], [2, 0]])  # items 1..4; tokens: position d code c = 10 + 4d + c
    trie = SIDTrie(codes, codebook_size=4)
    offsets = torch.tensor([10, 14])
    scores = torch.log_softmax(torch.randn(2, 20, generator=torch.Generator().manual_seed(0)), -1)
    full = torch.cat([codes.new_zeros(1, 2), codes])  # row 0 = padding
    processor = SIDTrieLogitsProcessor(trie, offsets, num_beams=1, excluded_items=[[1, 2], []], item_codes=full)
    out = processor(torch.zeros(2, 0, dtype=torch.long), scores)
    # user 0 has items 1 and 2 (all of prefix 0) in the history: only code 2 is left; user 1 has codes 0 and 2
    assert torch.isfinite(out[0]).nonzero().flatten().tolist() == [12]
    assert torch.isfinite(out[1]).nonzero().flatten().tolist() == [10, 12]
    torch.testing.assert_close(out[1].exp().sum(), torch.tensor(1.0))  # renormalized over the allowed codes
    torch.testing.assert_close(out[1, 12] - out[1, 10], scores[1, 12] - scores[1, 10])
    step2 = processor(torch.tensor([[12], [10]]), scores)  # prefixes (2,) and (0,)
    assert torch.isfinite(step2[0]).nonzero().flatten().tolist() == [14, 15]
    assert torch.isfinite(step2[1]).nonzero().flatten().tolist() == [15, 17]


# ----------------------------------------------------------------------------------------------- loss
def _inputs(processor, histories=HISTORIES):
    inputs = dict(processor(histories))
    inputs["labels"] = torch.tensor([5 + 9 * i for i in range(len(histories))])
    return inputs


def test_generative_loss_equals_teacher_forced_cross_entropy_over_sid_tokens(tokenizer_dir):
    model, processor = build(tokenizer_dir, head="both", generative_loss_weight=0.3)
    inputs = _inputs(processor)
    out = model(**inputs)
    # by hand: the prompt plus the target's ID tokens but the last, one forward, softmax over the SID rows only
    response = model.generative_token_ids(inputs["labels"])  # (4, 3)
    ids = torch.cat([inputs["input_ids"], response[:, :-1]], 1)
    mask = torch.cat([inputs["attention_mask"], torch.ones_like(response[:, :-1])], 1)
    hidden = model.model(input_ids=ids, attention_mask=mask, item_ids=inputs["item_ids"]).last_hidden_state
    n = inputs["input_ids"].shape[1]
    first, count = model.config.sid_token_offset, model.config.num_sid_tokens
    rows = model.get_input_embeddings().weight[first : first + count]
    sid_logits = hidden[:, n - 1 :] @ rows.T  # (4, 3, num_sid_tokens)
    expected = torch.nn.functional.cross_entropy(sid_logits.flatten(0, 1), (response - first).flatten())
    torch.testing.assert_close(out.generative_loss, expected, rtol=1e-5, atol=1e-5)
    plain, _ = build(tokenizer_dir)  # same weights and seed, ranking head only
    ranking_only = plain(**inputs)
    torch.testing.assert_close(out.item_logits, ranking_only.item_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.loss, ranking_only.loss + 0.3 * expected, rtol=1e-5, atol=1e-5)
    assert out.logits.shape == (4, 3, model.config.text_config.vocab_size)
    assert torch.isinf(out.logits[..., :first]).all()


def test_generative_only_head_skips_item_scores_and_ignores_unlabelled_rows(tokenizer_dir):
    model, processor = build(tokenizer_dir, head="generative")
    inputs = _inputs(processor)
    out = model(**inputs)
    assert out.item_logits is None and out.fusion_weights is None
    assert out.loss is out.generative_loss
    labels = inputs["labels"].clone()
    labels[1] = -100
    partial = model(**{**inputs, "labels": labels}).loss
    kept = [0, 2, 3]
    sub = model(**_inputs(processor, [HISTORIES[i] for i in kept]) | {"labels": inputs["labels"][kept]})
    torch.testing.assert_close(partial, sub.loss, rtol=1e-4, atol=1e-4)


def test_generative_head_refuses_packed_rows_and_right_padding(tokenizer_dir):
    model, processor = build(tokenizer_dir, head="generative")
    inputs = _inputs(processor)
    with pytest.raises(ValueError, match=r"does not support prefix-tree packed rows"):
        model(**inputs, readout_positions=torch.zeros(4, 2, dtype=torch.long))
    right = {**inputs, "attention_mask": inputs["attention_mask"].flip(-1)}
    with pytest.raises(ValueError, match="must be left-padded"):
        model(**right)


# ----------------------------------------------------------------------------------------------- decoding
def test_every_beam_of_every_user_is_a_catalog_item_not_in_the_history(tokenizer_dir):
    model, processor = build(tokenizer_dir, head="generative")
    histories = HISTORIES + random_histories(12)
    for k in (1, 10, 20):
        items, scores = model.generate_items(histories, processor, k=k, batch_size=5)
        check_beams(model, histories, items, k)
        assert (scores[:, :-1] >= scores[:, 1:] - 1e-6).all()  # best first
        assert torch.isfinite(scores).all()
    # the trie maps every item's ID back to the item (one to one)
    trie, codes = model._generative_index()
    assert torch.equal(trie.items(codes[1:]), torch.arange(1, NUM_ITEMS + 1))
    # the ranked list equals `recommend(method="generate")`
    assert torch.equal(model.recommend(histories, processor, k=20, method="generate", batch_size=5), items)


def test_unconstrained_decoding_fails_the_beam_check(tokenizer_dir, monkeypatch):
    """The check above is not vacuous: with the trie processor replaced by a pass-through, beams end on IDs of no
    item (or repeat history items), and `check_beams` fails."""
    model, processor = build(tokenizer_dir, head="generative")
    histories = HISTORIES + random_histories(12)
    monkeypatch.setattr(SIDTrieLogitsProcessor, "__call__", PassThrough.__call__)
    items, _ = model.generate_items(histories, processor, k=10, batch_size=5)
    with pytest.raises(AssertionError):
        check_beams(model, histories, items, 10)


def test_generation_with_shared_prompt_cache_equals_full_prompts(tokenizer_dir):
    model, processor = build(tokenizer_dir, head="both")
    histories = HISTORIES + random_histories(6)
    cached = model.generate_items(histories, processor, k=8, batch_size=3, use_cache=True)
    full = model.generate_items(histories, processor, k=8, batch_size=10, use_cache=False)
    assert torch.equal(cached[0], full[0])
    torch.testing.assert_close(cached[1], full[1], rtol=1e-4, atol=1e-4)


def test_beam_scores_are_the_log_probabilities_of_the_items(tokenizer_dir):
    """The top beam's score is the sum over the ID of the renormalized log-probabilities of its tokens, computed
    here by teacher forcing the returned item (no history exclusion for an empty history)."""
    model, processor = build(tokenizer_dir, head="generative")
    items, scores = model.generate_items([[]], processor, k=3)
    trie, _ = model._generative_index()
    offsets = model.generative_position_token_ids()
    inputs = dict(processor([[]]))
    with torch.no_grad():
        out = model(**inputs, labels=items[0, :1])
    constraint = SIDTrieLogitsProcessor(trie, offsets)
    prefix = model.generative_token_ids(items[0, :1])
    total = 0.0
    for d in range(model.config.generative_id_length):
        step = constraint(prefix[:, :d], torch.log_softmax(out.logits[:, d], -1))
        total += float(step[0, prefix[0, d]])
    assert abs(total - float(scores[0, 0])) < 1e-4


def test_k_beyond_the_candidates_pads_with_zero(tokenizer_dir):
    model, processor = build(tokenizer_dir, head="generative")
    history = list(range(1, NUM_ITEMS - 2))  # 47 items seen: 3 candidates left
    items, scores = model.generate_items([history], processor, k=5)
    assert sorted(items[0, :3].tolist()) == [48, 49, 50] and items[0, 3:].tolist() == [0, 0]
    assert torch.isinf(scores[0, 3:]).all()


def test_recommend_method_refusals(tokenizer_dir):
    ranking, processor = build(tokenizer_dir)
    with pytest.raises(ValueError, match=r"`method='generate'` needs a generative head, but `config.head='ranking'`"):
        ranking.recommend(HISTORIES, processor, method="generate")
    with pytest.raises(ValueError, match=r"`method` must be 'rank', 'generate' or 'rerank', got 'beam'"):
        ranking.recommend(HISTORIES, processor, method="beam")
    generative, processor = build(tokenizer_dir, head="generative")
    with pytest.raises(ValueError, match=r"`method='rank'` needs the ranking head"):
        generative.recommend(HISTORIES, processor, method="rank")
    with pytest.raises(ValueError, match=r"`k` must be in 1..50"):
        generative.recommend(HISTORIES, processor, k=51, method="generate")


def test_generative_model_saves_and_loads(tokenizer_dir, tmp_path):
    model, processor = build(tokenizer_dir, head="both")
    before = model.generate_items(HISTORIES, processor, k=5)[0]
    model.save_pretrained(tmp_path)
    loaded = MMESIDForSequentialRecommendation.from_pretrained(tmp_path).eval()
    assert loaded.config.head == "both"
    assert torch.equal(loaded.generate_items(HISTORIES, processor, k=5)[0], before)


# ----------------------------------------------------------------------------------------------- training
def test_generative_head_trains_and_then_generates_the_targets(tokenizer_dir):
    model, processor = build(tokenizer_dir, head="generative")
    histories = [[1, 2], [7], [30, 31, 32], [44]]
    inputs = dict(processor(histories))
    inputs["labels"] = torch.tensor([3, 8, 33, 45])
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(60):
        loss = model(**inputs).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    assert losses[-1] < 0.1 * losses[0], losses
    items, _ = model.generate_items(histories, processor, k=5)
    check_beams(model, histories, items, 5)
    for row, target in zip(items.tolist(), [3, 8, 33, 45]):
        assert target in row, (target, row)  # each user's target among its 5 beams (of 50 items)


def _trainer(model, processor, tmp_path, **overrides):
    from datasets import Dataset

    from modeling_mmesid.trainer import MMESIDCollator, MMESIDTrainer, MMESIDTrainingConfig, compute_ranking_metrics

    rows = {"user_id": [1, 1, 2, 3], "history": [[1], [1, 2], [7], [30, 31]], "target": [2, 3, 8, 32]}
    args = MMESIDTrainingConfig(**{
        "output_dir": str(tmp_path), "per_device_train_batch_size": 4, "per_device_eval_batch_size": 4,
        "max_steps": 2, "learning_rate": 1e-2, "warmup_steps": 0, "use_cpu": True, "eval_strategy": "no",
        "save_strategy": "no", "load_best_model_at_end": False, "report_to": "none", "disable_tqdm": True,
        **overrides,
    })
    return MMESIDTrainer(model=model, args=args, train_dataset=Dataset.from_dict(rows),
                         eval_dataset=Dataset.from_dict(rows), processing_class=processor,
                         data_collator=MMESIDCollator(processor), compute_metrics=compute_ranking_metrics)


@pytest.mark.parametrize("head", ["ranking", "generative", "both"])
def test_trainer_loss_and_evaluation_for_each_head(tokenizer_dir, tmp_path, head):
    from modeling_mmesid.trainer import MMESIDCollator

    model, processor = build(tokenizer_dir, head=head)
    trainer = _trainer(model, processor, tmp_path)
    batch = MMESIDCollator(processor)([{"history": h, "target": t} for h, t in [([1], 2), ([7], 8), ([], 4)]])
    expected = model(**{k: v for k, v in batch.items() if k != "history"}).loss
    # one micro-batch normalized by its own 3 samples: the forward's mean loss
    torch.testing.assert_close(trainer.compute_loss(model, batch, num_items_in_batch=torch.tensor(3)), expected)
    trainer.train()
    metrics = trainer.evaluate()
    assert 0.0 <= metrics["eval_hr@10"] <= 1.0 and metrics["eval_loss"] > 0


def test_trainer_refuses_generative_head_with_prefix_packing(tokenizer_dir, tmp_path):
    model, processor = build(tokenizer_dir, head="both")
    with pytest.raises(ValueError, match=r"`prefix_packing=True` is not supported with the generative head"):
        _trainer(model, processor, tmp_path, prefix_packing=True)


def test_rerank_orders_the_beams_by_the_ranking_head(tokenizer_dir):
    """`method="rerank"`: the candidates are the `num_candidates` beams (same set), ordered by the ranking head's
    scores, computed here from `score_histories` and the beams independently."""
    model, processor = build(tokenizer_dir, head="both")
    histories = HISTORIES + random_histories(6)
    beams, _ = model.generate_items(histories, processor, k=12, batch_size=4)
    logits = model.score_histories(histories, processor)
    reranked = model.recommend(histories, processor, k=5, method="rerank", num_candidates=12, batch_size=4)
    for row, history in enumerate(histories):
        candidates = [int(i) for i in beams[row] if i > 0]
        expected = sorted(candidates, key=lambda i: -float(logits[row, i]))[:5]
        assert reranked[row].tolist() == expected
        assert not set(expected) & set(history)
    same_set = model.recommend(histories, processor, k=12, method="rerank", batch_size=4)
    assert torch.equal(same_set.sort(-1).values, beams.sort(-1).values)
    assert not torch.equal(same_set, beams)  # the ranking head reorders the beams
    with pytest.raises(ValueError, match=r"`num_candidates` must be at least `k` \(5\), got 3"):
        model.recommend(histories, processor, k=5, method="rerank", num_candidates=3)
    with pytest.raises(ValueError, match=r"`method='rerank'` needs both heads"):
        build(tokenizer_dir, head="generative")[0].recommend(histories, processor, method="rerank")
