# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
import os
import sys
from pathlib import Path

import pytest


TESTS = Path(__file__).resolve().parent
for path in (TESTS.parent, TESTS):  # the checkout (installed or not) and the shared helpers (mmesid_testing)
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# float32 unless a test asks for bf16 (tests/test_precision.py): exact comparisons must not depend on the CPU's AMX
os.environ.setdefault("MMESID_PRECISION", "float32")

from mmesid_testing import build_tiny_run  # noqa: E402


@pytest.fixture
def one_thread():
    """Torch on one thread for the test, restored after: tiny tensors run fastest so, and far faster than on 2 threads
    of a busy 2-core machine (10x for MM-RQ-VAE). Modules opt in with
    `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_sequences_file(tmp_path):
    path = tmp_path / "seq.txt"
    path.write_text("1 1 2 3 4 5\n2 2 3 6\n3 4 1\n4 1 2 3 4 5 6 2\n")
    return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A complete tiny run folder (data, embeddings, semantic IDs, random Llama backbone), built once per session."""
    return build_tiny_run(tmp_path_factory.mktemp("runs"))
