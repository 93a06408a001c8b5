# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Tests of `MMESIDProcessor`: the paper's prompt, the SID token scheme, padding, errors, save/load."""

import json

import pytest
import torch
from transformers import AutoProcessor

from modeling_mmesid import MMESIDProcessor, sid_token
from modeling_mmesid.configuration_mmesid import sid_token_id


# The prompt of docs/METHOD.md (official README template) for a history of two items.
PAPER_PROMPT_TWO_ITEMS = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful AI assistant for "
    "recommendations<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nGiven the user's purchase history, "
    "predict next possible item to be purchased. <item><item><|eot_id|><|start_header_id|>assistant<|end_header_id|>"
)

MODALITIES = ["collaborative", "text"]
NUM_LEVELS, CODEBOOK_SIZE, NUM_ITEMS = 2, 8, 50


@pytest.fixture
def processor(tiny_tokenizer):
    return MMESIDProcessor(
        tiny_tokenizer, modalities=MODALITIES, num_levels=NUM_LEVELS, codebook_size=CODEBOOK_SIZE, num_items=NUM_ITEMS
    )


def test_llama3_prompt_renders_exactly(processor):
    assert processor.render_prompt(2) == PAPER_PROMPT_TWO_ITEMS
    inputs = processor([[7, 3]])
    assert processor.decode(inputs["input_ids"][0]) == PAPER_PROMPT_TWO_ITEMS
    assert inputs["item_ids"].tolist() == [7, 3]
    # The last token is the assistant header's end: its hidden state is the user representation.
    assert inputs["input_ids"][0, -1].item() == processor.tokenizer.convert_tokens_to_ids("<|end_header_id|>")


def test_sid_token_scheme(processor):
    tokenizer = processor.tokenizer
    assert len(tokenizer) == 99 + 1 + len(MODALITIES) * NUM_LEVELS * CODEBOOK_SIZE
    assert processor.item_token_id == tokenizer.convert_tokens_to_ids("<item>")
    for m, modality in enumerate(MODALITIES):
        for level in range(NUM_LEVELS):
            for code in range(CODEBOOK_SIZE):
                expected = processor.sid_token_offset + (m * NUM_LEVELS + level) * CODEBOOK_SIZE + code
                assert tokenizer.convert_tokens_to_ids(sid_token(modality, level, code)) == expected
                # the one formula the processor and the model use
                assert sid_token_id(processor.sid_token_offset, NUM_LEVELS, CODEBOOK_SIZE, m, level, code) == expected
    sids = torch.tensor([[[1, 2], [3, 4]]])
    m, level = torch.arange(len(MODALITIES)).view(-1, 1), torch.arange(NUM_LEVELS).view(1, -1)
    ids = sid_token_id(processor.sid_token_offset, NUM_LEVELS, CODEBOOK_SIZE, m, level, sids)
    assert tokenizer.convert_ids_to_tokens(ids.flatten().tolist()) == [
        "<sid_collaborative_0_1>",
        "<sid_collaborative_1_2>",
        "<sid_text_0_3>",
        "<sid_text_1_4>",
    ]
    # SID tokens are never split.
    assert tokenizer("<sid_text_1_7>", add_special_tokens=False)["input_ids"] == [
        tokenizer.convert_tokens_to_ids("<sid_text_1_7>")
    ]


def test_batch_left_padding_and_positions(processor):
    inputs = processor([[1, 2, 3], [], [4]], return_item_positions=True)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    assert ids.shape == mask.shape and ids.shape[0] == 3
    assert mask[:, -1].all()  # left padding: the last position is every prompt's final token
    assert inputs["item_ids"].tolist() == [1, 2, 3, 4]
    assert inputs["history_lengths"].tolist() == [3, 0, 1]
    positions = inputs["item_positions"]
    assert (ids[positions[:, 0], positions[:, 1]] == processor.item_token_id).all()
    assert positions[:, 0].tolist() == [0, 0, 0, 2]
    # Each row, unpadded, equals the single-user encoding.
    for row, history in enumerate([[1, 2, 3], [], [4]]):
        single = processor([history])["input_ids"][0]
        assert ids[row][mask[row].bool()].tolist() == single.tolist()


def test_empty_history(processor):
    inputs = processor([[]])
    assert inputs["item_ids"].shape == (0,)
    assert (inputs["input_ids"] == processor.item_token_id).sum() == 0
    # Llama-3's template trims the user message, so the instruction's trailing space goes away.
    assert "purchased.<|eot_id|>" in processor.decode(inputs["input_ids"][0])


def test_single_flat_history(processor):
    assert processor([5, 6])["input_ids"].tolist() == processor([[5, 6]])["input_ids"].tolist()


@pytest.mark.parametrize(
    "histories, error, match",
    [
        ([[1, 0]], ValueError, r"item id 0 is out of range; expected 1\.\.50"),
        ([[51]], ValueError, r"History 0: item id 51 is out of range"),
        ([[1], [-3]], ValueError, r"History 1: item id -3"),
        ([[1.5]], TypeError, r"must be integers"),
        ([], ValueError, r"`histories` is empty"),
    ],
)
def test_bad_histories(processor, histories, error, match):
    with pytest.raises(error, match=match):
        processor(histories)


def test_history_longer_than_context(processor):
    length = len(processor([[1] * 10])["input_ids"][0])
    processor([[1] * 10], max_length=length)
    with pytest.raises(ValueError, match=r"History 0 \(11 items\) renders to .* more than `max_length`="):
        processor([[1] * 11], max_length=length)


def test_missing_chat_template(tiny_tokenizer):
    tiny_tokenizer.chat_template = None
    processor = MMESIDProcessor(tiny_tokenizer, modalities=["text"], num_levels=1, codebook_size=2)
    with pytest.raises(ValueError, match="no chat template"):
        processor([[1]])


def test_save_and_load(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["modalities"] == MODALITIES and saved["num_levels"] == NUM_LEVELS
    assert saved["codebook_size"] == CODEBOOK_SIZE and saved["item_token"] == "<item>"
    assert saved["auto_map"]["AutoProcessor"].endswith("processing_mmesid.MMESIDProcessor")
    for loaded in (MMESIDProcessor.from_pretrained(tmp_path), AutoProcessor.from_pretrained(tmp_path)):
        assert isinstance(loaded, MMESIDProcessor)
        assert len(loaded.tokenizer) == len(processor.tokenizer)
        assert (loaded.item_token_id, loaded.sid_token_offset) == (processor.item_token_id, processor.sid_token_offset)
        histories = [[1, 2], [], [50, 3, 9]]
        for key, value in processor(histories).items():
            assert torch.equal(loaded(histories)[key], value), key


def test_custom_backbone_template(tiny_tokenizer):
    # Any backbone's own chat template is used (here a ChatML-style one, as SmolLM2/Qwen use).
    chatml = (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
        "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    processor = MMESIDProcessor(
        tiny_tokenizer, chat_template=chatml, modalities=["text"], num_levels=1, codebook_size=2
    )
    text = processor.render_prompt(1)
    assert text.endswith("<item><|im_end|>\n<|im_start|>assistant")
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant for recommendations<|im_end|>")


def test_pad_token_id_fallback(tiny_tokenizer):
    # One rule pads prompts, packed rows and `generate`: the pad token, else end-of-sequence, else 0.
    processor = MMESIDProcessor(tiny_tokenizer, modalities=["text"], num_levels=1, codebook_size=2)
    tokenizer = processor.tokenizer
    assert tokenizer.pad_token_id is None and processor.pad_token_id == tokenizer.eos_token_id
    ids, mask = (processor([[1, 2], []])[k] for k in ("input_ids", "attention_mask"))
    assert (ids[mask == 0] == tokenizer.eos_token_id).all() and (mask == 0).any()
    tokenizer.pad_token = "<unused_0>"
    assert processor.pad_token_id == tokenizer.convert_tokens_to_ids("<unused_0>") != tokenizer.eos_token_id
    tokenizer.pad_token = None
    tokenizer.eos_token = None
    assert processor.pad_token_id == 0


def test_packed_rows_pad_with_the_processor_pad_id(processor):
    from modeling_mmesid.packing import MMESIDPackedCollator

    processor.tokenizer.pad_token = "<unused_0>"
    rows = [{"items": [1, 2, 3], "start": 0}, {"items": [4, 5], "start": 1}]
    batch = MMESIDPackedCollator(processor, one_row=False)(rows)
    short = batch["input_ids"][1]
    num_nodes = int((batch["position_ids"][1] > 0).sum())
    assert (short[num_nodes:] == processor.pad_token_id).all() and num_nodes < short.numel()


def test_prompt_token_ids_are_the_paper_prompt(processor):
    # The prompt's ids are those of the paper's text (the fixed expectation), whatever holds the prompt fields.
    expected = processor.tokenizer(PAPER_PROMPT_TWO_ITEMS, add_special_tokens=False)["input_ids"]
    assert processor.prompt_token_ids(2) == expected
    assert processor([[7, 3]])["input_ids"][0].tolist() == expected


def test_prompt_lives_in_the_processor_only(processor, tmp_path):
    from transformers import LlamaConfig
    from transformers.testing_utils import CaptureLogger
    from transformers.utils import logging

    from modeling_mmesid import MMESIDConfig

    assert "system_prompt" not in processor.config_kwargs() and "instruction" not in processor.config_kwargs()
    custom = MMESIDProcessor(processor.tokenizer, modalities=MODALITIES, num_levels=NUM_LEVELS,
                             codebook_size=CODEBOOK_SIZE, system_prompt="Recommend.", instruction="History: ")
    custom.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert (saved["system_prompt"], saved["instruction"]) == ("Recommend.", "History: ")
    assert MMESIDProcessor.from_pretrained(tmp_path).render_prompt(1) == custom.render_prompt(1)
    assert "Recommend." in custom.render_prompt(1) and "History: <item>" in custom.render_prompt(1)

    # A config saved before the move (prompt fields in config.json) still loads; the fields are dropped, said once.
    text_config = LlamaConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, vocab_size=len(custom.tokenizer))
    MMESIDConfig(text_config=text_config, num_items=3, **custom.config_kwargs()).save_pretrained(tmp_path)
    old = json.loads((tmp_path / "config.json").read_text())
    assert "system_prompt" not in old
    old.update(system_prompt="Recommend.", instruction="History: ")
    (tmp_path / "config.json").write_text(json.dumps(old))
    with CaptureLogger(logging.get_logger("modeling_mmesid.configuration_mmesid")) as captured:
        loaded = MMESIDConfig.from_pretrained(tmp_path)
    assert "no longer holds the prompt" in captured.out and "processor_config.json" in captured.out
    assert not hasattr(loaded, "system_prompt") and "instruction" not in loaded.to_dict()
    assert loaded.num_items == 3 and loaded.item_token_id == custom.item_token_id
