# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""The model, its inference object and the trainer compute, bit for bit, what the code computed before they were
split apart: full-catalog scores (cached and plain paths, the evaluator's scorer), `recommend`'s top-k, the beams of
constrained generation and their scores, the forward's losses and the trainer's loss (distillation, the generative
mix, `num_items_in_batch`), on the tiny random models of both prompt layouts and every head.

The recorded tensors are `tests/fixtures/refactor_golden.safetensors`, written by
`tests/fixtures/make_refactor_golden.py` on one thread in float32, as this test runs."""

from pathlib import Path

import pytest
import torch
from mmesid_testing import tiny_mmesid
from safetensors.torch import load_file


GOLDEN = Path(__file__).resolve().parent / "fixtures" / "refactor_golden.safetensors"
CASES = [("chat", "ranking"), ("causal", "ranking"), ("chat", "both"), ("causal", "both"), ("chat", "generative")]
HISTORIES = [[1, 2, 3], [4], [], [50, 7, 7, 9, 11], [12, 13], [5, 6, 7, 8, 9, 10, 11, 12]]
SAMPLES = [
    {"history": [1], "target": 2},
    {"history": [7, 3], "target": 8},
    {"history": [], "target": 4},
    {"history": [30, 31, 32], "target": 33},
    {"history": [5, 5], "target": 50},
]
NUM_ITEMS = 50


def build_case(layout: str, head: str):
    model, processor, _ = tiny_mmesid(num_items=NUM_ITEMS, layout=layout, head=head)
    return model, processor


class FixedTeacher:
    """Scores `table[history length]`: a teacher whose scores are known in advance."""

    def __init__(self, seed: int = 1):
        self.table = torch.randn(64, NUM_ITEMS + 1, generator=torch.Generator().manual_seed(seed))

    def __call__(self, histories, lengths):
        return self.table[lengths].clone()


def trainer_for(model, processor, teacher=None):
    import tempfile

    from datasets import Dataset

    from modeling_mmesid.trainer import MMESIDCollator, MMESIDTrainer, MMESIDTrainingConfig

    rows = {"history": [s["history"] for s in SAMPLES], "target": [s["target"] for s in SAMPLES]}
    args = MMESIDTrainingConfig(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=5, use_cpu=True, eval_strategy="no",
        save_strategy="no", load_best_model_at_end=False, report_to="none", disable_tqdm=True,
        distill_weight=0.4 if teacher is not None else 0.0, distill_temperature=2.0,
    )
    return MMESIDTrainer(model=model, args=args, train_dataset=Dataset.from_dict(rows), processing_class=processor,
                         data_collator=MMESIDCollator(processor), teacher=teacher)


def golden_outputs(layout: str, head: str) -> dict[str, torch.Tensor]:
    """The recorded quantities of one case, computed with the current API."""
    from modeling_mmesid import MMESIDRecommender
    from modeling_mmesid.evaluation import pad_histories
    from modeling_mmesid.generation_mmesid import generative_token_table
    from modeling_mmesid.trainer import MMESIDCollator

    key = f"{layout}.{head}"
    out = {}
    model, processor = build_case(layout, head)
    with torch.no_grad():
        if head != "generative":
            # a fresh recommender per path, as each call of the old API built its own state
            out[f"{key}.scores_cached"] = MMESIDRecommender(model, processor).score_histories(HISTORIES, batch_size=3)
            out[f"{key}.scores_plain"] = MMESIDRecommender(model, processor).score_histories(
                HISTORIES, batch_size=3, use_cache=False
            )
            padded, lengths = pad_histories(HISTORIES)
            out[f"{key}.scorer"] = MMESIDRecommender(model, processor).as_scorer(batch_size=4)(padded, lengths)
            out[f"{key}.recommend_rank"] = MMESIDRecommender(model, processor).recommend(HISTORIES, k=7, batch_size=3)
        recommender = MMESIDRecommender(model, processor)
        if head != "ranking":
            items, scores = recommender.generate_items(HISTORIES, k=5, batch_size=3)
            out[f"{key}.generate_items"], out[f"{key}.generate_scores"] = items, scores
            items, scores = recommender.generate_items(HISTORIES, k=4, batch_size=4, use_cache=False)
            out[f"{key}.generate_items_nocache"], out[f"{key}.generate_scores_nocache"] = items, scores
        if head == "both":
            out[f"{key}.recommend_rerank"] = recommender.recommend(
                HISTORIES, k=3, method="rerank", num_candidates=6, batch_size=3
            )
        response_ids = generative_token_table(model.model.sids, model.config) if head != "ranking" else None
        batch = MMESIDCollator(processor, response_ids=response_ids)(SAMPLES)
        outputs = model(**{k: v for k, v in batch.items() if k != "history"})
        out[f"{key}.forward_loss"] = outputs.loss
        if outputs.generative_loss is not None:
            out[f"{key}.forward_generative_loss"] = outputs.generative_loss
        if outputs.item_logits is not None:
            out[f"{key}.forward_item_logits"] = outputs.item_logits
    model.train()
    trainer = trainer_for(model, processor, teacher=FixedTeacher() if head != "generative" else None)
    trainer.state.max_steps, trainer.state.global_step = 10, 2
    with torch.no_grad():
        out[f"{key}.compute_loss"] = trainer.compute_loss(model, dict(batch), num_items_in_batch=torch.tensor(5))
        out[f"{key}.compute_loss_mean"] = trainer.compute_loss(model, dict(batch))
    return out


@pytest.mark.parametrize(("layout", "head"), CASES)
def test_outputs_equal_the_recorded_ones(layout, head, one_thread):
    golden = load_file(GOLDEN)
    outputs = golden_outputs(layout, head)
    expected_keys = {k for k in golden if k.startswith(f"{layout}.{head}.")}
    assert set(outputs) == expected_keys
    for name, value in outputs.items():
        expected = golden[name]
        assert value.dtype == expected.dtype and value.shape == expected.shape, name
        assert torch.equal(value.detach().cpu(), expected), f"{name} differs from the recorded tensor"
