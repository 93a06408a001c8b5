# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Tests of the generative head: semantic-ID targets with a collision suffix, the prefix trie, constrained
beam search through `model.generate`, the joint loss, training, and the trainer's handling of the three heads."""

import math

import pytest
import torch
from mmesid_testing import tiny_mmesid, tiny_text_config
from transformers import (
    AutoTokenizer,
    GenerationConfig,
    GenerationMixin,
    LogitsProcessor,
    LogitsProcessorList,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import CausalLMOutput

from modeling_mmesid import MMESIDConfig, MMESIDForSequentialRecommendation, MMESIDRecommender
from modeling_mmesid.generation_mmesid import (
    SIDTrie,
    SIDTrieLogitsProcessor,
    _compact_beams,
    generative_codes,
    generative_position_token_ids,
    generative_token_table,
)


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
    codes = generative_codes(model.model.sids, model.config)
    assert codes.shape == (NUM_ITEMS + 1, 3)
    assert codes[[3, 9, 20, 45]].tolist() == [[5, 5, 0], [5, 5, 1], [5, 5, 2], [5, 5, 3]]  # rank by item id
    assert codes[10].tolist() == [1, 2, 0]
    assert len({tuple(r) for r in codes[1:].tolist()}) == NUM_ITEMS
    # token ids: levels 0, 1 of the collaborative block, then the suffix on level 0's tokens
    offset = model.config.sid_token_offset
    assert generative_position_token_ids(model.config).tolist() == [offset, offset + 8, offset]
    tokens = generative_token_table(model.model.sids, model.config)
    assert tokens[[9]].tolist() == [[offset + 5, offset + 8 + 5, offset + 1]]


def test_collision_suffix_refuses_more_collisions_than_codes(tokenizer_dir):
    sids = torch.zeros(NUM_ITEMS + 1, 2, 2, dtype=torch.long)  # all 50 items share one ID; 8 suffix codes
    model, _ = build(tokenizer_dir, sids=sids, head="generative")
    with pytest.raises(ValueError, match=r"50 items share one `generative_id='collaborative'` ID.*'combined'"):
        generative_codes(model.model.sids, model.config)


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


def test_logits_processor_keeps_only_children_and_excludes_history():
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
    # the model's log-probabilities, unchanged (not renormalized over the allowed codes)
    torch.testing.assert_close(out[0, [12]], scores[0, [12]])
    torch.testing.assert_close(out[1, [10, 12]], scores[1, [10, 12]])
    # the same from raw logits (a log-softmax over the full vocabulary first)
    torch.testing.assert_close(processor(torch.zeros(2, 0, dtype=torch.long), scores * 1.0 + 5.0), out)
    # the opt-in renormalizes over the allowed codes
    renormalized = SIDTrieLogitsProcessor(trie, offsets, excluded_items=[[1, 2], []], item_codes=full,
                                          renormalize=True)(torch.zeros(2, 0, dtype=torch.long), scores)
    torch.testing.assert_close(renormalized[1].exp().sum(), torch.tensor(1.0))
    torch.testing.assert_close(renormalized[1, 12] - renormalized[1, 10], scores[1, 12] - scores[1, 10])
    step2 = processor(torch.tensor([[12], [10]]), scores)  # prefixes (2,) and (0,)
    assert torch.isfinite(step2[0]).nonzero().flatten().tolist() == [14, 15]
    assert torch.isfinite(step2[1]).nonzero().flatten().tolist() == [15, 17]


# The example: items 1=(0,0), 2=(0,1), 3=(1,0), 4=(1,1); the model gives 0.5/0.5 at the first level, 0.9/0.1
# under code 0 and 0.5/0.5 under code 1; the history is {1}. The model's own probabilities rank 3 and 4 (0.25) above
# 2 (0.05); renormalizing over the allowed codes gave item 2 the excluded item 1's mass (0.5) and ranked it first.
EXAMPLE_CODES = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]])
EXAMPLE_OFFSETS = torch.tensor([10, 12])  # token of code c at position d: 10 + 2d + c
EXAMPLE_VOCAB = 16


def _example_log_probs() -> torch.Tensor:
    """`table[t]`: the model's next-token log-probabilities after token `t` (0 = the prompt), over the full vocabulary."""
    table = torch.full((EXAMPLE_VOCAB, EXAMPLE_VOCAB), float("-inf"))
    table[0, [10, 11]] = torch.tensor([0.5, 0.5]).log()
    table[10, [12, 13]] = torch.tensor([0.9, 0.1]).log()
    table[11, [12, 13]] = torch.tensor([0.5, 0.5]).log()
    table[12:, 0] = 0.0
    return table


def _example_processor(**kwargs):
    trie = SIDTrie(EXAMPLE_CODES, codebook_size=2)
    full = torch.cat([EXAMPLE_CODES.new_zeros(1, 2), EXAMPLE_CODES])
    return trie, SIDTrieLogitsProcessor(trie, EXAMPLE_OFFSETS, excluded_items=[[1]], item_codes=full, **kwargs)


def test_logits_processor_scores_are_the_models_probabilities_with_history_excluded():
    """Processor level, hand-made logits (raw: shifted by +3, not normalized): each item's score is the sum of the
    processor's outputs along its ID."""
    _, processor = _example_processor()
    logits = _example_log_probs() + 3.0
    scores = {}
    for item, (c0, c1) in enumerate(EXAMPLE_CODES.tolist(), start=1):
        first = processor(torch.zeros(1, 0, dtype=torch.long), logits[[0]])
        second = processor(torch.tensor([[10 + c0]]), logits[[10 + c0]])
        scores[item] = float(first[0, 10 + c0] + second[0, 12 + c1])
    assert scores[1] == float("-inf")  # the history item
    assert scores[2] == pytest.approx(math.log(0.05), abs=1e-5)
    assert scores[3] == pytest.approx(math.log(0.25), abs=1e-5) and scores[4] == pytest.approx(math.log(0.25), abs=1e-5)
    assert sorted([2, 3, 4], key=lambda i: -scores[i])[2] == 2  # 3 and 4 before 2


class _ExampleLM(PreTrainedModel, GenerationMixin):
    """A language model whose next-token logits are `_example_log_probs()[last token] + 3` (raw logits)."""

    config_class = PretrainedConfig

    def __init__(self, config):
        super().__init__(config)
        self.table = torch.nn.Buffer(_example_log_probs() + 3.0)
        self.unused = torch.nn.Linear(1, 1)  # a parameter, so that `generate` finds a device and dtype
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        return CausalLMOutput(logits=self.table[input_ids])


@pytest.mark.parametrize("renormalize", [False, True])
def test_beam_search_ranks_items_by_the_models_probabilities(renormalize):
    """Through `generate` with 3 beams (as `generate_items` calls it): the beams' scores are log 0.25, log 0.25,
    log 0.05 and item 2 comes last; the `renormalize=True` opt-in gives 0.5, 0.25, 0.25 with item 2 first."""
    opt_in = {"renormalize": True} if renormalize else {}  # the default must be the model's probabilities
    trie, processor = _example_processor(prompt_length=1, num_beams=3, **opt_in)
    model = _ExampleLM(PretrainedConfig(vocab_size=EXAMPLE_VOCAB, is_decoder=True)).eval()
    generation_config = GenerationConfig(
        num_beams=3, num_return_sequences=3, do_sample=False, max_new_tokens=2, min_new_tokens=2, length_penalty=0.0,
        early_stopping=False, pad_token_id=0, eos_token_id=None, bos_token_id=None, return_dict_in_generate=True,
        output_scores=True, use_cache=False,
    )
    out = model.generate(torch.zeros(1, 1, dtype=torch.long), generation_config=generation_config,
                         logits_processor=LogitsProcessorList([processor]))
    items = trie.items(out.sequences[:, 1:] - EXAMPLE_OFFSETS).tolist()
    if renormalize:
        assert items[0] == 2
        torch.testing.assert_close(out.sequences_scores, torch.tensor([0.5, 0.25, 0.25]).log())
    else:
        assert sorted(items[:2]) == [3, 4] and items[2] == 2
        torch.testing.assert_close(out.sequences_scores, torch.tensor([0.25, 0.25, 0.05]).log())


# ----------------------------------------------------------------------------------------------- loss
def _inputs(processor, histories=HISTORIES, model=None, labels=None):
    """The processor's prompts and `labels`; given a model with a generative head, the targets' ID tokens appended as
    the response (`generative_labels`), as `MMESIDCollator` builds training batches."""
    inputs = dict(processor(histories))
    labels = torch.tensor([5 + 9 * i for i in range(len(histories))]) if labels is None else labels
    if model is not None and model.config.head != "ranking":
        table = generative_token_table(model.model.sids, model.config)
        inputs = processor.add_response(inputs, table[labels.clamp(min=1)], labels)
    inputs["labels"] = labels
    return inputs


def test_generative_loss_equals_teacher_forced_cross_entropy_over_sid_tokens(tokenizer_dir):
    model, processor = build(tokenizer_dir, head="both", generative_loss_weight=0.3)
    out = model(**_inputs(processor, model=model))
    # by hand: the prompt plus the target's ID tokens but the last, one forward, softmax over the SID rows only
    inputs = _inputs(processor)  # the prompts alone
    response = generative_token_table(model.model.sids, model.config)[inputs["labels"]]  # (4, 3)
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
    inputs = _inputs(processor, model=model)
    out = model(**inputs)
    assert out.item_logits is None and out.fusion_weights is None
    assert out.loss is out.generative_loss
    labels = inputs["labels"].clone()
    labels[1] = -100
    partial = model(**_inputs(processor, model=model, labels=labels)).loss
    kept = [0, 2, 3]
    sub = model(**_inputs(processor, [HISTORIES[i] for i in kept], model=model, labels=inputs["labels"][kept]))
    torch.testing.assert_close(partial, sub.loss, rtol=1e-4, atol=1e-4)


def test_generative_head_refuses_packed_rows_and_right_padding(tokenizer_dir):
    model, processor = build(tokenizer_dir, head="generative")
    inputs = _inputs(processor, model=model)
    with pytest.raises(ValueError, match=r"does not support prefix-tree packed rows"):
        model(**inputs, readout_positions=torch.zeros(4, 2, dtype=torch.long))
    prompts = _inputs(processor)
    with pytest.raises(ValueError, match=r"trains on `generative_labels`"):
        model(**prompts)  # labels without the response
    right = {**prompts, "attention_mask": prompts["attention_mask"].flip(-1)}
    response = inputs["generative_labels"]
    with pytest.raises(ValueError, match="must be left-padded"):
        processor.add_response(right, response, prompts["labels"])


# ----------------------------------------------------------------------------------------------- decoding
def test_every_beam_of_every_user_is_a_catalog_item_not_in_the_history(tokenizer_dir):
    model, processor = build(tokenizer_dir, head="generative")
    histories = HISTORIES + random_histories(12)
    for k in (1, 10, 20):
        items, scores = MMESIDRecommender(model, processor).generate_items(histories, k=k, batch_size=5)
        check_beams(model, histories, items, k)
        assert (scores[:, :-1] >= scores[:, 1:] - 1e-6).all()  # best first
        assert torch.isfinite(scores).all()
    # the trie maps every item's ID back to the item (one to one)
    index = MMESIDRecommender(model, processor).generative_index()
    assert torch.equal(index.trie.items(index.codes[1:]), torch.arange(1, NUM_ITEMS + 1))
    # the ranked list equals `recommend(method="generate")`
    recommended = MMESIDRecommender(model, processor).recommend(histories, k=20, method="generate", batch_size=5)
    assert torch.equal(recommended, items)


def test_unconstrained_decoding_fails_the_beam_check(tokenizer_dir, monkeypatch):
    """The check above is not vacuous: with the trie processor replaced by a pass-through, beams end on IDs of no
    item (or repeat history items), and `check_beams` fails."""
    model, processor = build(tokenizer_dir, head="generative")
    histories = HISTORIES + random_histories(12)
    monkeypatch.setattr(SIDTrieLogitsProcessor, "__call__", PassThrough.__call__)
    items, _ = MMESIDRecommender(model, processor).generate_items(histories, k=10, batch_size=5)
    with pytest.raises(AssertionError):
        check_beams(model, histories, items, 10)


def test_generation_with_shared_prompt_cache_equals_full_prompts(tokenizer_dir):
    model, processor = build(tokenizer_dir, head="both")
    histories = HISTORIES + random_histories(6)
    cached = MMESIDRecommender(model, processor).generate_items(histories, k=8, batch_size=3, use_cache=True)
    full = MMESIDRecommender(model, processor).generate_items(histories, k=8, batch_size=10, use_cache=False)
    assert torch.equal(cached[0], full[0])
    torch.testing.assert_close(cached[1], full[1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("history", [[], [1, 2, 3, 10, 20, 30]])
def test_beam_scores_are_the_log_probabilities_of_the_items(tokenizer_dir, history):
    """Every beam's score is the model's log-probability of its item: the sum over the ID of the log-softmax of the
    generative head (over all its SID tokens) at each token, computed here by teacher forcing the returned item,
    without the trie and whatever the excluded history (not renormalized over the allowed codes)."""
    model, processor = build(tokenizer_dir, head="generative")
    items, scores = MMESIDRecommender(model, processor).generate_items([history], k=3)
    with torch.no_grad():
        out = model(**_inputs(processor, [history] * 3, model=model, labels=items[0]))
    tokens = generative_token_table(model.model.sids, model.config)[items[0]]  # (3, id_length)
    expected = torch.log_softmax(out.logits, -1).gather(-1, tokens[..., None])[..., 0].sum(-1)
    torch.testing.assert_close(scores[0], expected, rtol=1e-4, atol=1e-4)


def test_k_beyond_the_candidates_pads_with_zero(tokenizer_dir):
    model, processor = build(tokenizer_dir, head="generative")
    history = list(range(1, NUM_ITEMS - 2))  # 47 items seen: 3 candidates left
    items, scores = MMESIDRecommender(model, processor).generate_items([history], k=5)
    assert sorted(items[0, :3].tolist()) == [48, 49, 50] and items[0, 3:].tolist() == [0, 0]
    assert torch.isinf(scores[0, 3:]).all()


def test_dropped_beams_move_to_the_end_of_the_list():
    """A repeated placeholder beam, a beam that is no item or a beam with a non-finite score was set to 0
    where it stood, so a later item was counted one rank too low. The kept beams move to the front in their order."""
    found = torch.tensor([[5, 5, 7, 9], [0, 3, 3, 8], [4, 6, 2, 1]])
    beam_scores = torch.tensor([[-1.0, -2.0, -3.0, -4.0], [-1.0, -2.0, -1e9, float("-inf")], [-1.0, -2.0, -3.0, -4.0]])
    items, scores = _compact_beams(found, beam_scores)
    assert items.tolist() == [[5, 7, 9, 0], [3, 0, 0, 0], [4, 6, 2, 1]]
    inf = float("-inf")
    assert scores.tolist() == [[-1.0, -3.0, -4.0, inf], [-2.0, inf, inf, inf], [-1.0, -2.0, -3.0, -4.0]]


def test_generate_items_compacts_a_repeated_beam(tokenizer_dir, monkeypatch):
    """The same through `generate_items` (and so `recommend(method="generate")` and the trainer's generated ranks),
    with `generate` replaced by constructed beams: item 5's repeat in second place leaves items 7 and 9 at ranks 2
    and 3."""
    from types import SimpleNamespace

    from modeling_mmesid.evaluation import ranks_from_recommendations

    model, processor = build(tokenizer_dir, head="generative")
    beams = torch.tensor([5, 5, 7, 9])
    prompt = torch.zeros(4, 3, dtype=torch.long)  # `generate_items` reads only the last `generative_id_length` tokens

    def fake_generate(**kwargs):
        tokens = generative_token_table(model.model.sids, model.config)[beams]
        return SimpleNamespace(sequences=torch.cat([prompt, tokens], 1),
                               sequences_scores=torch.tensor([-1.0, -1e9, -3.0, -4.0]))

    monkeypatch.setattr(model, "generate", fake_generate)
    items, scores = MMESIDRecommender(model, processor).generate_items([[1]], k=4)
    assert items.tolist() == [[5, 7, 9, 0]] and scores[0, :3].tolist() == [-1.0, -3.0, -4.0]
    assert ranks_from_recommendations(items, torch.tensor([9])).tolist() == [[3, 3]]
    assert MMESIDRecommender(model, processor).recommend([[1]], k=4, method="generate").tolist() == [[5, 7, 9, 0]]


def test_recommend_method_refusals(tokenizer_dir):
    ranking, processor = build(tokenizer_dir)
    with pytest.raises(ValueError, match=r"`method='generate'` needs a generative head, but `config.head='ranking'`"):
        MMESIDRecommender(ranking, processor).recommend(HISTORIES, method="generate")
    with pytest.raises(ValueError, match=r"`method` must be 'rank', 'generate' or 'rerank', got 'beam'"):
        MMESIDRecommender(ranking, processor).recommend(HISTORIES, method="beam")
    generative, processor = build(tokenizer_dir, head="generative")
    with pytest.raises(ValueError, match=r"`method='rank'` needs the ranking head"):
        MMESIDRecommender(generative, processor).recommend(HISTORIES, method="rank")
    with pytest.raises(ValueError, match=r"`k` must be in 1..50"):
        MMESIDRecommender(generative, processor).recommend(HISTORIES, k=51, method="generate")


def test_generative_model_saves_and_loads(tokenizer_dir, tmp_path):
    model, processor = build(tokenizer_dir, head="both")
    before = MMESIDRecommender(model, processor).generate_items(HISTORIES, k=5)[0]
    model.save_pretrained(tmp_path)
    loaded = MMESIDForSequentialRecommendation.from_pretrained(tmp_path).eval()
    assert loaded.config.head == "both"
    assert torch.equal(MMESIDRecommender(loaded, processor).generate_items(HISTORIES, k=5)[0], before)


# ----------------------------------------------------------------------------------------------- training
def test_generative_head_trains_and_then_generates_the_targets(tokenizer_dir):
    model, processor = build(tokenizer_dir, head="generative")
    histories = [[1, 2], [7], [30, 31, 32], [44]]
    inputs = _inputs(processor, histories, model=model, labels=torch.tensor([3, 8, 33, 45]))
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
    items, _ = MMESIDRecommender(model, processor).generate_items(histories, k=5)
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

    model, processor = build(tokenizer_dir, head=head)
    trainer = _trainer(model, processor, tmp_path)
    batch = trainer.data_collator([{"history": h, "target": t} for h, t in [([1], 2), ([7], 8), ([], 4)]])
    assert ("generative_labels" in batch) == (head != "ranking")  # the trainer gives the collator the ID tokens
    expected = model(**{k: v for k, v in batch.items() if k != "history"}).loss
    # one micro-batch normalized by its own 3 samples: the forward's mean loss
    torch.testing.assert_close(trainer.compute_loss(model, batch, num_items_in_batch=torch.tensor(3)), expected)
    trainer.train()
    metrics = trainer.evaluate()
    assert 0.0 <= metrics["eval_hr@10"] <= 1.0 and metrics["eval_loss"] > 0


def test_trainer_refuses_generative_head_with_prefix_packing(tokenizer_dir, tmp_path):
    model, processor = build(tokenizer_dir, head="both")
    with pytest.raises(ValueError, match=r"generative head \(`config.head='both'`\) does not support prefix-tree packed"):
        _trainer(model, processor, tmp_path, prefix_packing=True)


def test_rerank_orders_the_beams_by_the_ranking_head(tokenizer_dir):
    """`method="rerank"`: the candidates are the `num_candidates` beams (same set), ordered by the ranking head's
    scores, computed here from `score_histories` and the beams independently."""
    model, processor = build(tokenizer_dir, head="both")
    histories = HISTORIES + random_histories(6)
    recommender = MMESIDRecommender(model, processor)
    beams, _ = recommender.generate_items(histories, k=12, batch_size=4)
    logits = recommender.score_histories(histories)
    reranked = recommender.recommend(histories, k=5, method="rerank", num_candidates=12, batch_size=4)
    for row, history in enumerate(histories):
        candidates = [int(i) for i in beams[row] if i > 0]
        expected = sorted(candidates, key=lambda i: -float(logits[row, i]))[:5]
        assert reranked[row].tolist() == expected
        assert not set(expected) & set(history)
    same_set = recommender.recommend(histories, k=12, method="rerank", batch_size=4)
    assert torch.equal(same_set.sort(-1).values, beams.sort(-1).values)
    assert not torch.equal(same_set, beams)  # the ranking head reorders the beams
    with pytest.raises(ValueError, match=r"`num_candidates` must be at least `k` \(5\), got 3"):
        recommender.recommend(histories, k=5, method="rerank", num_candidates=3)
    with pytest.raises(ValueError, match=r"`method='rerank'` needs both heads"):
        MMESIDRecommender(build(tokenizer_dir, head="generative")[0], processor).recommend(histories, method="rerank")
