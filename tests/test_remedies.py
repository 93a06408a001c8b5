# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""The warm-start remedies of docs/LEARNING.md: item-table and fusion-gate initialization, the learning rate of the new
modules, and the distillation of a teacher's softmax. Each is checked against a value computed here independently."""

import math

import pytest
import torch
from mmesid_testing import tiny_mmesid, tiny_text_config
from test_equivalence import NUM_ITEMS, USERS, build_model, sample_rows

from modeling_mmesid.packing import MMESIDPackedCollator, user_samples


def _build(**config_kwargs):
    """Tiny MME-SID (`mmesid_testing.tiny_mmesid`, 30 items) on a one-layer backbone."""
    model, processor, tables = tiny_mmesid(
        num_items=NUM_ITEMS, text_config_kwargs={"num_hidden_layers": 1, "num_key_value_heads": 2}, **config_kwargs
    )
    return model, processor, tables["embeddings"]


# ------------------------------------------------------------------------------------------ initialization
def test_item_head_init_variants():
    normal, _, _ = _build()
    assert normal.config.item_head_init == "normal"
    std = float(normal.item_head.weight.detach().std())
    assert abs(std - normal.config.text_config.initializer_range) < 0.005  # the library default

    zero, _, _ = _build(item_head_init="zero")
    assert torch.count_nonzero(zero.item_head.weight) == 0

    collaborative, _, embeddings = _build(item_head_init="collaborative")
    w_c = collaborative.model.modality_projections["collaborative"].weight  # (H, 16)
    expected = embeddings["collaborative"] @ w_c.T
    expected[0] = 0
    torch.testing.assert_close(collaborative.item_head.weight, expected)

    tokens, _, _ = _build(item_head_init="item_tokens")
    ids = torch.arange(1, NUM_ITEMS + 1)
    with torch.no_grad():
        expected = tokens.model.get_item_features(ids)
    torch.testing.assert_close(tokens.item_head.weight[1:], expected)
    assert torch.count_nonzero(tokens.item_head.weight[0]) == 0


def test_item_head_init_collaborative_needs_the_modality():
    from modeling_mmesid import MMESIDConfig

    with pytest.raises(ValueError, match="item_head_init='collaborative'"):
        MMESIDConfig(
            text_config=tiny_text_config(vocab_size=100, num_hidden_layers=1),
            num_items=5, modalities=["text"], modality_dims=[8], item_head_init="collaborative",
        )


def test_fusion_gate_init_torch_starts_near_one_hot_normal_starts_uniform():
    normal, _, _ = _build()
    official, _, _ = _build(fusion_gate_init="torch")
    with torch.no_grad():
        uniform = normal.get_fusion_weights()[1:]
        peaked = official.get_fusion_weights()[1:]
    num_scores = uniform.shape[-1]
    assert (uniform - 1 / num_scores).abs().max() < 0.05  # gate outputs ~1e-5, / tau = 1e-3: still uniform
    assert peaked.max(-1).values.min() > 0.9  # gate outputs ~0.1, / 1e-3: one score takes everything
    # PyTorch's default bound for the first layer (fan_in 1): weights uniform in [-1, 1], not N(0, 0.02)
    assert official.fusion_gate.linear_1.weight.abs().max() > 0.1


# ------------------------------------------------------------------------------------------ trainer
def _trainer(tmp_path, model, processor, prefix_packing=False, teacher=None, **args):
    from datasets import Dataset

    from modeling_mmesid.trainer import MMESIDCollator, MMESIDTrainer, MMESIDTrainingConfig

    config = MMESIDTrainingConfig(
        output_dir=str(tmp_path), prefix_packing=prefix_packing, per_device_train_batch_size=2, use_cpu=True,
        eval_strategy="no", save_strategy="no", load_best_model_at_end=False, report_to="none", disable_tqdm=True,
        **args,
    )
    return MMESIDTrainer(model=model, args=config, train_dataset=Dataset.from_dict(sample_rows()),
                         processing_class=processor, data_collator=MMESIDCollator(processor), teacher=teacher)


@pytest.mark.parametrize(("new_lr", "gate_lr"), [(5e-3, None), (5e-3, 2e-4), (None, 2e-4)])
def test_new_modules_learning_rate_groups(tmp_path, new_lr, gate_lr):
    model, processor = build_model("sdpa")
    trainer = _trainer(tmp_path, model, processor, new_modules_learning_rate=new_lr, fusion_gate_learning_rate=gate_lr,
                       learning_rate=1e-4)
    optimizer = trainer.create_optimizer()
    lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    expected_new = 1e-4 if new_lr is None else new_lr
    expected_gate = expected_new if gate_lr is None else gate_lr
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        gate = name.startswith("fusion_gate.")
        own = name.split(".")[0] == "item_head" or name.startswith(("model.modality_projections", "model.item_fusion"))
        assert lr_of[id(parameter)] == (expected_gate if gate else expected_new if own else 1e-4), name
    # the gate has its own groups only when its rate is set (so optimizer states of older runs keep their layout)
    assert len(optimizer.param_groups) == (4 if gate_lr is None else 6)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == sum(p.requires_grad for p in model.parameters())


class _FixedTeacher:
    """Scores `scores[history length]` for every sample: a teacher whose softmax is known in advance."""

    def __init__(self, seed=1):
        self.table = torch.randn(64, NUM_ITEMS + 1, generator=torch.Generator().manual_seed(seed))
        self.calls = []

    def __call__(self, histories, lengths):
        self.calls.append(histories.clone())
        return self.table[lengths].clone()


def _reference_kl(teacher_scores, student_logits, history, temperature):
    """KL(p_t || p_s) item by item in float64, p_t over the items not in the history (and not padding)."""
    out = []
    for t_row, s_row, h_row in zip(teacher_scores.double(), student_logits.double(), history):
        hist = {int(i) for i in h_row if i != 0}
        if not hist:
            out.append(0.0)
            continue
        allowed = [j for j in range(1, NUM_ITEMS + 1) if j not in hist]
        t = t_row[allowed] / temperature
        p_t = torch.softmax(t, -1)
        log_p_s = torch.log_softmax(s_row[1:] / temperature, -1)  # the student's softmax over every item
        log_p_s = log_p_s[[j - 1 for j in allowed]]
        out.append(float((p_t * (p_t.log() - log_p_s)).sum()))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_distillation_kl_against_a_reference(tmp_path, temperature):
    model, processor = build_model("sdpa")
    teacher = _FixedTeacher()
    trainer = _trainer(tmp_path, model, processor, teacher=teacher, distill_weight=0.5,
                       distill_temperature=temperature)
    history = torch.tensor([[3, 7, 0], [0, 0, 0], [5, 5, 9]])
    logits = torch.randn(3, NUM_ITEMS + 1)
    logits[:, 0] = float("-inf")
    kl = trainer.distillation_kl(logits, history)
    lengths = (history != 0).sum(-1)
    expected = _reference_kl(teacher.table[lengths], logits, history, temperature)
    torch.testing.assert_close(kl.double(), expected, rtol=1e-5, atol=1e-6)
    assert kl[1] == 0  # empty history: no distillation


def test_distilled_loss_is_the_weighted_sum_and_anneals(tmp_path):
    model, processor = build_model("sdpa")
    model.train()
    teacher = _FixedTeacher()
    trainer = _trainer(tmp_path, model, processor, teacher=teacher, distill_weight=0.4, distill_temperature=2.0,
                       distill_anneal=0.5)
    trainer.state.max_steps = 10
    from modeling_mmesid.trainer import MMESIDCollator

    batch = MMESIDCollator(processor)(list(trainer.train_dataset))
    with torch.no_grad():
        plain = model(**{k: v for k, v in batch.items() if k != "history"})
        ce = torch.nn.functional.cross_entropy(plain.item_logits, batch["labels"], reduction="none")
        kl = trainer.distillation_kl(plain.item_logits, batch["history"])
        for step, alpha in [(0, 0.4), (2, 0.4 * (1 - 2 / 5)), (5, 0.0), (9, 0.0)]:
            trainer.state.global_step = step
            assert math.isclose(trainer.distill_alpha(), alpha, abs_tol=1e-12)
            loss = trainer.compute_loss(model, dict(batch))
            expected = ((1 - alpha) * ce + alpha * 4.0 * kl).mean()
            torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    assert float(kl.sum()) > 0


def test_distillation_needs_a_teacher(tmp_path):
    model, processor = build_model("sdpa")
    with pytest.raises(ValueError, match="needs a `teacher`"):
        _trainer(tmp_path, model, processor, distill_weight=0.5)


def test_packed_collator_histories_follow_the_labels(tmp_path):
    model, processor = build_model("sdpa")
    rows = [{"items": items, "start": start} for items, start in USERS]
    batch = MMESIDPackedCollator(processor, with_history=True)(rows)
    samples = [s for items, start in USERS for s in user_samples(items, start)]
    assert batch["labels"].tolist() == [t for _, t in samples]
    assert [[i for i in row if i] for row in batch["history"].tolist()] == [h for h, _ in samples]
    assert "history" not in MMESIDPackedCollator(processor)(rows)
    # the trainer turns it on with distillation, and the packed distilled loss equals the per-sample one
    teacher = _FixedTeacher()
    packed = _trainer(tmp_path, model, processor, prefix_packing=True, teacher=teacher, distill_weight=0.3)
    assert packed.data_collator.with_history
    plain = _trainer(tmp_path, model, processor, teacher=teacher, distill_weight=0.3)
    from modeling_mmesid.trainer import MMESIDCollator

    model.train()
    with torch.no_grad():
        a = packed.compute_loss(model, packed.data_collator(list(packed.train_dataset)))
        b = plain.compute_loss(model, MMESIDCollator(processor)(list(plain.train_dataset)))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
