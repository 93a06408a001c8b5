# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""SASRec: the collaborative item encoder of MME-SID's stage 1 (paper §3.1) and a ranking baseline.

MME-SID takes its 64-d collaborative item embeddings from a pre-trained SASRec (Kang & McAuley, ICDM 2018). The
official repository ships the trained table (`SASRec_item_embed_new.pkl`) but not the code that made it; this module
re-implements the model with RecBole's SASRec defaults (2 layers, 2 heads, 64-d, inner size 256, dropout 0.5, GELU,
post-LayerNorm, max length 50, cross-entropy over all items) so the table can be regenerated on any dataset.

Data flow: `train_sequences.parquet` (training prefixes only) → [`train_sasrec`] → [`SASRecModel`] (saved with
`save_pretrained`) → [`SASRecModel.get_item_embeddings`] → `embeddings/collaborative.safetensors` (written by
`tokenization.encoders.save_embeddings`). [`sasrec_scorer`] turns a trained model into an evaluator scorer.
"""

import copy
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from huggingface_hub.dataclasses import strict
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.utils import ModelOutput, logging


logger = logging.get_logger(__name__)


@strict
class SASRecConfig(PreTrainedConfig):
    r"""
    Configuration of [`SASRecModel`]. Defaults are RecBole 1.2.1's `SASRec.yaml` (the baseline of docs/METHOD.md).

    Args:
        num_items (`int`, *optional*, defaults to 0):
            Largest item id. Ids are 1-based; 0 is padding, so the item table has `num_items + 1` rows. Must be set
            (>= 1) before building a model; 0 means unset.
        hidden_size (`int`, *optional*, defaults to 64):
            Item and position embedding size; the dimension of `collaborative.safetensors` (paper §3.1: 64-d).
        num_hidden_layers (`int`, *optional*, defaults to 2):
            Self-attention blocks (RecBole `n_layers`).
        num_attention_heads (`int`, *optional*, defaults to 2):
            Attention heads (RecBole `n_heads`).
        intermediate_size (`int`, *optional*, defaults to 256):
            Point-wise feed-forward inner size (RecBole `inner_size`).
        hidden_act (`str`, *optional*, defaults to `"gelu"`):
            Feed-forward activation (RecBole `hidden_act`).
        hidden_dropout_prob (`float`, *optional*, defaults to 0.5):
            Dropout on embeddings and sub-layer outputs (RecBole `hidden_dropout_prob`).
        attention_probs_dropout_prob (`float`, *optional*, defaults to 0.5):
            Dropout on attention probabilities (RecBole `attn_dropout_prob`).
        max_position_embeddings (`int`, *optional*, defaults to 50):
            Longest history the model reads; longer histories keep their most recent items (RecBole
            `MAX_ITEM_LIST_LENGTH`).
        layer_norm_eps (`float`, *optional*, defaults to 1e-12):
            LayerNorm epsilon (RecBole `layer_norm_eps`).
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal init of embeddings and linear layers (RecBole `initializer_range`).
    """

    model_type = "sasrec"

    num_items: int = 0
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    intermediate_size: int = 256
    hidden_act: str = "gelu"
    hidden_dropout_prob: float | int = 0.5
    attention_probs_dropout_prob: float | int = 0.5
    max_position_embeddings: int = 50
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int | None = 0
    tie_word_embeddings: bool = True

    def validate_architecture(self):
        """Cross-field checks, raised as `ValueError` naming the values (`@strict` runs them at construction)."""
        if self.num_items < 0:
            raise ValueError(f"`num_items` must be the largest item id (>= 1), got {self.num_items}.")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"`hidden_size` ({self.hidden_size}) must be divisible by `num_attention_heads` "
                f"({self.num_attention_heads})."
            )
        if self.max_position_embeddings < 1:
            raise ValueError(f"`max_position_embeddings` must be >= 1, got {self.max_position_embeddings}.")


@dataclass
class SASRecOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` is provided):
        Mean cross-entropy over all items (padding column excluded) at every position whose label is not 0.
    logits (`torch.FloatTensor` of shape `(num_targets, num_items + 1)`, *optional*, returned when `labels` is provided):
        Scores of every item at the labelled positions, in row-major order of `labels != 0`; column 0 is `-inf`.
    last_hidden_state (`torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`):
        Output of the last self-attention block at every position.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None


class SASRecAttention(nn.Module):
    """Multi-head self-attention with RecBole's residual + post-LayerNorm (RecBole `MultiHeadAttention`)."""

    def __init__(self, config: SASRecConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.attention_dropout = config.attention_probs_dropout_prob
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        batch_size, length, hidden_size = hidden_states.shape
        shape = (batch_size, length, self.num_heads, self.head_dim)
        query = self.query(hidden_states).view(shape).transpose(1, 2)  # (batch, heads, length, head_dim)
        key = self.key(hidden_states).view(shape).transpose(1, 2)
        value = self.value(hidden_states).view(shape).transpose(1, 2)
        context = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=self.attention_dropout if self.training else 0.0
        )
        context = context.transpose(1, 2).reshape(batch_size, length, hidden_size)
        return self.LayerNorm(self.dropout(self.dense(context)) + hidden_states)


class SASRecFeedForward(nn.Module):
    """Point-wise feed-forward with residual + post-LayerNorm (RecBole `FeedForward`)."""

    def __init__(self, config: SASRecConfig):
        super().__init__()
        self.dense_1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act_fn = ACT2FN[config.hidden_act]
        self.dense_2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        output = self.dense_2(self.act_fn(self.dense_1(hidden_states)))
        return self.LayerNorm(self.dropout(output) + hidden_states)


class SASRecLayer(nn.Module):
    def __init__(self, config: SASRecConfig):
        super().__init__()
        self.attention = SASRecAttention(config)
        self.feed_forward = SASRecFeedForward(config)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.feed_forward(self.attention(hidden_states, attention_mask))


class SASRecPreTrainedModel(PreTrainedModel):
    config: SASRecConfig
    base_model_prefix = "sasrec"
    main_input_name = "input_ids"
    _no_split_modules: ClassVar[list[str]] = ["SASRecLayer"]


class SASRecModel(SASRecPreTrainedModel):
    r"""
    Self-attentive sequential recommender (Kang & McAuley 2018), the collaborative encoder of MME-SID (paper §3.1).

    Histories are right-padded with 0 and read oldest first; position `t` attends to positions `0..t` (causal) and
    its output scores every item as the next one through the tied item table (`h_t · E^T`, as RecBole's
    `full_sort_predict`). Trained with cross-entropy over all items at every non-padding position.

    NOTE: RecBole's CE SASRec trains on one augmented sample per prefix and reads only the last position; we train
    every position of each user's sequence at once, as the original SASRec does. With causal attention and right
    padding, position `t` sees exactly the prefix sample `items[:t + 1]` (tested), so the objective is the same set
    of prefix samples (127,845 with a non-empty history on Beauty_new) while the encoder reads 22k user sequences
    padded to their batch's longest instead of 131k samples padded to 50, which is much faster per epoch than RecBole
    (`recipes/benchmark_sasrec.py`; docs/SPEED.md, "Stage 1"). Batches hold 256 *targets*, so the optimizer takes RecBole's number
    of steps per epoch.
    NOTE: the padding column is excluded from the softmax (RecBole keeps it as an ordinary logit).
    """

    def __init__(self, config: SASRecConfig):
        super().__init__(config)
        if config.num_items < 1:
            raise ValueError(f"`config.num_items` must be the largest item id (>= 1), got {config.num_items}.")
        self.item_embeddings = nn.Embedding(config.num_items + 1, config.hidden_size, padding_idx=0)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.layers = nn.ModuleList([SASRecLayer(config) for _ in range(config.num_hidden_layers)])
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.item_embeddings

    def set_input_embeddings(self, value: nn.Embedding):
        self.item_embeddings = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs,
    ) -> SASRecOutput:
        r"""
        input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`):
            Item ids, oldest first, right-padded with 0; `sequence_length <= config.max_position_embeddings`.
        attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*):
            1 for real items, 0 for padding; defaults to `input_ids != 0`.
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Next item at every position (`labels[:, t] = items[t + 1]`); 0 = no target (padding), ignored.
        """
        length = input_ids.shape[1]
        if length > self.config.max_position_embeddings:
            raise ValueError(
                f"`input_ids` has length {length}, more than `max_position_embeddings` "
                f"({self.config.max_position_embeddings}); keep the most recent items (see `sasrec_scorer`)."
            )
        if attention_mask is None:
            attention_mask = input_ids != 0
        positions = torch.arange(length, device=input_ids.device)
        hidden_states = self.item_embeddings(input_ids) + self.position_embeddings(positions)[None]
        hidden_states = self.dropout(self.LayerNorm(hidden_states))

        key_mask = attention_mask.bool().clone()
        key_mask[:, 0] = True  # an empty history still attends somewhere (its outputs are never used)
        causal = torch.ones(length, length, dtype=torch.bool, device=input_ids.device).tril()
        mask = causal[None, None] & key_mask[:, None, None, :]  # (batch, 1, length, length)
        for layer in self.layers:
            hidden_states = layer(hidden_states, mask)

        loss = logits = None
        if labels is not None:
            targets = labels[labels != 0]  # (num_targets,)
            logits = hidden_states[labels != 0] @ self.item_embeddings.weight.T  # (num_targets, num_items + 1)
            logits[:, 0] = float("-inf")
            loss = F.cross_entropy(logits, targets)
        return SASRecOutput(loss=loss, logits=logits, last_hidden_state=hidden_states)

    @torch.no_grad()
    def score(self, histories: torch.LongTensor, lengths: torch.LongTensor) -> torch.Tensor:
        r"""
        Scores every item as the next one after each history (RecBole `full_sort_predict`).

        Args:
            histories (`torch.LongTensor` of shape `(batch_size, history_length)`):
                Item ids, oldest first, right-padded with 0. Histories longer than `max_position_embeddings` keep
                their most recent items.
            lengths (`torch.LongTensor` of shape `(batch_size,)`):
                Number of real items in each row.

        Returns:
            `torch.Tensor` of shape `(batch_size, num_items + 1)`: scores, column 0 (padding) is `-inf`. Rows with an
            empty history score every item 0.
        """
        max_len = self.config.max_position_embeddings
        device = self.item_embeddings.weight.device
        histories, lengths = histories.to(device), lengths.to(device)
        window = int(min(max(int(lengths.max()), 1), max_len))
        start = (lengths - window).clamp(min=0)  # (batch,)
        index = start[:, None] + torch.arange(window, device=device)[None]  # (batch, window)
        valid = index < lengths[:, None]
        inputs = histories.gather(1, index.clamp(max=histories.shape[1] - 1)) * valid
        hidden = self(input_ids=inputs, attention_mask=valid).last_hidden_state
        last = (lengths.clamp(min=1, max=window) - 1)[:, None, None].expand(-1, 1, hidden.shape[-1])
        user = hidden.gather(1, last).squeeze(1)  # (batch, hidden)
        scores = user @ self.item_embeddings.weight.T  # (batch, num_items + 1)
        scores = scores.masked_fill((lengths == 0)[:, None], 0.0)
        scores[:, 0] = float("-inf")
        return scores

    @torch.no_grad()
    def get_item_embeddings(self) -> torch.Tensor:
        """The item table `[num_items + 1, hidden_size]` as float32 on CPU, row 0 (padding) zeroed."""
        table = self.item_embeddings.weight.detach().float().cpu().clone()
        table[0] = 0.0
        return table


def sasrec_scorer(model: SASRecModel) -> Callable[[torch.LongTensor, torch.LongTensor], torch.Tensor]:
    """Returns a scorer (docs/CONTRACTS.md, "Evaluation") that runs `model.score` in eval mode."""

    def scorer(histories: torch.LongTensor, lengths: torch.LongTensor) -> torch.Tensor:
        was_training = model.training
        model.eval()
        try:
            return model.score(histories, lengths).float().cpu()
        finally:
            model.train(was_training)

    return scorer


@dataclass
class SASRecTrainingArguments:
    """
    Training schedule of [`train_sasrec`]; defaults are RecBole 1.2.1's (docs/METHOD.md).

    > Parameters that control the optimisation

    num_epochs (`int`, defaults to 300): upper bound on epochs (RecBole `epochs`).
    batch_size (`int`, defaults to 256): training targets per batch (RecBole `train_batch_size`, in samples).
    learning_rate (`float`, defaults to 1e-3): Adam learning rate (RecBole `learning_rate`).
    weight_decay (`float`, defaults to 0.0): Adam weight decay (RecBole `weight_decay`).

    > Parameters that control early stopping

    patience (`int`, defaults to 10): evaluations without a better validation metric before stopping (RecBole
        `stopping_step`). The best weights are restored at the end.
    eval_every (`int`, defaults to 1): epochs between validation runs.
    seed (`int`, defaults to 42): seed of the shuffling, dropout and init.
    progress_bar (`bool`, defaults to `True`): a progress bar over each epoch's batches.
    """

    num_epochs: int = field(default=300, metadata={"help": "Upper bound on epochs (RecBole `epochs`)."})
    batch_size: int = field(default=256, metadata={"help": "Targets per batch (RecBole `train_batch_size`)."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Adam learning rate."})
    weight_decay: float = field(default=0.0, metadata={"help": "Adam weight decay."})
    patience: int = field(default=10, metadata={"help": "Evaluations without improvement before stopping."})
    eval_every: int = field(default=1, metadata={"help": "Epochs between validation runs."})
    seed: int = field(default=42, metadata={"help": "Seed of shuffling, dropout and init."})
    progress_bar: bool = field(default=True, metadata={"help": "A progress bar over each epoch's batches."})

    def __post_init__(self):
        for name in ("num_epochs", "batch_size", "patience", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)}.")
        if self.learning_rate <= 0:
            raise ValueError(f"`learning_rate` must be > 0, got {self.learning_rate}.")


def build_training_batches(
    sequences: Sequence[Sequence[int]], max_length: int, batch_size: int, generator: random.Random | None = None
) -> list[tuple[torch.LongTensor, torch.LongTensor]]:
    r"""
    Turns training sequences into `(input_ids, labels)` batches where every position is a target.

    A sequence `s` gives `input_ids = s[-(L + 1):-1]` and `labels = s[-L:]` with `L = min(len(s) - 1, max_length)`,
    right-padded with 0 to the longest row of its batch; sequences with fewer than 2 items give no target.

    `batch_size` counts *targets* (RecBole's `train_batch_size` counts samples, one target each): users are added to
    a batch while its targets fit, so a batch of 256 holds ~37 Beauty users and the optimizer takes as many steps per
    epoch as RecBole's (586 on Beauty_new). A user with more targets than `batch_size` gets a batch of its own.
    With a `generator`, users are grouped with users of similar length (random order within a length: one 50-item
    user would otherwise pad a batch of 3-item users to 50) and the batches are shuffled; without one, batches
    follow the input order.

    Returns:
        `list` of `(torch.LongTensor, torch.LongTensor)`, each of shape `(users_in_batch, length)`.
    """
    rows = [list(s[-(max_length + 1) :]) for s in sequences if len(s) >= 2]
    if generator is not None:
        keys = [generator.random() for _ in rows]
        rows = [rows[i] for i in sorted(range(len(rows)), key=lambda i: (len(rows[i]), keys[i]))]
    chunks, chunk, targets = [], [], 0
    for row in rows:
        if chunk and targets + len(row) - 1 > batch_size:
            chunks.append(chunk)
            chunk, targets = [], 0
        chunk.append(row)
        targets += len(row) - 1
    if chunk:
        chunks.append(chunk)
    batches = []
    for chunk in chunks:
        length = max(len(r) for r in chunk) - 1
        input_ids = torch.zeros(len(chunk), length, dtype=torch.long)
        labels = torch.zeros(len(chunk), length, dtype=torch.long)
        for i, row in enumerate(chunk):
            input_ids[i, : len(row) - 1] = torch.tensor(row[:-1])
            labels[i, : len(row) - 1] = torch.tensor(row[1:])
        batches.append((input_ids, labels))
    if generator is not None:
        generator.shuffle(batches)
    return batches


def train_one_epoch(
    model: SASRecModel,
    optimizer: torch.optim.Optimizer,
    sequences: Sequence[Sequence[int]],
    batch_size: int = 256,
    generator: random.Random | None = None,
    description: str | None = None,
) -> float:
    """One pass over `sequences` (shuffled by `generator`); returns the target-weighted mean training loss. With a
    `description`, a progress bar over the batches (stderr, cleared at the end of the epoch)."""
    model.train()
    device = model.item_embeddings.weight.device
    total, count = 0.0, 0
    batches = build_training_batches(sequences, model.config.max_position_embeddings, batch_size, generator)
    progress = tqdm(batches, desc=description, unit="batch", leave=False, disable=description is None, mininterval=2)
    for input_ids, labels in progress:
        input_ids, labels = input_ids.to(device), labels.to(device)
        loss = model(input_ids=input_ids, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        n = int((labels != 0).sum())
        total += float(loss.detach()) * n
        count += n
    return total / max(count, 1)


def train_sasrec(
    model: SASRecModel,
    train_sequences: Sequence[Sequence[int]],
    args: SASRecTrainingArguments | None = None,
    eval_fn: Callable[[SASRecModel], float] | None = None,
    callback: Callable[[dict], None] | None = None,
) -> dict:
    r"""
    Trains `model` in place with Adam and cross-entropy over all items, early-stopping on `eval_fn`.

    Args:
        model ([`SASRecModel`]): the model to train; its best weights (by `eval_fn`) are loaded back at the end.
        train_sequences (`list[list[int]]`):
            Each user's training prefix (`train_sequences.parquet`), oldest first. Validation and test targets must
            not be in it: this function cannot check that, the data stage does.
        args ([`SASRecTrainingArguments`], *optional*): schedule; RecBole's defaults when omitted.
        eval_fn (`Callable[[SASRecModel], float]`, *optional*):
            Validation metric, higher is better (the recipe passes validation nDCG@10 from
            `modeling_mmesid.evaluation`, which this layer may not import). Without it, trains `num_epochs` epochs
            and keeps the last weights.
        callback (`Callable[[dict], None]`, *optional*): called with each epoch's log entry (recipes print it).

    Returns:
        `dict` with `best_epoch`, `best_metric`, `epochs_run` and a per-epoch `log` of
        `{epoch, loss, metric, seconds}`.
    """
    args = args or SASRecTrainingArguments()
    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    best_metric, best_epoch, best_state, bad = -math.inf, 0, None, 0
    log = []
    epoch = 0
    for epoch in range(1, args.num_epochs + 1):
        start = time.perf_counter()
        description = f"SASRec epoch {epoch}/{args.num_epochs}" if args.progress_bar else None
        loss = train_one_epoch(model, optimizer, train_sequences, args.batch_size, rng, description=description)
        entry = {"epoch": epoch, "loss": loss, "train_seconds": time.perf_counter() - start}
        if eval_fn is not None and epoch % args.eval_every == 0:
            metric = float(eval_fn(model))
            entry["metric"] = metric
            if metric > best_metric:
                best_metric, best_epoch, bad = metric, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad += 1
        entry["seconds"] = time.perf_counter() - start
        if best_state is not None:
            entry["best_metric"], entry["best_epoch"] = best_metric, best_epoch
        log.append(entry)
        if callback is not None:
            callback(entry)
        logger.info(
            f"epoch {epoch}: loss {loss:.4f}"
            + (f" · metric {entry['metric']:.4f} (best {best_metric:.4f} @ {best_epoch})" if "metric" in entry else "")
            + f" · {entry['seconds']:.1f}s"
        )
        if bad >= args.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return {
        "best_epoch": best_epoch if best_state is not None else epoch,
        "best_metric": best_metric if best_state is not None else None,
        "epochs_run": epoch,
        "log": log,
    }


__all__ = [
    "SASRecConfig",
    "SASRecModel",
    "SASRecOutput",
    "SASRecPreTrainedModel",
    "SASRecTrainingArguments",
    "build_training_batches",
    "sasrec_scorer",
    "train_one_epoch",
    "train_sasrec",
]
