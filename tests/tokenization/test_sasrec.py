# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""SASRec: config checks, every-position batching, training, prefix equivalence, save/load and the export."""

import random
from pathlib import Path

import pytest
import torch
from huggingface_hub.errors import StrictDataclassError

import mmesid_artifacts as art
from modeling_mmesid import data, evaluation
from tokenization.encoders import load_embeddings, save_embeddings
from tokenization.sasrec import (
    SASRecConfig,
    SASRecModel,
    SASRecTrainingArguments,
    build_training_batches,
    sasrec_scorer,
    train_one_epoch,
    train_sasrec,
)


pytestmark = pytest.mark.usefixtures("one_thread")

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
NUM_ITEMS = 20


def tiny_config(**kwargs) -> SASRecConfig:
    defaults = {"num_items": NUM_ITEMS, "hidden_size": 16, "intermediate_size": 32, "max_position_embeddings": 8}
    return SASRecConfig(**{**defaults, **kwargs})


def cyclic_sequences(num_users: int = 64, seed: int = 0) -> list[list[int]]:
    """Each user walks the items in order (i → i + 1, wrapping): a pattern SASRec learns in a few epochs."""
    rng = random.Random(seed)
    sequences = []
    for _ in range(num_users):
        start, length = rng.randint(1, NUM_ITEMS), rng.randint(2, 12)
        sequences.append([(start + t - 1) % NUM_ITEMS + 1 for t in range(length)])
    return sequences


def write_fixture(folder: Path, sequences: list[list[int]]) -> dict:
    """A data-stage folder (docs/CONTRACTS.md) from full sequences, through the data stage itself."""
    return data.write_dataset(folder, dict(enumerate(sequences, start=1)))


class TestConfig:
    def test_defaults_are_recbole(self):
        config = SASRecConfig(num_items=5)
        assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (64, 2, 2)
        assert (config.hidden_dropout_prob, config.attention_probs_dropout_prob) == (0.5, 0.5)
        assert config.max_position_embeddings == 50 and config.intermediate_size == 256

    def test_refuses_bad_heads(self):
        # `@strict` runs `validate_architecture` at construction and wraps its ValueError
        with pytest.raises((ValueError, StrictDataclassError), match="divisible by `num_attention_heads`"):
            SASRecConfig(num_items=5, hidden_size=10, num_attention_heads=3)

    def test_refuses_missing_num_items(self):
        with pytest.raises(ValueError, match="`config.num_items` must be the largest item id"):
            SASRecModel(SASRecConfig())

    def test_refuses_bad_training_arguments(self):
        with pytest.raises(ValueError, match="`batch_size` must be >= 1"):
            SASRecTrainingArguments(batch_size=0)

    def test_refuses_too_long_input(self):
        model = SASRecModel(tiny_config())
        with pytest.raises(ValueError, match="more than `max_position_embeddings`"):
            model(input_ids=torch.ones(1, 9, dtype=torch.long))


class TestBatches:
    def test_every_position_is_a_target(self):
        ((input_ids, labels),) = build_training_batches([[1, 2, 3, 4], [5, 6], [7]], max_length=8, batch_size=8)
        assert input_ids.tolist() == [[1, 2, 3], [5, 0, 0]]
        assert labels.tolist() == [[2, 3, 4], [6, 0, 0]]

    def test_batch_size_counts_targets(self):
        batches = build_training_batches([[1, 2, 3, 4]] * 5 + [list(range(1, 10))], max_length=8, batch_size=7)
        assert [int((labels != 0).sum()) for _, labels in batches] == [6, 6, 3, 8]  # a long user gets its own batch

    def test_long_sequences_keep_the_last_positions(self):
        ((input_ids, labels),) = build_training_batches([list(range(1, 12))], max_length=4, batch_size=8)
        assert input_ids.tolist() == [[7, 8, 9, 10]] and labels.tolist() == [[8, 9, 10, 11]]

    def test_shuffled_batches_cover_every_target_once(self):
        sequences = cyclic_sequences(50)
        batches = build_training_batches(sequences, 8, 7, random.Random(0))
        targets = sorted(int(t) for _, labels in batches for t in labels[labels != 0])
        expected = sorted(t for s in sequences for t in s[-9:][1:])  # the last 8 targets
        assert targets == expected

    @pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="needs ../shared/data (Beauty_new.txt)")
    def test_beauty_new_target_count(self):
        """Targets = docs/METHOD.md's 150,041 training samples minus the 22,196 with an empty history."""
        lines = (SHARED_DATA / "Beauty" / "mmesid" / "Beauty_new.txt").read_text().split("\n")
        train = [[int(x) for x in line.split()[1:]][:-2] for line in lines if line.strip()]
        batches = build_training_batches(train, 50, 4096)
        assert sum(int((labels != 0).sum()) for _, labels in batches) == 150_041 - 22_196


class TestModel:
    def test_padding_row_is_zero_and_stays_zero(self):
        torch.manual_seed(0)
        model = SASRecModel(tiny_config())
        assert torch.equal(model.item_embeddings.weight[0], torch.zeros(16))
        train_one_epoch(model, torch.optim.Adam(model.parameters(), 1e-2), cyclic_sequences(16), 8)
        assert torch.equal(model.item_embeddings.weight[0], torch.zeros(16))

    def test_every_position_equals_its_prefix(self):
        """Position t of the training forward == scoring the prefix items[:t + 1] alone (the RecBole sample)."""
        torch.manual_seed(0)
        model = SASRecModel(tiny_config()).eval()
        sequence = [3, 9, 4, 17, 1, 8]
        input_ids = torch.tensor([sequence[:-1]])
        labels = torch.tensor([sequence[1:]])
        with torch.no_grad():
            logits = model(input_ids=input_ids, labels=labels).logits  # (5, num_items + 1)
        for t in range(5):
            prefix = torch.tensor([sequence[: t + 1] + [0] * (5 - t - 1)])
            scores = model.score(prefix, torch.tensor([t + 1]))
            torch.testing.assert_close(scores[0, 1:], logits[t, 1:], rtol=1e-5, atol=1e-5)

    def test_score_batch_equals_one_at_a_time_and_truncates(self):
        torch.manual_seed(0)
        model = SASRecModel(tiny_config()).eval()
        histories = [[1, 2, 3], list(range(1, 13)), [7]]
        padded = torch.zeros(3, 12, dtype=torch.long)
        for i, h in enumerate(histories):
            padded[i, : len(h)] = torch.tensor(h)
        batch = model.score(padded, torch.tensor([3, 12, 1]))
        for i, h in enumerate(histories):
            kept = h[-8:]  # max_position_embeddings = 8
            single = model.score(torch.tensor([kept]), torch.tensor([len(kept)]))
            torch.testing.assert_close(batch[i : i + 1, 1:], single[:, 1:], rtol=1e-5, atol=1e-5)
        assert torch.isinf(batch[:, 0]).all()

    def test_empty_history_scores_zero(self):
        model = SASRecModel(tiny_config()).eval()
        scores = model.score(torch.zeros(1, 1, dtype=torch.long), torch.tensor([0]))
        assert torch.equal(scores[0, 1:], torch.zeros(NUM_ITEMS))

    def test_training_lowers_the_loss_and_keeps_the_best_weights(self):
        torch.manual_seed(0)
        model = SASRecModel(tiny_config(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1))
        sequences = cyclic_sequences(64)
        calls, states = [], []

        def eval_fn(m):  # a metric that peaks at epoch 3
            calls.append(m.training)
            states.append({k: v.detach().clone() for k, v in m.state_dict().items()})  # the weights it was given
            return -abs(len(calls) - 3)

        args = SASRecTrainingArguments(num_epochs=8, batch_size=32, learning_rate=1e-2, patience=2, seed=0)
        history = train_sasrec(model, sequences, args, eval_fn=eval_fn)
        losses = [entry["loss"] for entry in history["log"]]
        assert losses[-1] < losses[0] * 0.9, losses
        assert history["best_epoch"] == 3 and history["epochs_run"] == 5
        assert not model.training
        # the returned model holds the weights validated at the best epoch, not the last epoch's
        best, last = states[2], states[-1]
        assert any(not torch.equal(best[k], last[k]) for k in best)
        for key, value in model.state_dict().items():
            torch.testing.assert_close(value, best[key], rtol=0, atol=0, msg=lambda m, key=key: f"{key}: {m}")

    def test_save_pretrained_round_trip(self, tmp_path):
        torch.manual_seed(0)
        model = SASRecModel(tiny_config()).eval()
        model.save_pretrained(tmp_path)
        assert (tmp_path / "model.safetensors").is_file()
        loaded = SASRecModel.from_pretrained(tmp_path).eval()
        histories, lengths = torch.tensor([[1, 2, 3], [4, 0, 0]]), torch.tensor([3, 1])
        torch.testing.assert_close(model.score(histories, lengths), loaded.score(histories, lengths))

    def test_export_round_trip(self, tmp_path):
        torch.manual_seed(0)
        model = SASRecModel(tiny_config())
        path = save_embeddings(
            tmp_path / "collaborative.safetensors",
            model.get_item_embeddings(),
            modality="collaborative",
            encoder="SASRec",
            dataset_fingerprint="abc",
        )
        table, meta = load_embeddings(path, num_items=NUM_ITEMS, fingerprint="abc")
        assert table.shape == (NUM_ITEMS + 1, 16) and torch.equal(table[0], torch.zeros(16))
        torch.testing.assert_close(table[1:], model.item_embeddings.weight[1:].detach())
        assert meta["dim"] == 16 and meta["num_items"] == NUM_ITEMS and meta["modality"] == "collaborative"
        with pytest.raises(ValueError, match="collaborative.safetensors: 21 rows, but the dataset has 30 items"):
            load_embeddings(path, num_items=30)


def test_scorer_through_the_evaluator(tmp_path):
    sequences = [s + [s[-1] % NUM_ITEMS + 1, (s[-1] + 1) % NUM_ITEMS + 1] for s in cyclic_sequences(64)]
    stats = write_fixture(tmp_path, sequences)
    train = art.load_train_sequences(tmp_path)
    validation = art.load_split_table(tmp_path, "validation")
    torch.manual_seed(0)
    model = SASRecModel(tiny_config(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1))
    history = train_sasrec(
        model,
        train,
        SASRecTrainingArguments(num_epochs=20, batch_size=16, learning_rate=1e-2, patience=3),
        eval_fn=lambda m: evaluation.evaluate_scorer(sasrec_scorer(m), validation, stats["num_items"])["ndcg@10"],
    )
    assert history["best_metric"] > 0.5
    test = evaluation.evaluate_scorer(sasrec_scorer(model), art.load_split_table(tmp_path, "test"), NUM_ITEMS)
    assert test["hr@10"] > 0.5
