# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
import os
import sys
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
BEAUTY_NEW = SHARED_DATA / "Beauty" / "mmesid" / "Beauty_new.txt"
FIXTURES = Path(__file__).resolve().parent / "fixtures"

if str(REPO) not in sys.path:  # tests run against the checkout, installed or not
    sys.path.insert(0, str(REPO))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

requires_shared_data = pytest.mark.skipif(
    not BEAUTY_NEW.is_file(), reason=f"real Beauty data not found at {SHARED_DATA} (../shared/data beside the repo)"
)
slow = pytest.mark.skipif(os.environ.get("RUN_SLOW") != "1", reason="slow test: set RUN_SLOW=1 to run it")


@pytest.fixture
def tiny_sequences_file(tmp_path):
    path = tmp_path / "seq.txt"
    path.write_text("1 1 2 3 4 5\n2 2 3 6\n3 4 1\n4 1 2 3 4 5 6 2\n")
    return path
