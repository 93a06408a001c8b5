# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Inference with a trained MME-SID: `MMESIDRecommender(model, processor)` ranks the catalog for item histories
(Python lists), recommends, generates items under the catalog's ID trie, and serves as the evaluator's scorer.

The model computes tensors; this object turns histories into prompts (through the processor), batches users by
history length, and owns what inference computes once rather than once per user: the shared prompt's keys/values, the
fused token of every item, the item score table (paper Eq. 8 folded per item) and the trie of generative IDs. They
are built at first use and kept until `invalidate()`: call it after changing the model's weights or item tables.

Hub-side file: imports only `torch`, `transformers` and its sibling files; it travels with saved models.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import GenerationConfig, LogitsProcessorList, Pipeline

from .generation_mmesid import (
    CACHE_NAME,
    SIDTrie,
    SIDTrieLogitsProcessor,
    _compact_beams,
    generative_codes,
    generative_position_token_ids,
)


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices of `lengths` in batches of `batch_size`, shortest first (stable): a batch is padded to its longest
    prompt, so users of similar lengths batch with the least padding. The one length bucketing of inference,
    evaluation and the trainer."""
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be at least 1, got {batch_size}.")
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def check_layout(config, processor) -> None:
    """Refuse a processor that lays prompts out otherwise than the model was trained on (`config.layout`): its user
    states would be read at other tokens."""
    layout = getattr(processor, "layout", "chat")
    if layout != config.layout:
        raise ValueError(
            f"The processor's `layout={layout!r}` differs from the model's `config.layout={config.layout!r}`; use the "
            "processor the model was built with (`MMESIDProcessor.from_pretrained` of the model's folder)."
        )


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The MME-SID model inside a PEFT wrapper (the adapters are injected in place, so the base model runs them)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@dataclass
class RankingState:
    """What ranking computes once: the shared prompt `(1, prompt_length)` and its keys/values per layer, the fused
    token of every item `(num_items + 1, hidden_size)` (row 0 zeros) and the item score table `(num_items + 1,
    hidden_size)` ([`~MMESIDForSequentialRecommendation.item_score_table`])."""

    prompt_ids: torch.LongTensor
    prompt_cache: list[tuple[torch.Tensor, torch.Tensor]]
    item_tokens: torch.Tensor
    score_table: torch.Tensor


@dataclass
class GenerativeIndex:
    """The catalog's generative IDs `(num_items + 1, id_length)` (CPU), their trie, and the token of code 0 at each
    position `(id_length,)`. The trie stays on the CPU: decoding reads a few entries per beam and step."""

    trie: SIDTrie
    codes: torch.LongTensor
    position_token_ids: torch.LongTensor


class MMESIDRecommender:
    r"""
    Rank, recommend and generate with a trained [`MMESIDForSequentialRecommendation`].

    Args:
        model ([`MMESIDForSequentialRecommendation`], or a PEFT model around one):
            Runs in its current mode (call `model.eval()` first for deterministic scores).
        processor ([`MMESIDProcessor`]):
            Renders the prompts; it must lay them out as the model was trained (`config.layout`).
        batch_size (`int`, *optional*, defaults to 16):
            Users per forward pass unless a call says otherwise.

    Example:

    ```python
    >>> recommender = MMESIDRecommender(model.eval(), processor)
    >>> recommender.recommend([[1, 2, 3], [42]], k=10)  # (2, 10) item ids, history items excluded
    >>> recommender.score_histories([[1, 2, 3]])  # (1, num_items + 1) fused logits, column 0 = padding
    ```
    """

    def __init__(self, model, processor, batch_size: int = 16):
        self.model = unwrap_model(model)
        self.processor = processor
        self.config = self.model.config
        if not hasattr(getattr(self.model, "model", None), "embed_inputs"):
            raise TypeError(
                f"{type(self.model).__name__} (from {type(self.model).__module__}) has no `model.embed_inputs`: its "
                "code predates `MMESIDRecommender` (a folder saved by an older version carries its own copy). Load it with "
                "this package's class, `MMESIDForSequentialRecommendation.from_pretrained(path)`, or save it again."
            )
        self.batch_size = int(batch_size)
        check_layout(self.config, processor)
        self.invalidate()

    def invalidate(self) -> None:
        """Drop the cached prompt keys/values, item tokens, score table and trie: the next call rebuilds them from the
        model's current weights and item tables."""
        self._shared_prompt = None  # (prompt ids, their keys/values)
        self._ranking_state = None
        self._generative_index = None

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def max_length(self) -> int | None:
        return getattr(self.config.text_config, "max_position_embeddings", None)

    # ------------------------------------------------------------------ cached state
    @torch.no_grad()
    def shared_prompt(self) -> tuple[torch.LongTensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """The tokens every prompt starts with `(1, prompt_length)` and their keys/values per layer
        ([`MMESIDModel.encode_shared_prompt`]), computed once."""
        if self._shared_prompt is None:
            prompt_ids = torch.tensor([self.processor.shared_prompt_ids()], dtype=torch.long, device=self.device)
            self._shared_prompt = (prompt_ids, self.model.model.encode_shared_prompt(prompt_ids))
        return self._shared_prompt

    @torch.no_grad()
    def prepare_ranking(self) -> RankingState:
        """The ranking state of the model's current weights (built at the first call, then reused)."""
        if self._ranking_state is None:
            prompt_ids, prompt_cache = self.shared_prompt()
            self._ranking_state = RankingState(
                prompt_ids=prompt_ids,
                prompt_cache=prompt_cache,
                item_tokens=self.model.model.catalog_item_features(),
                score_table=self.model.item_score_table(),
            )
        return self._ranking_state

    @torch.no_grad()
    def generative_index(self) -> GenerativeIndex:
        """The trie of the catalog's generative IDs (built at the first call, then reused)."""
        if self._generative_index is None:
            codes = generative_codes(self.model.model.sids, self.config)
            self._generative_index = GenerativeIndex(
                trie=SIDTrie(codes[1:], self.config.codebook_size),
                codes=codes,
                position_token_ids=generative_position_token_ids(self.config),
            )
        return self._generative_index

    # ------------------------------------------------------------------ histories
    def check_histories(self, histories: Sequence[Sequence[int]], shared_prompt: bool = True) -> list[list[int]]:
        """`histories` as lists of ints, checked up front (item ids, prompt lengths) before any batch runs."""
        rows = [h.tolist() if isinstance(h, torch.Tensor) else list(h) for h in histories]
        if len(rows) == 0:
            raise ValueError("`histories` is empty; pass one list of item ids per user (`[[]]` is one empty history).")
        self.processor(rows, max_length=self.max_length, shared_prompt=shared_prompt)
        return rows

    def _inputs(self, histories: list[list[int]], shared_prompt: bool = False) -> dict[str, torch.Tensor]:
        inputs = self.processor(histories, max_length=self.max_length, shared_prompt=shared_prompt)
        return {k: v.to(self.device) for k, v in inputs.items()}

    @torch.no_grad()
    def forward(self, histories: Sequence[Sequence[int]]):
        """The model's forward pass over the full prompts of `histories` (one batch): an [`MMESIDOutput`] with the
        fused scores and their parts (`modality_logits`, `fusion_weights`)."""
        return self.model(**self._inputs([list(h) for h in histories]))

    @torch.no_grad()
    def _score_batch(self, histories: list[list[int]]) -> torch.Tensor:
        """One batch through the cached path: the shared prompt's keys/values, the item tokens and the score table."""
        state = self.prepare_ranking()
        inputs = self._inputs(histories, shared_prompt=True)
        item_features = state.item_tokens[inputs["item_ids"]]
        embeds = self.model.model.embed_inputs(inputs["input_ids"], item_features=item_features)
        outputs = self.model.model(
            inputs_embeds=embeds,
            attention_mask=inputs["attention_mask"],
            shared_prompt_ids=state.prompt_ids,
            shared_prompt_cache=state.prompt_cache,
        )
        h = outputs.last_hidden_state[:, -1]  # left padding: the last position is each prompt's final token
        with torch.autocast(device_type=h.device.type, enabled=False):  # float32 whatever the backbone's dtype
            item_logits = h.float() @ state.score_table.float().T  # (batch, num_items + 1)
        item_logits[:, self.config.pad_item_id] = float("-inf")
        return item_logits

    # ------------------------------------------------------------------ ranking
    @torch.no_grad()
    def score_histories(
        self, histories: Sequence[Sequence[int]], batch_size: int | None = None, use_cache: bool = True
    ) -> torch.Tensor:
        r"""
        Fused item logits for each history, `(len(histories), num_items + 1)`; padding column `-inf`, history items
        not masked.

        Args:
            histories (`list[list[int]]`):
                Item ids per user, oldest first.
            batch_size (`int`, *optional*):
                Users per forward pass (defaults to the recommender's); users are sorted by history length first.
            use_cache (`bool`, *optional*, defaults to `True`):
                The cached path ([`~MMESIDRecommender.prepare_ranking`]: the shared prompt once, item tokens once per
                item, the score table once). `False` is the plain path (the model's forward on each full prompt, the
                four score heads per batch); both give the same scores up to float rounding.
        """
        batch_size = self.batch_size if batch_size is None else batch_size
        rows = self.check_histories(histories, shared_prompt=use_cache)
        scores = None
        # the plain path keeps the input order (the reference the cached path is checked against)
        lengths = [len(r) for r in rows]
        batches = length_sorted_batches(lengths, batch_size) if use_cache else _in_order(rows, batch_size)
        for index in batches:
            batch = [rows[i] for i in index]
            chunk = self._score_batch(batch) if use_cache else self.forward(batch).item_logits
            if scores is None:
                scores = chunk.new_empty(len(rows), chunk.shape[1])
            scores[torch.as_tensor(index, device=chunk.device)] = chunk
        return scores

    def as_scorer(
        self, batch_size: int | None = None, use_cache: bool = True
    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """A scorer for `modeling_mmesid.evaluation` (docs/CONTRACTS.md): `(histories [B, L] right-padded with 0,
        lengths [B]) -> [B, num_items + 1]`, through this recommender's cached state."""

        def scorer(histories: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
            rows = [h[: int(n)].tolist() for h, n in zip(histories, lengths)]
            return self.score_histories(rows, batch_size=batch_size, use_cache=use_cache)

        return scorer

    @torch.no_grad()
    def recommend(
        self,
        histories: Sequence[Sequence[int]],
        k: int = 10,
        exclude_history: bool = True,
        batch_size: int | None = None,
        method: str = "rank",
        num_candidates: int | None = None,
    ) -> torch.LongTensor:
        r"""
        Top-`k` next items per user, best first: full ranking over the catalog (`method="rank"`), constrained beam
        search over the catalog's generative IDs (`method="generate"`, [`~MMESIDRecommender.generate_items`]), or both
        (`method="rerank"`, `config.head="both"`): beam search proposes `num_candidates` items and the ranking head
        orders them.

        Args:
            histories (`list[list[int]]`):
                Item ids per user, oldest first.
            k (`int`, *optional*, defaults to 10):
                Items to return per user; at most `num_items`.
            exclude_history (`bool`, *optional*, defaults to `True`):
                Never recommend items of the user's history (the paper's evaluation masks them).
            batch_size (`int`, *optional*):
                Users per forward pass (defaults to the recommender's).
            method (`str`, *optional*, defaults to `"rank"`):
                `"rank"` (the ranking head; `config.head` `"ranking"` or `"both"`), `"generate"` (the generative
                head; `"generative"` or `"both"`) or `"rerank"` (both heads; `"both"`).
            num_candidates (`int`, *optional*):
                Beams proposed per user for `method="rerank"` (defaults to `k`; at least `k`). Reranking `k` beams
                keeps their set and changes their order.

        Returns:
            `torch.LongTensor` of shape `(len(histories), k)`. Padding (0) is never returned unless a user has fewer
            than `k` candidates left.
        """
        config = self.config
        if method not in ("rank", "generate", "rerank"):
            raise ValueError(f"`method` must be 'rank', 'generate' or 'rerank', got {method!r}.")
        if num_candidates is not None and method != "rerank":
            raise ValueError(f"`num_candidates` is for `method='rerank'`, got method={method!r}.")
        if method == "generate":
            return self.generate_items(histories, k=k, exclude_history=exclude_history, batch_size=batch_size)[0]
        if method == "rerank":
            if config.head != "both":
                raise ValueError(f"`method='rerank'` needs both heads, but `config.head={config.head!r}`.")
            num_candidates = k if num_candidates is None else num_candidates
            if num_candidates < k:
                raise ValueError(f"`num_candidates` must be at least `k` ({k}), got {num_candidates}.")
            candidates, _ = self.generate_items(
                histories, k=num_candidates, exclude_history=exclude_history, batch_size=batch_size
            )
            logits = self.score_histories(histories, batch_size=batch_size).float().cpu()
            scores = logits.gather(1, candidates).masked_fill(candidates == 0, float("-inf"))  # 0: no candidate left
            order = scores.argsort(dim=-1, descending=True, stable=True)  # ties keep the beam order
            return candidates.gather(1, order)[:, :k]
        if config.head == "generative":
            raise ValueError(
                "`method='rank'` needs the ranking head, but `config.head='generative'`; use `method='generate'`."
            )
        if not 1 <= k <= config.num_items:
            raise ValueError(f"`k` must be in 1..{config.num_items} (`num_items`), got {k}.")
        logits = self.score_histories(histories, batch_size=batch_size)
        if exclude_history:
            for row, history in enumerate(histories):
                if len(history) > 0:
                    index = torch.as_tensor(list(history), dtype=torch.long, device=logits.device)
                    logits[row, index] = float("-inf")
        return logits.topk(k, dim=-1).indices

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate_items(
        self,
        histories: Sequence[Sequence[int]],
        k: int = 10,
        exclude_history: bool = True,
        batch_size: int | None = None,
        use_cache: bool = True,
        renormalize: bool = False,
    ) -> tuple[torch.LongTensor, torch.FloatTensor]:
        r"""
        Top-`k` next items per user by constrained beam search over the catalog's generative IDs (`config.head`
        `"generative"` or `"both"`): `model.generate` with `num_beams=k` and a [`SIDTrieLogitsProcessor`] over the
        trie of the catalog's IDs, so every beam is an existing item and the `k` beams are `k` distinct items. Users
        are batched by history length; the shared prompt's keys/values are computed once and reused by every batch
        and beam (`use_cache=True`).

        Args:
            histories (`list[list[int]]`):
                Item ids per user, oldest first.
            k (`int`, *optional*, defaults to 10):
                Beams, and items returned, per user.
            exclude_history (`bool`, *optional*, defaults to `True`):
                Never generate an item of the user's history.
            batch_size (`int`, *optional*):
                Users per `generate` call (defaults to the recommender's).
            use_cache (`bool`, *optional*, defaults to `True`):
                Reuse the shared prompt's KV cache; `False` runs each full prompt (same beams up to float rounding).
            renormalize (`bool`, *optional*, defaults to `False`):
                Renormalize each step's scores over the allowed codes ([`SIDTrieLogitsProcessor`]) instead of
                keeping the model's probabilities (an opt-in; it changes the ranking when history items are excluded).

        Returns:
            `(items, scores)`: `torch.LongTensor` and `torch.FloatTensor` of shape `(len(histories), k)`, best first;
            `scores` are the items' log-probabilities under the model (the sum of its log-softmax over the ID's tokens;
            excluded history items are not renormalized away). Item 0 (score `-inf`) fills the end of the row of a
            user with fewer than `k` candidate items, never the middle.
        """
        config, model = self.config, self.model
        if config.head == "ranking":
            raise ValueError(
                "`method='generate'` needs a generative head, but `config.head='ranking'`; train a model with "
                "`head='generative'` or `head='both'`."
            )
        if not 1 <= k <= config.num_items:
            raise ValueError(f"`k` must be in 1..{config.num_items} (`num_items`), got {k}.")
        batch_size = self.batch_size if batch_size is None else batch_size
        rows = self.check_histories(histories, shared_prompt=False)
        index_ = self.generative_index()
        id_length = config.generative_id_length
        num_beams = max(k, 2)  # `generate` runs greedy search for one beam (no beam scores)
        generation_config = GenerationConfig(
            num_beams=num_beams, num_return_sequences=k, do_sample=False, max_new_tokens=id_length,
            min_new_tokens=id_length, length_penalty=0.0, early_stopping=False,
            pad_token_id=self.processor.pad_token_id, eos_token_id=None, bos_token_id=None,
            return_dict_in_generate=True, output_scores=True,
        )
        prompt_ids, prompt_cache = self.shared_prompt() if use_cache else (None, None)
        items = torch.zeros(len(rows), k, dtype=torch.long)
        scores = torch.full((len(rows), k), float("-inf"))
        for index in length_sorted_batches([len(r) for r in rows], batch_size):
            batch = [rows[i] for i in index]
            inputs = self._inputs(batch, shared_prompt=use_cache)
            embeds = model.model.embed_inputs(inputs["input_ids"], item_ids=inputs["item_ids"])
            mask, extra = inputs["attention_mask"], {}
            if use_cache:
                # The cached shared prompt is the first columns of every row: dummy embeddings there (never run),
                # ones in the mask; `generate` runs only the columns after the cache.
                num_shared = prompt_ids.shape[1]
                embeds = torch.cat([embeds.new_zeros(len(batch), num_shared, embeds.shape[-1]), embeds], dim=1)
                mask = torch.cat([torch.ones_like(mask[:, :1]).expand(-1, num_shared), mask], dim=1)
                extra[CACHE_NAME] = model.model.expand_shared_prompt(prompt_cache, len(batch) * num_beams)
            constraint = SIDTrieLogitsProcessor(
                index_.trie, index_.position_token_ids, num_beams=num_beams,
                excluded_items=batch if exclude_history else None, item_codes=index_.codes, renormalize=renormalize,
            )
            out = model.generate(
                inputs_embeds=embeds, attention_mask=mask, generation_config=generation_config,
                logits_processor=LogitsProcessorList([constraint]), **extra,
            )
            sequences = out.sequences[:, -id_length:].cpu()
            found = index_.trie.items(sequences - index_.position_token_ids).view(len(batch), k)
            beam_scores = out.sequences_scores.float().cpu().view(len(batch), k)
            items[index], scores[index] = _compact_beams(found, beam_scores)  # padding only at the end of a row
        return items, scores


# What `config.custom_pipelines` says for a saved model (set by `from_backbone`), so that
# `pipeline(model=folder_or_repo_id, trust_remote_code=True)` builds `MMESIDRecommendationPipeline` from saved code.
PIPELINE_TASK = "mmesid-recommendation"
CUSTOM_PIPELINES = {PIPELINE_TASK: {"impl": "recommender_mmesid.MMESIDRecommendationPipeline", "pt": ["AutoModel"],
                                    "type": "text"}}


class MMESIDRecommendationPipeline(Pipeline):
    r"""
    [`MMESIDRecommender`] as a transformers pipeline: `pipeline(model=..., trust_remote_code=True)` loads the model and
    its processor and recommends.

    Example:

    ```python
    >>> from transformers import pipeline
    >>> recommend = pipeline(model="org/mmesid-beauty", trust_remote_code=True)
    >>> recommend([[1, 2, 3], [42]], k=10)  # one list of 10 item ids per history, best first
    ```

    Call arguments are [`~MMESIDRecommender.recommend`]'s (`k`, `exclude_history`, `method`, `num_candidates`,
    `batch_size`); the histories are batched by the recommender, not by the pipeline.
    """

    _load_processor = True
    _load_tokenizer = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_video_processor = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.recommender = MMESIDRecommender(self.model.eval(), self.processor)

    def _sanitize_parameters(self, **kwargs):
        return {}, kwargs, {}

    def __call__(self, histories: Sequence[Sequence[int]], **kwargs) -> list[list[int]]:
        params = {**self._forward_params, **self._sanitize_parameters(**kwargs)[1]}
        return self.recommender.recommend(histories, **params).tolist()

    def preprocess(self, inputs):
        return inputs

    def _forward(self, inputs):
        return inputs

    def postprocess(self, outputs):
        return outputs


def _in_order(rows: list, batch_size: int) -> list[list[int]]:
    """Consecutive batches of `batch_size` indices, in input order (the plain path's batches)."""
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be at least 1, got {batch_size}.")
    return [list(range(start, min(start + batch_size, len(rows)))) for start in range(0, len(rows), batch_size)]


__all__ = [
    "GenerativeIndex",
    "MMESIDRecommendationPipeline",
    "MMESIDRecommender",
    "RankingState",
    "check_layout",
    "length_sorted_batches",
    "unwrap_model",
]
