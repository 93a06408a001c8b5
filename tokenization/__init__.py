# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Stage 1, the item tokenizer: items -> embeddings (SASRec, text, image) -> MM-RQ-VAE -> semantic IDs.

Submodules are imported on use (`from tokenization.sasrec import SASRecModel`), so that importing one stage does not
load the others' heavy dependencies (open_clip, sentence encoders).
"""
