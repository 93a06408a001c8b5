# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""`Run`: the one place that knows the layout of `outputs/<run>/` (docs/RUN_FOLDER.md).

Every recipe and `modeling_mmesid/hub.py` asks a `Run` for a stage folder or file instead of joining paths itself.
A `Run` only names paths; it never creates or reads anything.
"""

import os
from pathlib import Path


# The one modality order of the project: the model's (`configuration_mmesid.KNOWN_MODALITIES`, which the Hub-side
# file must keep a copy of; `tests/test_artifacts.py` checks the two agree). Tables, SID axes and codebooks that
# Stage 1 writes follow the order a run asks for; `load_item_tables` returns them in the order the model asks for.
MODALITIES = ("collaborative", "image", "text")

OUTPUTS = Path("outputs")
# The run folder of every recipe whose `--run_dir` is not given: the CPU run (recipes/configs/beauty-smollm2-135m/)
DEFAULT_RUN_DIR = OUTPUTS / "beauty-smollm2-135m"
# stage name -> folder name under the run folder, in pipeline order
STAGES = {
    "data": "data",  # recipes/prepare_data.py
    "embeddings": "embeddings",  # recipes/encode_items.py (SASRec under embeddings/sasrec/)
    "rqvae": "rqvae",  # recipes/train_rqvae.py
    "sids": "sids",  # recipes/assign_sids.py
    "finetune": "finetune",  # recipes/finetune.py (the full model under finetune/model/)
    "eval": "eval",  # recipes/evaluate.py
    "forgetting": "forgetting",  # recipes/forgetting.py
    "hub": "hub",  # recipes/publish.py (hub/{model,dataset,rqvae})
    "curve": "curve",  # recipes/learning_curve.py (docs/LEARNING.md)
    "ablation": "ablation",  # recipes/ablation.py (docs/LEARNING.md)
}
EMBEDDINGS_SUFFIX = ".safetensors"
SASREC_SUBFOLDER = "sasrec"  # embeddings/sasrec/: the trained SASRec (save_pretrained) and its results.json
FULL_MODEL_SUBFOLDER = "model"  # finetune/model/: the merged model for AutoModel.from_pretrained

# File names inside the stage folders (docs/CONTRACTS.md)
SPLITS = ("train", "validation", "test")
DATA_FILES = {"stats": "stats.json", "items": "items.parquet", "train_sequences": "train_sequences.parquet"}
SIDS_FILES = {"sids": "sids.safetensors", "codebooks": "codebooks.safetensors", "meta": "sids.json"}


class Run:
    """The folder of one run, `outputs/<run>/`, and the place of every stage folder and file in it.

    >>> run = Run("outputs/beauty")
    >>> run.sids_file
    PosixPath('outputs/beauty/sids/sids.safetensors')
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    @classmethod
    def named(cls, name: str, outputs: str | os.PathLike = OUTPUTS) -> "Run":
        """`outputs/<name>`, relative to the working directory (the recipes take the folder itself, `--run_dir`)."""
        return cls(Path(outputs) / name)

    @classmethod
    def of_stage(cls, stage_dir: str | os.PathLike) -> "Run":
        """The run a stage folder belongs to (`outputs/<run>/data` -> `outputs/<run>`)."""
        return cls(Path(stage_dir).parent)

    def __repr__(self) -> str:
        return f"Run({str(self.root)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Run) and self.root == other.root

    def __hash__(self) -> int:
        return hash(self.root)

    def stage(self, name: str) -> Path:
        if name not in STAGES:
            raise ValueError(f"Unknown stage {name!r}; the stages of a run folder are {list(STAGES)}.")
        return self.root / STAGES[name]

    # --- stage folders ---------------------------------------------------------------------------------------------
    data = property(lambda self: self.stage("data"))
    embeddings = property(lambda self: self.stage("embeddings"))
    rqvae = property(lambda self: self.stage("rqvae"))
    sids = property(lambda self: self.stage("sids"))
    finetune = property(lambda self: self.stage("finetune"))
    eval = property(lambda self: self.stage("eval"))
    forgetting = property(lambda self: self.stage("forgetting"))
    hub = property(lambda self: self.stage("hub"))
    curve = property(lambda self: self.stage("curve"))
    ablation = property(lambda self: self.stage("ablation"))

    # --- files -----------------------------------------------------------------------------------------------------
    stats_file = property(lambda self: self.data / DATA_FILES["stats"])
    items_file = property(lambda self: self.data / DATA_FILES["items"])
    train_sequences_file = property(lambda self: self.data / DATA_FILES["train_sequences"])
    sasrec = property(lambda self: self.embeddings / SASREC_SUBFOLDER)
    sids_file = property(lambda self: self.sids / SIDS_FILES["sids"])
    codebooks_file = property(lambda self: self.sids / SIDS_FILES["codebooks"])
    sids_meta_file = property(lambda self: self.sids / SIDS_FILES["meta"])
    diagnostics_file = property(lambda self: self.sids / "diagnostics.json")
    full_model = property(lambda self: self.finetune / FULL_MODEL_SUBFOLDER)

    def split_file(self, split: str) -> Path:
        return split_file(self.data, split)

    def embedding_file(self, modality: str) -> Path:
        return embedding_file(self.embeddings, modality)

    def results_file(self, stage: str) -> Path:
        """`<stage>/results.json` (rqvae, finetune, eval; SASRec's is `embeddings/sasrec/results.json`)."""
        return (self.sasrec if stage == "sasrec" else self.stage(stage)) / "results.json"


def split_file(data_dir: str | os.PathLike, split: str) -> Path:
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}, got {split!r}.")
    return Path(data_dir) / f"{split}.parquet"


def embedding_file(embeddings_dir: str | os.PathLike, modality: str) -> Path:
    return Path(embeddings_dir) / f"{modality}{EMBEDDINGS_SUFFIX}"


__all__ = ["DATA_FILES", "DEFAULT_RUN_DIR", "FULL_MODEL_SUBFOLDER", "MODALITIES", "OUTPUTS", "SASREC_SUBFOLDER",
           "SIDS_FILES", "SPLITS", "STAGES", "Run", "embedding_file", "split_file"]
