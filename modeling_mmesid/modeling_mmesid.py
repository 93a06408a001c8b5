# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""PyTorch MME-SID: an LLM sequential recommender with multimodal embeddings and semantic IDs.

Wang et al., "Empowering Large Language Model for Sequential Recommendation via Multimodal Embeddings and Semantic
IDs", CIKM 2025 (arXiv 2509.02017), Stage 2. The skeleton follows LLaVA: `MMESIDModel` merges fused item tokens into
the backbone's input embeddings at `<item>` placeholders; `MMESIDForSequentialRecommendation` pools the final prompt
token and scores every catalog item with four heads and frequency-aware fusion. An optional generative head
(`config.head`) generates the next item's semantic ID instead, under a prefix trie of the catalog's IDs
(generation_mmesid.py), so its cost per user does not grow with the catalog.

The model computes tensors from tensors. Inference over item histories (prompts from the processor, length-sorted
batches, the cached prompt, item tokens, score table and trie) is `MMESIDRecommender` (recommender_mmesid.py);
building the model from Stage 1's outputs (`from_backbone`, the item tables, the codebook-initialized SID rows) is
building_mmesid.py.

Hub-side file: imports only `torch`, `transformers` and its sibling files (configuration, building, generation,
recommender); `save_pretrained` copies them with it.
"""

import functools
import inspect
from dataclasses import dataclass

import torch
from torch import nn
from transformers import (
    AutoModel,
    GenerationMixin,
    PreTrainedModel,
)
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs, auto_docstring, logging, torch_compilable_check
from transformers.utils.generic import can_return_tuple

from .building_mmesid import MMESIDBuildMixin, MMESIDItemTablesMixin, buffer_name
from .configuration_mmesid import MMESIDConfig, sid_token_id
from .generation_mmesid import CACHE_NAME
from .recommender_mmesid import MMESIDRecommender  # noqa: F401 (`save_pretrained` copies its file)


logger = logging.get_logger(__name__)


# ---------------------------------------------------------------------------------------------- transformers versions
# This file travels with every saved model and runs on the *user's* transformers, so it adapts here (and in
# generation_mmesid.py) to the versions that `pyproject.toml` admits:
# - transformers >= 5.24 names the key/value cache `cache`, both as the output field of every `ModelOutput` and as the
#   forward argument of its models (`past_key_values` is a deprecated alias until 5.40); 5.23 names it
#   `past_key_values`. `CACHE_NAME` (generation_mmesid.py, shared with the inference object) is the name the installed
#   version defines; outputs are built and read through it, and the backbone is called with the name its own
#   `forward` declares (`_backbone_cache_kwarg`).


# Attention implementations whose 4D-mask path (prefix-tree packed rows) is tested exact (tests/test_equivalence.py);
# flash attention reads a 4D mask as padding, so samples would see later targets of their user.
PACKED_MASK_ATTENTION = ("eager", "sdpa")


def _backbone_cache_kwarg(module: nn.Module) -> str:
    """The name under which `module.forward` takes a key/value cache (`cache` or `past_key_values`)."""
    return _cache_kwarg_of_class(type(module))


@functools.cache
def _cache_kwarg_of_class(cls: type) -> str:
    return "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"


def _merge_cache_arguments(cache: "Cache | None", past_key_values: "Cache | None") -> "Cache | None":
    """One cache from the new (`cache`) or the old (`past_key_values`) argument name."""
    if cache is not None and past_key_values is not None:
        raise ValueError("Pass the key/value cache as `cache` or as `past_key_values`, not both.")
    return cache if cache is not None else past_key_values


def _output_cache(outputs: ModelOutput) -> "Cache | None":
    """The key/value cache of a backbone output, whichever name the installed transformers gives it."""
    return getattr(outputs, CACHE_NAME, None)


def embed_token_ids(embeddings: nn.Module, token_ids: torch.LongTensor) -> torch.Tensor:
    """`embeddings(token_ids)`, with the same values and gradients, without rebuilding the whole embedding matrix when
    `embeddings` carries PEFT's trainable tokens (finetune.py trains the SID rows so): PEFT's forward writes the
    trainable rows into a copy of the `(vocab_size, hidden_size)` matrix (`index_copy`) at every call and its backward
    fills a gradient of that size, about 9% of a 32-user training step of SmolLM2-135M on 2 CPU cores
    (docs/SPEED.md). Here the frozen rows come from the base embedding and the trainable ones from the delta table.
    Any other module, or an adapter state this does not cover (merged, disabled, several adapters, a scaled or
    max-norm embedding), goes through `embeddings` itself."""
    layer = getattr(embeddings, "token_adapter", embeddings)  # PEFT's TrainableTokensWrapper -> its layer
    deltas = getattr(layer, "trainable_tokens_delta", None)
    active = getattr(layer, "active_adapters", ())
    if (deltas is None or getattr(layer, "merged", True) or getattr(layer, "disable_adapters", True)
            or len(active) != 1):
        return embeddings(token_ids)
    (name,) = active
    base = getattr(layer, "base_layer", None)
    token_indices = getattr(layer, "token_indices", {}).get(name)
    if (name not in deltas or token_indices is None or not isinstance(base, nn.Embedding) or base.max_norm is not None
            or base.sparse or getattr(base, "embed_scale", None) is not None):
        return embeddings(token_ids)
    indices = torch.as_tensor(token_indices, dtype=torch.long, device=token_ids.device)
    slots = torch.full((base.num_embeddings,), -1, dtype=torch.long, device=token_ids.device)
    slots[indices] = torch.arange(indices.numel(), device=token_ids.device)
    rows = slots[token_ids]
    frozen = nn.functional.embedding(token_ids, base.weight, padding_idx=base.padding_idx)
    trained = deltas[name].to(base.weight)[rows.clamp_min(0)]
    return torch.where((rows >= 0).unsqueeze(-1), trained, frozen)


def left_padded_position_ids(attention_mask: torch.Tensor, offset: int = 0) -> torch.LongTensor:
    """Position ids of left-padded rows `(batch, length)`: counted from each row's first real token (as `generate`
    counts them), plus `offset` (the tokens of a shared prompt before every row); padding gets `offset`."""
    return offset + (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


@dataclass
class MMESIDOutput(ModelOutput):
    r"""
    Output of [`MMESIDForSequentialRecommendation`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` is given):
            Cross-entropy over all items (padding column excluded), averaged over the labelled rows.
        item_logits (`torch.FloatTensor` of shape `(batch_size, num_items + 1)`):
            Fused score of every item (paper Eq. 8); column 0 (padding) is `-inf`.
        modality_logits (`torch.FloatTensor` of shape `(batch_size, num_items + 1, num_modalities + 1)`):
            The unfused scores: `[..., 0]` from the learned item table `<h, e_j>`, `[..., 1 + m]` from
            `<h, W_m x_j>` for `config.modalities[m]`.
        fusion_weights (`torch.FloatTensor` of shape `(num_items + 1, num_modalities + 1)`):
            Per-item weights of the scores in `modality_logits` (rows sum to 1).
        user_embeddings (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
            `h`, the last hidden state of each prompt's final (non-padding) token.
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`):
            Backbone output for every position.
        cache (`Cache`, *optional*, returned when the backbone uses a cache):
            The backbone's key/value cache. The field is named `cache` on transformers >= 5.24 and `past_key_values`
            before (`CACHE_NAME`); 5.24 also answers `output.past_key_values`.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned when `output_hidden_states=True`):
            Backbone hidden states per layer.
        attentions (`tuple(torch.FloatTensor)`, *optional*, returned when `output_attentions=True`):
            Backbone attention maps per layer.
        logits (`torch.FloatTensor` of shape `(batch_size, num_positions, vocab_size)`, *optional*, returned when
            `config.head` is `"generative"` or `"both"`):
            Next-token scores of the generative head (`-inf` outside the SID tokens): with `labels`, at the final
            prompt token and each teacher-forced ID token (`num_positions = config.generative_id_length`); without,
            at the last position only (`num_positions = 1`, what `generate` reads).
        generative_loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` is given and the
            config has a generative head):
            Cross-entropy of the target items' ID tokens, averaged over the labelled samples and the ID's positions.
            With `head="both"`, `loss` is the ranking loss plus `config.generative_loss_weight` times this.
    """

    loss: torch.FloatTensor | None = None
    item_logits: torch.FloatTensor | None = None
    modality_logits: torch.FloatTensor | None = None
    fusion_weights: torch.FloatTensor | None = None
    user_embeddings: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    if CACHE_NAME == "cache":
        cache: Cache | None = None
    else:
        past_key_values: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    # after the ranking fields, so that a ranking model's tuple output keeps its positions
    logits: torch.FloatTensor | None = None
    generative_loss: torch.FloatTensor | None = None


def check_packed_rows(config: MMESIDConfig, attn_implementation: str) -> None:
    """Refuse prefix-tree packed rows (a 4D `attention_mask`, one readout per sample; `prefix_packing=True` in
    training) where they are not exact: with an attention implementation whose 4D-mask path is not tested exact, and
    with a generative head (a packed row holds several samples whose targets' ID tokens would each need their own
    branch of the tree, not built)."""
    if config.head != "ranking":
        raise ValueError(
            f"The generative head (`config.head={config.head!r}`) does not support prefix-tree packed rows (a 4D "
            "`attention_mask`, `readout_positions`): train with `prefix_packing=False` (or `head='ranking'`)."
        )
    if attn_implementation not in PACKED_MASK_ATTENTION:
        raise ValueError(
            f"Prefix-tree packed rows (a 4D `attention_mask`, `prefix_packing=True`) are tested exact only with the "
            f"`eager` and `sdpa` attention implementations, got {attn_implementation!r}. Load the backbone with "
            "`attn_implementation=\"sdpa\"` (or call `model.set_attn_implementation(\"sdpa\")`), or train without "
            "`prefix_packing`."
        )


class MMESIDPreTrainedModel(PreTrainedModel):
    config: MMESIDConfig
    config_class = MMESIDConfig
    base_model_prefix = "model"
    input_modalities = ("text",)
    supports_gradient_checkpointing = True
    _skip_keys_device_placement = ["cache", "past_key_values"]  # noqa: RUF012
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    # Mixed precision: a backbone loaded in bf16 (`from_pretrained(..., dtype=torch.bfloat16)`) runs in bf16, while
    # MME-SID's own modules and item tables stay float32, so that what trains is float32 and the fused item scores,
    # the softmax and every ranking comparison are float32 (bf16 scores create ties that change ranks).
    _keep_in_fp32_modules_strict = [  # noqa: RUF012
        "modality_projections", "item_fusion", "item_head", "fusion_gate",
        "collaborative_embeddings", "image_embeddings", "text_embeddings",
    ]

    def _init_weights(self, module):
        # Linear layers (projections, item MLP, item table, fusion gate) and the backbone: the library default
        # (normal with the backbone's `initializer_range`, zero bias).
        super()._init_weights(module)
        if isinstance(module, MMESIDFusionGate) and self.config.fusion_gate_init == "torch":
            # PyTorch's `nn.Linear` default, as in the official code (`config.fusion_gate_init`); `apply` visits
            # the gate after its layers, so this overrides the library default just written
            for layer in module.modules():
                if isinstance(layer, nn.Linear):
                    layer.reset_parameters()
        if isinstance(module, MMESIDModel):
            # Per-item tables are data (set by `set_item_tables`); zero until then, like the padding row.
            for modality in module.config.modalities:
                init.zeros_(getattr(module, buffer_name(modality)))
            init.zeros_(module.sids)
            init.zeros_(module.item_counts)


class MMESIDItemFusion(nn.Module):
    """Item-token MLP: `GELU(Linear(M*H -> H)(ReLU(Linear(2*M*H -> M*H)(concat))))` (paper Eq. 6)."""

    def __init__(self, config: MMESIDConfig):
        super().__init__()
        hidden_size = config.text_config.hidden_size
        num_modalities = config.num_modalities
        parts = 2 if config.item_token_sids else 1  # [W_m x_m, sid_m] per modality, or W_m x_m alone (ablation)
        self.linear_1 = nn.Linear(parts * num_modalities * hidden_size, num_modalities * hidden_size)
        self.act_1 = nn.ReLU()
        self.linear_2 = nn.Linear(num_modalities * hidden_size, hidden_size)
        self.act_2 = nn.GELU()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.act_2(self.linear_2(self.act_1(self.linear_1(features))))


class MMESIDFusionGate(nn.Module):
    """Frequency gate `g(f)` of the official code: Linear(1,64) -> GELU -> Linear(64,10) -> Linear(10,64, no bias)
    -> GELU -> Linear(64, M + 1) (paper Eq. 9)."""

    def __init__(self, config: MMESIDConfig):
        super().__init__()
        hidden, bottleneck = config.fusion_hidden_size, config.fusion_bottleneck_size
        self.linear_1 = nn.Linear(1, hidden)
        self.act_1 = nn.GELU()
        self.linear_2 = nn.Linear(hidden, bottleneck)
        self.linear_3 = nn.Linear(bottleneck, hidden, bias=False)
        self.act_2 = nn.GELU()
        self.linear_4 = nn.Linear(hidden, config.num_modalities + 1)

    def forward(self, frequencies: torch.Tensor) -> torch.Tensor:
        x = self.linear_2(self.act_1(self.linear_1(frequencies)))
        return self.linear_4(self.act_2(self.linear_3(x)))


@auto_docstring(
    custom_intro="""
    MME-SID without score heads: builds one fused item token per history item and runs the backbone decoder on the
    prompt with the item tokens scattered into the `<item>` placeholders (LLaVA-style).
    """
)
class MMESIDModel(MMESIDPreTrainedModel, MMESIDItemTablesMixin):
    # A training batch of one row (the packed recipes) runs its shared prompt inside the row rather than as a separate
    # pass for a cache (`forward`); False restores the separate pass (the benchmark's baseline row). Same outputs.
    inline_shared_prompt: bool = True

    def __init__(self, config: MMESIDConfig):
        super().__init__(config)
        self.language_model = AutoModel.from_config(config.text_config)
        hidden_size = config.text_config.hidden_size
        num_rows = config.num_items + 1
        # W_m: shared by the item token (input side) and the modality score heads (paper Eq. 6 and 8).
        # No bias: the paper writes W_m x_m.
        self.modality_projections = nn.ModuleDict(
            {m: nn.Linear(d, hidden_size, bias=False) for m, d in zip(config.modalities, config.modality_dims)}
        )
        self.item_fusion = MMESIDItemFusion(config)
        # Per-item tables, persistent so that a checkpoint is self-contained. Raw embeddings are frozen (buffers).
        for modality, dim in zip(config.modalities, config.modality_dims):
            setattr(self, buffer_name(modality), nn.Buffer(torch.empty(num_rows, dim), persistent=True))
        self.sids = nn.Buffer(
            torch.empty(num_rows, config.num_modalities, config.num_levels, dtype=torch.long), persistent=True
        )
        self.item_counts = nn.Buffer(torch.empty(num_rows, dtype=torch.long), persistent=True)
        self.post_init()

    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.language_model.set_input_embeddings(value)

    def token_embeddings(self, token_ids: torch.LongTensor) -> torch.Tensor:
        """The input embeddings of `token_ids` (through a PEFT trainable-tokens wrapper without rebuilding the whole
        matrix: `embed_token_ids`)."""
        return embed_token_ids(self.get_input_embeddings(), token_ids)

    def modality_embeddings(self, modality: str) -> torch.Tensor:
        """Frozen raw embeddings of `modality`, `(num_items + 1, modality_dim)`."""
        return getattr(self, buffer_name(modality))

    def sid_token_ids(self, item_ids: torch.LongTensor) -> torch.LongTensor:
        """Token ids of the SID tokens of `item_ids`: shape `(*item_ids.shape, num_modalities, num_levels)`."""
        config = self.config
        device = item_ids.device
        m = torch.arange(config.num_modalities, device=device).view(-1, 1)
        level = torch.arange(config.num_levels, device=device).view(1, -1)
        offset = torch.full((), config.sid_token_offset, dtype=torch.long, device=device)
        return sid_token_id(offset, config.num_levels, config.codebook_size, m, level, self.sids[item_ids])

    def get_item_features(self, item_ids: torch.LongTensor) -> torch.Tensor:
        r"""
        One fused item token per item (paper Eq. 6):
        `GELU(MLP(concat over modalities [W_m x_m(i), sid_m(i)]))`, where `sid_m(i)` sums, over levels, the
        backbone's input-embedding rows of item `i`'s SID tokens (`config.item_token_sids=False`: `W_m x_m(i)` only).

        Args:
            item_ids (`torch.LongTensor` of any shape):
                Item ids in `1..num_items`.

        Returns:
            `torch.FloatTensor` of shape `(*item_ids.shape, hidden_size)`.
        """
        num_items = self.config.num_items
        torch_compilable_check(
            ((item_ids >= 1) & (item_ids <= num_items)).all(),
            lambda: (
                f"`item_ids` must be in 1..{num_items} (0 is padding and is never an input), got values in "
                f"{item_ids.min().item()}..{item_ids.max().item()}."
            ),
        )
        use_sids = self.config.item_token_sids
        # Through the embedding module, not `.weight`, so a PEFT wrapper of the embeddings (trainable tokens) applies.
        sid_embeds = self.token_embeddings(self.sid_token_ids(item_ids)).sum(dim=-2) if use_sids else None
        dtype = self.item_fusion.linear_1.weight.dtype
        parts = []
        for index, modality in enumerate(self.config.modalities):
            projection = self.modality_projections[modality]
            raw = self.modality_embeddings(modality)[item_ids].to(projection.weight.dtype)
            parts.append(projection(raw).to(dtype))
            if use_sids:
                parts.append(sid_embeds[..., index, :].to(dtype))
        return self.item_fusion(torch.cat(parts, dim=-1))

    @torch.no_grad()
    def catalog_item_features(self, dtype: torch.dtype | None = None, chunk_size: int = 4096) -> torch.Tensor:
        """The fused token of every item (`get_item_features`), `(num_items + 1, hidden_size)` with row 0 (padding)
        zero, computed `chunk_size` items at a time (bounded memory on large catalogs); `dtype` defaults to the
        input embeddings'."""
        embeddings = self.get_input_embeddings().weight
        out = torch.zeros(self.config.num_items + 1, embeddings.shape[-1], dtype=dtype or embeddings.dtype,
                          device=embeddings.device)
        for chunk in torch.arange(1, self.config.num_items + 1, device=embeddings.device).split(chunk_size):
            out[chunk] = self.get_item_features(chunk).to(out.dtype)
        return out

    def get_placeholder_mask(
        self, input_ids: torch.LongTensor | None, inputs_embeds: torch.Tensor, item_features: torch.Tensor
    ) -> torch.Tensor:
        """Mask of the `<item>` placeholders, checked against the number of item features (LLaVA)."""
        if input_ids is None:
            item_embed = self.token_embeddings(
                torch.full((), self.config.item_token_id, dtype=torch.long, device=inputs_embeds.device)
            )
            special_item_mask = (inputs_embeds == item_embed).all(-1)
        else:
            special_item_mask = input_ids == self.config.item_token_id
        n_item_tokens = special_item_mask.sum()
        n_items = item_features.shape[0]
        torch_compilable_check(
            n_item_tokens == n_items,
            lambda: (
                f"Item features and item placeholder tokens do not match: tokens {int(n_item_tokens)}, items {n_items}"
            ),
        )
        return special_item_mask.unsqueeze(-1).expand_as(inputs_embeds).to(inputs_embeds.device)

    def embed_inputs(
        self,
        input_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        item_ids: torch.LongTensor | None = None,
        item_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        r"""
        The backbone's input embeddings with one fused item token at each `<item>` placeholder (LLaVA's merge, paper
        Eq. 6): the one place where item tokens enter the prompt, for training, the shared prompt, ranking and
        generation.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
                Prompt tokens; or pass `inputs_embeds`.
            inputs_embeds (`torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`, *optional*):
                Token embeddings (placeholders are found by comparing with the `<item>` row).
            item_ids (`torch.LongTensor` of shape `(num_placeholders,)`, *optional*):
                One item per placeholder, in row-major order; none when the prompt has no placeholder.
            item_features (`torch.FloatTensor` of shape `(num_placeholders, hidden_size)`, *optional*):
                The items' fused tokens when already computed (e.g. once per catalog for ranking), instead of
                `item_ids`.

        Returns:
            `torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`.
        """
        if inputs_embeds is None:
            inputs_embeds = self.token_embeddings(input_ids)
        if item_features is None:
            if item_ids is None:
                item_ids = torch.zeros(0, dtype=torch.long, device=inputs_embeds.device)
            item_features = self.get_item_features(item_ids.reshape(-1))
        item_features = item_features.to(inputs_embeds.device, inputs_embeds.dtype)
        special_item_mask = self.get_placeholder_mask(input_ids, inputs_embeds, item_features)
        return inputs_embeds.masked_scatter(special_item_mask, item_features)

    # ------------------------------------------------------------------ shared prompt
    def encode_shared_prompt(self, shared_prompt_ids: torch.LongTensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        r"""
        Keys and values of the prompt every row starts with, computed once (batch of one).

        Args:
            shared_prompt_ids (`torch.LongTensor` of shape `(1, prompt_length)` or `(prompt_length,)`):
                [`MMESIDProcessor.shared_prompt_ids`]; no `<item>` placeholder.

        Returns:
            One `(key, value)` pair per backbone layer, each `(1, num_key_value_heads, prompt_length, head_dim)`.
        """
        prompt_ids = shared_prompt_ids.reshape(1, -1)
        embeds = self.embed_inputs(prompt_ids)
        positions = torch.arange(prompt_ids.shape[1], device=embeds.device)[None]
        outputs = self.language_model(inputs_embeds=embeds, position_ids=positions, use_cache=True)
        return [(layer.keys, layer.values) for layer in _output_cache(outputs).layers]

    def expand_shared_prompt(self, prompt_cache: list[tuple[torch.Tensor, torch.Tensor]], batch_size: int) -> Cache:
        """A fresh `DynamicCache` holding the shared prompt's keys/values for each of `batch_size` rows."""
        data = [(k.expand(batch_size, -1, -1, -1), v.expand(batch_size, -1, -1, -1)) for k, v in prompt_cache]
        return DynamicCache(ddp_cache_data=data, config=self.config.text_config)

    @staticmethod
    def _additive_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """A 4D mask as the backbone's eager and SDPA attention add it: 0 where allowed, the dtype's minimum where not
        (a boolean mask means True = attend)."""
        if attention_mask.dtype == torch.bool:
            blocked = torch.full((), torch.finfo(dtype).min, dtype=dtype, device=attention_mask.device)
            return torch.where(attention_mask, torch.zeros((), dtype=dtype, device=attention_mask.device), blocked)
        return attention_mask.to(dtype)

    @can_return_tuple
    @auto_docstring
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        item_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        shared_prompt_ids: torch.LongTensor | None = None,
        shared_prompt_cache: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
        past_key_values: Cache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPast:
        r"""
        cache (`Cache`, *optional*):
            Keys/values of tokens that precede `input_ids` (the backbone's cache). Named `cache` as in transformers
            >= 5.24; `past_key_values` is accepted as the older name.
        past_key_values (`Cache`, *optional*):
            The older name of `cache` (transformers < 5.24); pass one of the two.
        attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)` or `(batch_size, 1, sequence_length, key_length)`, *optional*):
            2D padding mask (1 = token), or a 4D mask over `(query, key)` pairs (boolean, True = attend, or additive
            float) for prefix-tree packed rows, where several samples share their common history (then
            `position_ids` are required). With `shared_prompt_ids`, the mask covers only `input_ids`: the shared
            prompt is visible to every token.
        item_ids (`torch.LongTensor` of shape `(num_placeholders,)`, *optional*):
            The history items of the batch flattened in order, one per `<item>` placeholder in row-major order of
            `input_ids` (as returned by [`MMESIDProcessor`]). Ids in `1..num_items`.
        shared_prompt_ids (`torch.LongTensor` of shape `(1, prompt_length)`, *optional*):
            Tokens that precede every row ([`MMESIDProcessor.shared_prompt_ids`], the rows then come from
            `processor(..., shared_prompt=True)`). They are run once for the batch and their keys/values are shared
            by all rows: the same outputs as prepending them to each row. `position_ids`, when given, count them.
        shared_prompt_cache (`list[tuple[torch.Tensor, torch.Tensor]]`, *optional*):
            The keys/values of `shared_prompt_ids` ([`~MMESIDModel.encode_shared_prompt`]) when computed once for
            many batches (inference); without it they are computed for this batch.
        """
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of `input_ids` or `inputs_embeds`.")
        past_key_values = _merge_cache_arguments(cache, past_key_values)
        inputs_embeds = self.embed_inputs(input_ids, inputs_embeds, item_ids)
        batch_size, seq_len = inputs_embeds.shape[:2]
        is_4d = attention_mask is not None and attention_mask.dim() == 4
        if is_4d and position_ids is None:
            raise ValueError("A 4D `attention_mask` (packed rows) needs explicit `position_ids`.")
        if is_4d:
            check_packed_rows(self.config, self.language_model.config._attn_implementation)
        if shared_prompt_ids is not None and past_key_values is not None:
            raise ValueError("Pass either `shared_prompt_ids` or `cache`, not both.")
        num_shared = shared_prompt_ids.shape[-1] if shared_prompt_ids is not None else 0

        max_positions = getattr(self.config.text_config, "max_position_embeddings", None)
        past_length = past_key_values.get_seq_length() if past_key_values is not None else 0
        total_length = past_length + num_shared + seq_len
        if position_ids is not None and position_ids.numel():
            # packed rows hold several prompts side by side: what must fit is the deepest position, not the row
            total_length = int(position_ids.max()) + 1
        if max_positions is not None and total_length > max_positions:
            raise ValueError(
                f"The prompt has {total_length} tokens, more than the backbone's context "
                f"(`text_config.max_position_embeddings`={max_positions}). Histories are not truncated; shorten them "
                "upstream or use a backbone with a longer context."
            )

        if position_ids is None and attention_mask is not None and past_key_values is None:
            position_ids = left_padded_position_ids(attention_mask, num_shared)
        elif position_ids is None and num_shared:
            position_ids = num_shared + torch.arange(seq_len, device=inputs_embeds.device)[None].expand(batch_size, -1)
        if is_4d:
            attention_mask = self._additive_mask(attention_mask, inputs_embeds.dtype)

        prepended = False
        if num_shared:
            device, dtype = inputs_embeds.device, inputs_embeds.dtype
            if attention_mask is not None and is_4d:
                visible = torch.zeros(batch_size, 1, seq_len, num_shared, dtype=dtype, device=device)
                attention_mask = torch.cat([visible, attention_mask.to(device)], dim=-1)
            elif attention_mask is not None:
                visible = torch.ones(batch_size, num_shared, dtype=attention_mask.dtype, device=device)
                attention_mask = torch.cat([visible, attention_mask.to(device)], dim=-1)
            one_row = self.inline_shared_prompt and batch_size == 1 and shared_prompt_cache is None
            if self.training and (one_row or self.language_model.is_activation_checkpointing):
                # Prepend the prompt to every row instead (same outputs): checkpointed layers drop caches, and a
                # training batch of one row (the packed recipes) then runs the prompt inside the row's matmuls
                # rather than as a separate pass of a few tokens through every layer, forward and backward: 1.2x
                # the training step of the causal recipe on 2 CPU cores (docs/SPEED.md, "The shared prompt inline").
                prepended = True
                prompt_embeds = self.embed_inputs(shared_prompt_ids.reshape(1, -1).to(device))
                inputs_embeds = torch.cat([prompt_embeds.to(dtype).expand(batch_size, -1, -1), inputs_embeds], 1)
                prompt_positions = torch.arange(num_shared, device=device)[None].expand(batch_size, -1)
                position_ids = torch.cat([prompt_positions, position_ids.to(device)], dim=1)
                if attention_mask is not None and is_4d:
                    # prompt rows: causal over the prompt, blind to the rows' own tokens
                    blocked = torch.finfo(dtype).min
                    causal = torch.full((num_shared, num_shared + seq_len), blocked, dtype=dtype, device=device)
                    causal[:, :num_shared] = torch.triu(causal[:, :num_shared], diagonal=1)
                    prompt_rows = causal[None, None].expand(batch_size, 1, -1, -1)
                    attention_mask = torch.cat([prompt_rows, attention_mask], dim=2)  # own rows: already (q, c + q)
            else:
                prompt_cache = shared_prompt_cache
                if prompt_cache is None:
                    prompt_cache = self.encode_shared_prompt(shared_prompt_ids.to(device))
                past_key_values = self.expand_shared_prompt(prompt_cache, batch_size)
        kwargs.setdefault("use_cache", past_key_values is not None)
        kwargs[_backbone_cache_kwarg(self.language_model)] = past_key_values
        outputs = self.language_model(
            attention_mask=attention_mask, position_ids=position_ids, inputs_embeds=inputs_embeds, **kwargs
        )
        last_hidden_state, hidden_states = outputs.last_hidden_state, outputs.hidden_states
        if prepended:
            last_hidden_state = last_hidden_state[:, num_shared:]
            if hidden_states is not None:
                hidden_states = tuple(h[:, num_shared:] for h in hidden_states)
        return BaseModelOutputWithPast(
            last_hidden_state=last_hidden_state,
            hidden_states=hidden_states,
            attentions=outputs.attentions,
            **{CACHE_NAME: _output_cache(outputs)},
        )


@auto_docstring(
    custom_intro="""
    MME-SID for sequential recommendation: [`MMESIDModel`] plus four score heads (a learned item table and one
    `<h, W_m x_j>` head per modality) fused per item by frequency-aware weights, and a cross-entropy loss over all
    items (paper §3.3). With `config.head="generative"` or `"both"` it also (or only) generates the target item's
    semantic ID after the prompt (a head tied to the SID rows, [`~MMESIDForSequentialRecommendation.generative_logits`]),
    decoded with `generate` under a prefix-trie constraint ([`SIDTrieLogitsProcessor`]) so that every beam is a
    catalog item.
    """
)
class MMESIDForSequentialRecommendation(MMESIDPreTrainedModel, GenerationMixin, MMESIDBuildMixin):
    def __init__(self, config: MMESIDConfig):
        super().__init__(config)
        self.model = MMESIDModel(config)
        # e: the learned item table, Linear(H -> num_items + 1), no bias (paper Eq. 8). Row 0 is never a target.
        self.item_head = nn.Linear(config.text_config.hidden_size, config.num_items + 1, bias=False)
        self.fusion_gate = MMESIDFusionGate(config)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.model.set_input_embeddings(value)

    def non_backbone_module_names(self) -> list[str]:
        """Names of MME-SID's own trainable modules (projections, item-token MLP, item table, fusion gate), in the
        form PEFT's `modules_to_save` accepts (`ModuleDict`s are expanded to their children)."""
        projections = [f"modality_projections.{m}" for m in self.config.modalities]
        return projections + ["item_fusion", "item_head", "fusion_gate"]

    # ------------------------------------------------------------------ scoring
    def get_fusion_weights(self) -> torch.Tensor:
        """`w(j) = softmax(g(f_j) / tau)`, `f_j` = min-max normalized `log(1 + count_j)` (paper Eq. 9); or equal
        weights `1 / (M + 1)` when `config.fusion="equal"`. Shape `(num_items + 1, num_modalities + 1)`."""
        config = self.config
        dtype = self.item_head.weight.dtype
        num_scores = config.num_modalities + 1
        if config.fusion == "equal":
            return torch.full(
                (config.num_items + 1, num_scores), 1.0 / num_scores, dtype=dtype, device=self.item_head.weight.device
            )
        log_counts = torch.log1p(self.model.item_counts.float())
        low, high = log_counts.min(), log_counts.max()
        frequencies = (log_counts - low) / (high - low).clamp_min(1e-12)
        gate = self.fusion_gate(frequencies.unsqueeze(-1).to(self.fusion_gate.linear_1.weight.dtype))
        return torch.softmax(gate.float() / config.fusion_temperature, dim=-1).to(dtype)

    def score_items(self, user_embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        r"""
        Score every item for each user (paper Eq. 8).

        Args:
            user_embeddings (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
                `h`, the last hidden state of the final prompt token.

        Returns:
            `(item_logits, modality_logits, fusion_weights)` with shapes `(batch_size, num_items + 1)`,
            `(batch_size, num_items + 1, num_modalities + 1)` and `(num_items + 1, num_modalities + 1)`; column 0 of
            `item_logits` is `-inf`.
        """
        # float32 whatever the backbone's dtype or an enclosing autocast: these are the scores that are ranked
        with torch.autocast(device_type=user_embeddings.device.type, enabled=False):
            h = user_embeddings.to(self.item_head.weight.dtype)
            scores = [self.item_head(h).float()]
            for modality in self.config.modalities:
                # <h, W_m x_j> = <h W_m, x_j>: project the user, not the catalog. The same scores (up to float
                # rounding) for O(B d_m (H + N)) instead of O(N d_m H), forward and backward (docs/METHOD.md).
                weight = self.model.modality_projections[modality].weight.float()  # (hidden, d_m)
                scores.append((h.float() @ weight) @ self.model.modality_embeddings(modality).float().T)
            modality_logits = torch.stack(scores, dim=-1)
            item_logits, fusion_weights = self.fuse_scores(modality_logits)
        return item_logits, modality_logits, fusion_weights

    def fuse_scores(self, modality_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 8's fusion of the unfused scores `(batch_size, num_items + 1, num_modalities + 1)` by each item's
        weights: `(item_logits (batch_size, num_items + 1), fusion_weights)`, float32, padding column `-inf`."""
        with torch.autocast(device_type=modality_logits.device.type, enabled=False):
            fusion_weights = self.get_fusion_weights()
            item_logits = (modality_logits * fusion_weights.float()).sum(-1)
        padding = torch.zeros_like(item_logits[:1])
        padding[:, self.config.pad_item_id] = float("-inf")
        return item_logits + padding, fusion_weights

    @torch.no_grad()
    def item_score_table(self) -> torch.Tensor:
        r"""
        The item side of Eq. 8 folded into one table: `T[j] = w_0(j) e_j + sum_m w_m(j) W_m x_m(j)`, so that
        `item_logits = h @ T.T` (the fusion weights depend only on the item). Shape `(num_items + 1, hidden_size)`.
        Equal to [`~MMESIDForSequentialRecommendation.score_items`] up to float rounding; computed once per
        catalog ([`MMESIDRecommender.prepare_ranking`]) instead of once per user.
        """
        with torch.autocast(device_type=self.item_head.weight.device.type, enabled=False):
            weights = self.get_fusion_weights().float()  # (num_items + 1, num_modalities + 1)
            table = weights[:, :1] * self.item_head.weight.float()
            for index, modality in enumerate(self.config.modalities, start=1):
                projection = self.model.modality_projections[modality]
                items = projection(self.model.modality_embeddings(modality).to(projection.weight.dtype))
                table = table + weights[:, index : index + 1] * items.float()
        return table  # float32: the scores it gives are ranked

    # ------------------------------------------------------------------ generative head
    def generative_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        r"""
        Next-token scores of the generative head: a head tied to the SID rows of the input embeddings,
        `logits[..., t] = <h, E_t>` for every SID token `t`, `-inf` for every other token.

        Why tied SID rows, not the backbone's LM head: MME-SID keeps the bare decoder (`from_backbone` drops the LM
        head), and the SID rows are the code embeddings initialized from the MM-RQ-VAE codebooks and trained with the
        rest (paper §3.2), so reading and writing an ID share one geometry and the head adds no parameters; for a
        backbone with tied embeddings (SmolLM2) it is the LM head restricted to the SID tokens. The softmax runs over
        all SID tokens; constrained decoding ([`SIDTrieLogitsProcessor`]) narrows it to the trie's children.

        Args:
            hidden_states (`torch.FloatTensor` of shape `(..., hidden_size)`).

        Returns:
            `torch.FloatTensor` of shape `(..., vocab_size)`, float32.
        """
        config = self.config
        device = hidden_states.device
        sid_ids = torch.arange(config.num_sid_tokens, device=device) + config.sid_token_offset
        # Through the embedding module, so a PEFT wrapper of the embeddings (trainable SID tokens) applies.
        rows = self.model.token_embeddings(sid_ids)  # (num_sid_tokens, hidden_size)
        with torch.autocast(device_type=device.type, enabled=False):
            sid_logits = hidden_states.float() @ rows.float().T
        embeddings = self.get_input_embeddings()
        vocab_size = getattr(embeddings, "original_module", embeddings).weight.shape[0]  # PEFT's wrapper: its base
        logits = sid_logits.new_full((*sid_logits.shape[:-1], vocab_size), float("-inf"))
        logits[..., config.sid_token_offset : config.sid_token_offset + config.num_sid_tokens] = sid_logits
        return logits

    @can_return_tuple
    @auto_docstring
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        item_ids: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        shared_prompt_ids: torch.LongTensor | None = None,
        readout_positions: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        compute_item_logits: bool | None = None,
        generative_labels: torch.LongTensor | None = None,
        num_items_in_batch: torch.Tensor | int | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MMESIDOutput:
        r"""
        cache (`Cache`, *optional*):
            Keys/values of tokens that precede `input_ids` (see [`MMESIDModel.forward`]).
        past_key_values (`Cache`, *optional*):
            The older name of `cache` (transformers < 5.24); pass one of the two.
        attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)` or `(batch_size, 1, sequence_length, key_length)`, *optional*):
            2D padding mask, or a 4D mask for prefix-tree packed rows (see [`MMESIDModel.forward`]; then
            `position_ids` and `readout_positions` are required).
        item_ids (`torch.LongTensor` of shape `(num_placeholders,)`, *optional*):
            The history items of the batch flattened in order, one per `<item>` placeholder in row-major order of
            `input_ids` (as returned by [`MMESIDProcessor`]). Ids in `1..num_items`.
        labels (`torch.LongTensor` of shape `(batch_size,)` or `(num_samples,)`, *optional*):
            Id of each user's next item, in `1..num_items` (`-100` = ignored). When given, the cross-entropy over
            all items is returned as `loss` (mean over the samples). With `readout_positions`, one per readout.
        shared_prompt_ids (`torch.LongTensor` of shape `(1, prompt_length)`, *optional*):
            The prompt every row starts with, computed once per batch (see [`MMESIDModel.forward`]).
        readout_positions (`torch.LongTensor` of shape `(num_samples, 2)`, *optional*):
            `(row, column)` of each sample's final prompt token in a packed batch: one user representation per
            sample instead of one per row (prefix-tree packing puts all samples of a user in one row).
        compute_item_logits (`bool`, *optional*):
            Score every item with the ranking heads. Defaults to `True` unless `config.head="generative"`;
            `generate` sets it to `False` (a decoding step never needs the catalog-wide scores).
        generative_labels (`torch.LongTensor` of shape `(batch_size, generative_id_length)`, *optional*):
            Token ids of each target's generated ID (`-100` = ignored), whose tokens but the last end `input_ids`
            (the response, teacher-forced: [`MMESIDProcessor.add_response`]). With a generative head
            (`config.head`), their cross-entropy is `generative_loss`; the user state is read before the response.
        num_items_in_batch (`torch.Tensor` or `int`, *optional*):
            Labelled samples of the whole optimizer step (what `Trainer` counts over its accumulated micro-batches).
            When given, `loss` is this micro-batch's per-sample losses summed over that count, so accumulating `n`
            micro-batches gives the gradient of the mean over all their samples; otherwise the mean over this batch.
        """
        config = self.config
        generative = config.head != "ranking"
        if compute_item_logits is None:
            compute_item_logits = config.head != "generative"
        teacher_forced = generative and generative_labels is not None
        num_prompt = None
        if labels is not None:
            labels = labels.to(self.model.sids.device)
            num_items = config.num_items
            torch_compilable_check(
                ((labels == -100) | ((labels >= 1) & (labels <= num_items))).all(),
                lambda: f"`labels` must be item ids in 1..{num_items} or -100, got {labels.tolist()}.",
            )
        if generative and labels is not None and generative_labels is None:
            raise ValueError(
                f"The generative head (`config.head={config.head!r}`) trains on `generative_labels`, the targets' ID "
                "tokens appended to the prompts: build the batch with `MMESIDCollator(processor, response_ids=...)` "
                "or `processor.add_response`."
            )
        if teacher_forced:
            if readout_positions is not None or (attention_mask is not None and attention_mask.dim() == 4):
                check_packed_rows(config, self.model.language_model.config._attn_implementation)
            source = input_ids if input_ids is not None else inputs_embeds
            num_prompt = source.shape[1] - (generative_labels.shape[1] - 1)  # the response's tokens end each row
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            item_ids=item_ids,
            position_ids=position_ids,
            cache=_merge_cache_arguments(cache, past_key_values),
            shared_prompt_ids=shared_prompt_ids,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        prompt_states = hidden_states[:, :num_prompt] if teacher_forced else hidden_states
        prompt_mask = attention_mask[:, :num_prompt] if teacher_forced and attention_mask is not None else attention_mask

        item_logits = modality_logits = fusion_weights = user_embeddings = None
        if compute_item_logits:
            if readout_positions is not None:
                readout_positions = readout_positions.to(hidden_states.device)
                user_embeddings = hidden_states[readout_positions[:, 0], readout_positions[:, 1]]
            elif prompt_mask is not None and prompt_mask.dim() == 4:
                raise ValueError("A 4D `attention_mask` (packed rows) needs `readout_positions` (one per sample).")
            elif prompt_mask is None:
                last = torch.full((prompt_states.shape[0],), prompt_states.shape[1] - 1, device=hidden_states.device)
            else:
                # Index of each row's last real token; with left padding (the processor's) this is the last position.
                last = prompt_states.shape[1] - 1 - prompt_mask.flip(-1).long().argmax(-1).to(hidden_states.device)
            if readout_positions is None:
                user_embeddings = prompt_states[torch.arange(prompt_states.shape[0], device=hidden_states.device), last]
            item_logits, modality_logits, fusion_weights = self.score_items(user_embeddings)

        logits = generative_loss = None
        if teacher_forced:
            logits = self.generative_logits(hidden_states[:, num_prompt - 1 :])  # (batch, id_length, vocab)
            targets = generative_labels.to(logits.device)
            generative_loss = nn.functional.cross_entropy(
                logits.flatten(0, 1), targets.flatten(), ignore_index=-100
            )
        elif generative:
            logits = self.generative_logits(hidden_states[:, -1:])  # (batch, 1, vocab)

        loss = None
        if labels is not None:
            loss = self.training_loss(item_logits, generative_loss, labels, num_items_in_batch)
        return MMESIDOutput(
            loss=loss,
            item_logits=item_logits,
            modality_logits=modality_logits,
            fusion_weights=fusion_weights,
            user_embeddings=user_embeddings,
            last_hidden_state=hidden_states,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            logits=logits,
            generative_loss=generative_loss,
            **{CACHE_NAME: _output_cache(outputs)},
        )

    def training_loss(
        self,
        item_logits: torch.Tensor | None,
        generative_loss: torch.Tensor | None,
        labels: torch.LongTensor,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | None:
        """The training loss: the item cross-entropy (paper Eq. 10), plus `config.generative_loss_weight` times the
        generative loss with `head="both"` (the generative loss alone with `head="generative"`). The mean over the
        labelled samples, or, given `num_items_in_batch`, their sum over that count."""
        config = self.config
        loss = per_sample = None
        if item_logits is not None:
            labels = labels.to(item_logits.device)
            reduction = "mean" if num_items_in_batch is None else "none"
            per_sample = nn.functional.cross_entropy(
                item_logits.float(), labels, ignore_index=-100, reduction=reduction
            )
            loss = per_sample
        if num_items_in_batch is None:
            if generative_loss is not None:
                if config.head == "generative" or loss is None:
                    return generative_loss
                loss = loss + config.generative_loss_weight * generative_loss
            return loss
        # per-sample losses of this micro-batch, summed, over the samples of the whole optimizer step
        total = torch.zeros((), device=labels.device)
        if per_sample is not None:
            total = total + per_sample.sum()
        if generative_loss is not None:
            # per-sample mean over the ID's positions, averaged over the labelled samples: times their count
            weight = 1.0 if config.head == "generative" else config.generative_loss_weight
            total = total + weight * generative_loss * (labels != -100).sum()
        return total / torch.as_tensor(num_items_in_batch, device=total.device).clamp(min=1)

    def prepare_inputs_for_generation(
        self, input_ids, next_sequence_length=None, attention_mask=None, inputs_embeds=None, **kwargs
    ):
        """`GenerationMixin`'s inputs plus position ids counted from the first real token (left padding, as in
        training) and no catalog-wide scoring during decoding."""
        model_inputs = super().prepare_inputs_for_generation(
            input_ids,
            next_sequence_length=next_sequence_length,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            **kwargs,
        )
        current = model_inputs.get("inputs_embeds")
        if current is None:
            current = model_inputs["input_ids"]
        if attention_mask is not None and attention_mask.dim() == 2 and model_inputs.get("position_ids") is None:
            model_inputs["position_ids"] = left_padded_position_ids(attention_mask)[:, -current.shape[1] :]
        model_inputs["compute_item_logits"] = False
        return model_inputs



__all__ = [
    "MMESIDForSequentialRecommendation",
    "MMESIDModel",
    "MMESIDOutput",
    "MMESIDPreTrainedModel",
    "check_packed_rows",
]
