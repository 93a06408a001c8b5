# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""bf16 where the hardware runs it fast, float32 where it matters (modeling_mmesid/precision.py): the decision, the
dtypes of what trains and what is ranked, and bf16 against float32 on the same tiny model."""

import copy

import pytest
import torch
from test_modeling_mmesid import HISTORIES, MMESIDModelTester

from modeling_mmesid import MMESIDForSequentialRecommendation, MMESIDRecommender, precision


@pytest.fixture
def tester(tiny_tokenizer):
    return MMESIDModelTester(tiny_tokenizer)


def test_decision_order(monkeypatch):
    monkeypatch.setattr(precision, "bf16_is_fast", lambda device=None: True)
    monkeypatch.delenv(precision.PRECISION_ENV, raising=False)
    assert precision.use_bf16("cpu") is True  # the hardware
    assert precision.use_bf16("cpu", requested=False) is False  # an explicit request wins
    monkeypatch.setenv(precision.PRECISION_ENV, "float32")
    assert precision.use_bf16("cpu") is False  # then the switch
    assert precision.use_bf16("cpu", requested="bf16") is True
    assert precision.backbone_dtype("cpu") == torch.float32
    monkeypatch.setenv(precision.PRECISION_ENV, "half")
    with pytest.raises(ValueError, match="MMESID_PRECISION='half'"):
        precision.use_bf16("cpu")


def test_bf16_is_fast_reads_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert precision.bf16_is_fast("cpu") is False
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert precision.bf16_is_fast("cpu") is True


def _bf16_backbone(model):
    model = copy.deepcopy(model)
    model.model.language_model.to(torch.bfloat16)
    return model


def test_scores_and_loss_are_float32_with_a_bf16_backbone_and_under_autocast(tester):
    model = _bf16_backbone(tester.create_model())
    _, inputs = tester.prepare_config_and_inputs_for_common()
    with torch.no_grad():
        out = model(**inputs)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out_autocast = model(**inputs)
    for o in (out, out_autocast):
        assert o.item_logits.dtype == torch.float32 and o.loss.dtype == torch.float32
        assert o.modality_logits.dtype == torch.float32
    assert model.item_score_table().dtype == torch.float32
    scores = MMESIDRecommender(model, tester.processor).score_histories(HISTORIES)
    assert scores.dtype == torch.float32


def test_bf16_backbone_agrees_with_float32(tester):
    """Stated tolerance: every item logit within 5% of the float32 logits' standard deviation (measured: 1.5%), the
    loss within 0.1% relative (measured: 2e-5), and for each user at least 8 of the float32 top 10 items in the bf16
    top 10 (on a random tiny model the scores are close together: the hardest case for ties). The loss alone would
    not do: constant logits give the uniform loss, 0.5% from this model's."""
    model = tester.create_model()
    model_bf16 = _bf16_backbone(model)
    histories = [[1 + (u * 7 + k * 3) % 50 for k in range(1 + u % 9)] for u in range(40)]
    inputs = dict(tester.processor(histories))
    inputs["labels"] = torch.tensor([1 + (u * 11) % 50 for u in range(40)])
    with torch.no_grad():
        out32 = model(**inputs)
        out16 = model_bf16(**inputs)
    logits32, logits16 = out32.item_logits, out16.item_logits
    assert torch.isneginf(logits32[:, 0]).all() and torch.isneginf(logits16[:, 0]).all()  # the padding item
    scale = float(logits32[:, 1:].std())
    assert scale > 0.05, scale  # the items' scores spread out: a constant table could not match them
    torch.testing.assert_close(logits16[:, 1:], logits32[:, 1:], rtol=0, atol=0.05 * scale)
    loss32, loss16 = float(out32.loss), float(out16.loss)
    assert abs(loss16 - loss32) / loss32 < 1e-3, (loss16, loss32)
    top32 = MMESIDRecommender(model, tester.processor).recommend(histories, k=10)
    top16 = MMESIDRecommender(model_bf16, tester.processor).recommend(histories, k=10)
    overlap = [len(set(a.tolist()) & set(b.tolist())) for a, b in zip(top32, top16)]
    assert min(overlap) >= 8, overlap
    # and the float32 path is untouched: the plain and the cached float32 paths agree as before
    plain = MMESIDRecommender(model, tester.processor).score_histories(histories, use_cache=False)
    cached = MMESIDRecommender(model, tester.processor).score_histories(histories, use_cache=True)
    torch.testing.assert_close(plain, cached, rtol=1e-5, atol=1e-5)


def test_load_in_bf16_keeps_mmesid_modules_in_float32(tester, tmp_path):
    model = tester.create_model()
    model.save_pretrained(tmp_path)
    loaded = MMESIDForSequentialRecommendation.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert loaded.model.language_model.layers[0].mlp.gate_proj.weight.dtype == torch.bfloat16
    for name in ("item_head", "fusion_gate"):
        assert all(p.dtype == torch.float32 for p in getattr(loaded, name).parameters()), name
    assert all(p.dtype == torch.float32 for p in loaded.model.item_fusion.parameters())
    assert all(p.dtype == torch.float32 for p in loaded.model.modality_projections.parameters())
    for modality in tester.modalities:
        buffer = loaded.model.modality_embeddings(modality)
        assert buffer.dtype == torch.float32
        torch.testing.assert_close(buffer, model.model.modality_embeddings(modality), rtol=0, atol=0)
    scores = MMESIDRecommender(loaded.eval(), tester.processor).score_histories(HISTORIES)
    assert scores.dtype == torch.float32


def test_lora_with_a_bf16_backbone_trains_float32_parameters(tester):
    from peft import LoraConfig, get_peft_model

    model = _bf16_backbone(tester.create_model()).train()
    config = model.config
    sid_ids = list(range(config.sid_token_offset, config.sid_token_offset + config.num_sid_tokens))
    peft_model = get_peft_model(model, LoraConfig(
        r=8, lora_alpha=16, target_modules=["gate_proj", "up_proj", "down_proj"],
        modules_to_save=model.non_backbone_module_names(), trainable_token_indices={"embed_tokens": sid_ids},
    ))
    trainable = {n: p for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all(p.dtype == torch.float32 for p in trainable.values()), {
        n: p.dtype for n, p in trainable.items() if p.dtype != torch.float32
    }
    frozen = [p for n, p in peft_model.named_parameters() if not p.requires_grad and "layers" in n]
    assert frozen and all(p.dtype == torch.bfloat16 for p in frozen)
    _, inputs = tester.prepare_config_and_inputs_for_common()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = peft_model(**inputs).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for n, p in trainable.items() if "lora_B" in n)
