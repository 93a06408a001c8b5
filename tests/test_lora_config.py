# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""`lora_config_for`: TRL's `get_peft_config` reads the LoRA flags, MME-SID adds what it trains (docs/METHOD.md)."""

from types import SimpleNamespace

from mmesid_testing import tiny_mmesid
from trl import ModelConfig

from modeling_mmesid.trainer import lora_config_for


def test_lora_config_reads_trl_flags_and_adds_the_item_modules_and_sid_rows():
    model, _, _ = tiny_mmesid()
    config = model.config
    sid_ids = list(range(config.sid_token_offset, config.sid_token_offset + config.num_sid_tokens))
    paper = lora_config_for(model, ModelConfig(use_peft=True, lora_r=8, lora_alpha=16, lora_dropout=0.05),
                            SimpleNamespace(sid_trainable=True))
    assert (paper.r, paper.lora_alpha, paper.lora_dropout) == (8, 16, 0.05)
    assert set(paper.target_modules) == {"gate_proj", "up_proj", "down_proj"}
    assert paper.modules_to_save == model.non_backbone_module_names()
    assert paper.trainable_token_indices == {"embed_tokens": sid_ids}
    assert paper.task_type is None and not paper.use_dora and not paper.use_rslora
    # flags the hand-built config used to drop now reach PEFT; extra modules add to MME-SID's own
    custom = lora_config_for(
        model,
        ModelConfig(use_peft=False, lora_r=4, lora_target_modules=["q_proj", "v_proj"], use_rslora=True, use_dora=True,
                    lora_modules_to_save=["lm_head"]),
        SimpleNamespace(sid_trainable=False),
    )
    assert custom.r == 4 and set(custom.target_modules) == {"q_proj", "v_proj"} and custom.use_rslora and custom.use_dora
    assert custom.modules_to_save == model.non_backbone_module_names() + ["lm_head"]
    assert custom.trainable_token_indices is None
