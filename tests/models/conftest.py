# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Fixtures for the MME-SID model and processor tests: the tiny Llama-3-style text tokenizer (no download)."""

from pathlib import Path

import pytest
from mmesid_testing import TINY_TOKENIZER_DIR


@pytest.fixture(scope="session")
def tiny_tokenizer_dir() -> Path:
    if not (TINY_TOKENIZER_DIR / "tokenizer.json").exists():
        pytest.fail(f"{TINY_TOKENIZER_DIR} is missing; run `python {TINY_TOKENIZER_DIR / 'generate.py'}`.")
    return TINY_TOKENIZER_DIR


@pytest.fixture
def tiny_tokenizer(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
