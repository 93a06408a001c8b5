# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""MME-SID model configuration (Wang et al., CIKM 2025, arXiv 2509.02017).

This file is one of the three Hub-side files: it imports only `transformers` (and `huggingface_hub`, which
`transformers` depends on), so that `save_pretrained` can copy it next to the weights (`auto_map`).
"""

from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec
from transformers.utils import auto_docstring, logging


KNOWN_MODALITIES = ("collaborative", "image", "text")

# Prompt fields that configs saved before the prompt moved to the processor carry (`processor_config.json` holds them
# too, and the processor is their only reader); `__post_init__` drops them with a warning.
MOVED_TO_PROCESSOR = ("system_prompt", "instruction")

logger = logging.get_logger(__name__)


def sid_token_id(sid_token_offset, num_levels: int, codebook_size: int, modality, level, code):
    """Token id of SID token `<sid_{modalities[modality]}_{level}_{code}>` (all 0-based): the one formula of the SID
    token layout, contiguous and ordered by modality, level, code. Works on ints and on broadcasting tensors."""
    return sid_token_offset + (modality * num_levels + level) * codebook_size + code


@auto_docstring(
    checkpoint="org/mmesid-beauty",
    custom_intro="""
    Configuration of [`MMESIDForSequentialRecommendation`]: a causal-LM backbone (nested as `text_config`, as LLaVA
    nests its language model) that reads one fused *item token* per history item and scores every catalog item
    (paper §3, "Stage 2"). Sizes of the per-item tables live here; the tables themselves are buffers in
    `model.safetensors`.
    """,
)
@strict
class MMESIDConfig(PreTrainedConfig):
    r"""
    text_config (`dict` or `PreTrainedConfig`, *optional*):
        Config of the backbone decoder (any causal LM known to `AutoConfig`: Llama, Qwen2, SmolLM2, ...). Its
        `vocab_size` must already include the tokens added by [`MMESIDProcessor`]. Defaults to a `LlamaConfig`
        (paper: Llama-3-8B-Instruct).
    num_items (`int`):
        Largest item id. Item ids are 1-based; row 0 of every per-item table is padding, so tables have
        `num_items + 1` rows (docs/CONTRACTS.md). Beauty_new: 12,086.
    modalities (`list[str]`, *optional*, defaults to `["collaborative", "image", "text"]`):
        Modalities fused into the item token, a subset of `collaborative`, `image`, `text`. The order is the order
        of the concatenation in the item-token MLP and of the modality score heads. Defaults to the paper's order
        `concat[W_c c, sid_cf, W_v v, sid_img, W_t t, sid_txt]` (paper Eq. 6).
    modality_dims (`list[int]`, *optional*, defaults to `[64, 1280, 1280]`):
        Raw embedding size of each modality, aligned with `modalities`. Paper: SASRec 64-d collaborative
        embeddings, LLM2CLIP 1280-d image and text embeddings.
    num_levels (`int`, *optional*, defaults to 4):
        Residual-quantization levels per modality, i.e. codes per semantic ID (paper §4.1; official
        MM-RQ-VAE run script: 4 levels).
    codebook_size (`int`, *optional*, defaults to 256):
        Codes per level (official MM-RQ-VAE run script: 256).
    codebook_dim (`int`, *optional*):
        Size of the MM-RQ-VAE code vectors (`e_dim`). Defaults to the backbone's hidden size, as in the official run
        (`e_dim = 4096`, code vectors live directly in the LLM space).
    sid_projection (`str`, *optional*, defaults to `"orthogonal"`):
        How [`~MMESIDModel.init_sid_embeddings`] maps codebooks whose `codebook_dim` differs
        from the hidden size: `"orthogonal"` uses a fixed, seeded (semi-)orthogonal matrix, an isometry when
        `codebook_dim <= hidden_size` and a norm-preserving Johnson-Lindenstrauss projection otherwise, so the
        distance structure of the codebook (the point of codebook initialization, paper §3.2) is kept. `"none"`
        requires `codebook_dim == hidden_size`.
    sid_init (`str`, *optional*, defaults to `"codebook"`):
        `"codebook"`: SID token embeddings are initialized from the trained MM-RQ-VAE codebooks (MME-SID).
        `"random"`: they keep the backbone's random init of new rows (TIGER-style ablation, paper Table 5).
    item_token_sids (`bool`, *optional*, defaults to `True`):
        Whether each history item's input token includes its SID code embeddings (paper Eq. 6: the MLP reads
        `[W_m x_m(i), sid_m(i)]` per modality). `False` is the "without SIDs" ablation: the MLP reads the projected
        raw embeddings `[W_m x_m(i)]` only (a generative head still generates the SID tokens).
    fusion (`str`, *optional*, defaults to `"frequency"`):
        `"frequency"`: frequency-aware fusion of the item-table score and the modality scores,
        `w(j) = softmax(g(f_j) / tau)` (paper Eq. 9). `"equal"`: every score gets weight `1 / (M + 1)` (ablation).
    fusion_temperature (`float`, *optional*, defaults to 1e-3):
        `tau` of the fusion softmax (official code: `tau = 1e-3`).
    fusion_hidden_size (`int`, *optional*, defaults to 64):
        Width of the fusion gate `g = Linear(1, 64) -> GELU -> Linear(64, 10) -> Linear(10, 64, bias=False) -> GELU
        -> Linear(64, M + 1)` (official code).
    fusion_bottleneck_size (`int`, *optional*, defaults to 10):
        Bottleneck of the fusion gate (official code: 10).
    fusion_gate_init (`str`, *optional*, defaults to `"normal"`):
        Initialization of the fusion gate's linear layers. `"normal"`: the library default (normal with the
        backbone's `initializer_range`, zero bias): the gate's outputs start near 1e-5, so the fusion weights start
        uniform even with `tau = 1e-3`. `"torch"`: PyTorch's `nn.Linear` default (Kaiming-uniform), what the
        official code gets: outputs of order 0.1 divided by `tau`, so every item starts near one-hot on one score.
        Measured in docs/LEARNING.md.
    item_head_init (`str`, *optional*, defaults to `"normal"`):
        Initialization of the learned item table `e` (paper Eq. 8) when the model is built with
        [`~MMESIDForSequentialRecommendation.from_backbone`]. `"normal"`: the library default (the paper and the
        official code give no other), rows of norm about `0.02 sqrt(H)` that score the items at random until each
        item has been a target. `"zero"`: zero rows, so an item never seen as a target adds nothing to its score.
        `"collaborative"`: `e_j = W_c c_j`, a copy of the projected collaborative embedding at build time.
        `"item_tokens"`: `e_j` = item `j`'s fused input token (Eq. 6) at build time. Measured in docs/LEARNING.md.
    item_token_id (`int`, *optional*):
        Id of the `<item>` placeholder in the text tokenizer; set by [`MMESIDProcessor`].
    sid_token_offset (`int`, *optional*):
        Id of the first SID token `<sid_{modalities[0]}_0_0>`. SID tokens are contiguous, ordered by modality, level,
        code: `id = sid_token_offset + (m * num_levels + l) * codebook_size + c`.
    pad_item_id (`int`, *optional*, defaults to 0):
        Padding item; never a placeholder input nor a target, and its logit is `-inf`.
    head (`str`, *optional*, defaults to `"ranking"`):
        Which head trains and predicts. `"ranking"`: the paper's full softmax over the catalog (paper Eq. 8).
        `"generative"`: generative retrieval over semantic IDs: the target item's ID tokens are the response after
        the prompt, trained with a cross-entropy over the SID tokens and decoded by constrained beam search over a
        prefix trie of the catalog's IDs (`model.generate`, `recommend(..., method="generate")`); no per-item
        scoring. `"both"`: the two losses summed (`loss = ranking + generative_loss_weight * generative`) in one
        forward pass; both `recommend` methods work. Defaults to `"ranking"` (the paper).
    generative_loss_weight (`float`, *optional*, defaults to 1.0):
        Weight of the generative loss when `head="both"`.
    generative_id (`str`, *optional*, defaults to `"collaborative"`):
        The ID the generative head generates, always followed by one *collision suffix* token (the item's rank, by
        item id, among the items sharing the same codes), so that every item has exactly one ID and every ID one
        item. `"collaborative"`: the collaborative modality's `num_levels` codes (the shortest ID: `num_levels + 1`
        decoding steps; the collaborative codes carry the co-purchase signal). `"combined"`: every modality's codes
        in `modalities` order (`num_modalities * num_levels + 1` steps, fewer collisions). The suffix is written with
        the tokens of level 0 of the first generated modality (it is only ever predicted, never read as an input).
    layout (`str`, *optional*, defaults to `"chat"`):
        How the processor lays a history out as a prompt, and so where the user state is read (set by
        [`MMESIDProcessor`], whose `layout` must match). `"chat"`: the paper's prompt (§3.3), the history's item
        tokens inside the chat template's user turn, read out at the end of the assistant header; prefix-tree
        packing trains every sample of a user in one row, each sample with its own copy of the tokens after the
        history. `"causal"`: the instruction, then the item tokens, read out at the last one; every target of a user
        is read from one ordinary causal pass over the user's sequence, as SASRec trains (docs/LAYOUT.md).

    Example:

    ```python
    >>> from transformers import LlamaConfig
    >>> from modeling_mmesid import MMESIDConfig, MMESIDForSequentialRecommendation

    >>> config = MMESIDConfig(
    ...     text_config=LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=200),
    ...     num_items=100, modalities=["collaborative", "text"], modality_dims=[64, 1280],
    ...     num_levels=2, codebook_size=8, item_token_id=100, sid_token_offset=101,
    ... )
    >>> model = MMESIDForSequentialRecommendation(config)
    ```"""

    model_type = "mmesid"
    sub_configs_defaults = {"text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama")}  # noqa: RUF012

    text_config: dict | PreTrainedConfig | None = None
    num_items: int = 1
    modalities: list[str] | None = None
    modality_dims: list[int] | None = None
    num_levels: int = 4
    codebook_size: int = 256
    codebook_dim: int | None = None
    sid_projection: Literal["orthogonal", "none"] = "orthogonal"
    sid_init: Literal["codebook", "random"] = "codebook"
    item_token_sids: bool = True
    fusion: Literal["frequency", "equal"] = "frequency"
    fusion_temperature: float = 1e-3
    fusion_hidden_size: int = 64
    fusion_bottleneck_size: int = 10
    fusion_gate_init: Literal["normal", "torch"] = "normal"
    item_head_init: Literal["normal", "zero", "collaborative", "item_tokens"] = "normal"
    item_token_id: int | None = None
    sid_token_offset: int | None = None
    pad_item_id: int = 0
    tie_word_embeddings: bool = False
    head: Literal["ranking", "generative", "both"] = "ranking"
    generative_loss_weight: float = 1.0
    generative_id: Literal["collaborative", "combined"] = "collaborative"
    layout: Literal["chat", "causal"] = "chat"

    def __post_init__(self, **kwargs):
        moved = {name: kwargs.pop(name) for name in MOVED_TO_PROCESSOR if name in kwargs}
        if moved:
            logger.warning_once(
                f"`MMESIDConfig` no longer holds the prompt; ignoring {sorted(moved)} (a config saved by an older "
                "mmesid). The prompt is the processor's (`MMESIDProcessor(system_prompt=..., instruction=...)`, saved "
                "in `processor_config.json`), which the same folder holds."
            )
        if self.modalities is None:
            self.modalities = list(KNOWN_MODALITIES)
        if self.modality_dims is None:
            paper_dims = {"collaborative": 64, "image": 1280, "text": 1280}
            self.modality_dims = [paper_dims.get(m, 0) for m in self.modalities]
        super().__post_init__(**kwargs)
        if self.codebook_dim is None:
            self.codebook_dim = self.text_config.hidden_size
        # Checked here as well as in `validate_architecture`: `@strict` wraps class-validator errors in
        # `StrictDataclassClassValidationError`, and users building a config should get a plain `ValueError`.
        self._check_fields()

    @property
    def num_modalities(self) -> int:
        return len(self.modalities)

    @property
    def num_sid_tokens(self) -> int:
        """Number of added SID tokens: one per (modality, level, code)."""
        return len(self.modalities) * self.num_levels * self.codebook_size

    @property
    def generative_modalities(self) -> list[str]:
        """Modalities whose codes make the generated ID (`generative_id`), in order."""
        return ["collaborative"] if self.generative_id == "collaborative" else list(self.modalities)

    @property
    def generative_id_length(self) -> int:
        """Tokens of a generated ID: the codes of `generative_modalities` plus the collision suffix."""
        return len(self.generative_modalities) * self.num_levels + 1

    def validate_architecture(self):
        """Part of `@strict`-powered validation: cross-field checks (re-run by `config.validate()`)."""
        super().validate_architecture()
        self._check_fields()

    def _check_fields(self):
        if self.num_items < 1:
            raise ValueError(f"`num_items` must be at least 1, got {self.num_items}.")
        if len(self.modalities) == 0:
            raise ValueError(f"`modalities` must name at least one of {list(KNOWN_MODALITIES)}, got [].")
        unknown = [m for m in self.modalities if m not in KNOWN_MODALITIES]
        if unknown:
            raise ValueError(
                f"`modalities` has unknown entries {unknown}; expected a subset of {list(KNOWN_MODALITIES)}."
            )
        if len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"`modalities` has duplicates: {self.modalities}.")
        if len(self.modality_dims) != len(self.modalities):
            raise ValueError(
                f"`modality_dims` must give one size per modality: `modalities`={self.modalities} but "
                f"`modality_dims`={self.modality_dims}."
            )
        if any(d < 1 for d in self.modality_dims):
            raise ValueError(f"`modality_dims` must be positive, got {self.modality_dims} for {self.modalities}.")
        if self.num_levels < 1:
            raise ValueError(f"`num_levels` must be at least 1, got {self.num_levels}.")
        if self.codebook_size < 2:
            raise ValueError(f"`codebook_size` must be at least 2, got {self.codebook_size}.")
        if self.fusion_temperature <= 0:
            raise ValueError(f"`fusion_temperature` must be positive, got {self.fusion_temperature}.")
        if self.item_head_init == "collaborative" and "collaborative" not in self.modalities:
            raise ValueError(
                f"`item_head_init='collaborative'` copies the projected collaborative embeddings, but `modalities` is "
                f"{self.modalities}; add `collaborative` or choose another `item_head_init`."
            )
        if self.pad_item_id != 0:
            raise ValueError(
                f"`pad_item_id` must be 0 (row 0 of every per-item table is padding), got {self.pad_item_id}."
            )
        if self.generative_loss_weight <= 0:
            raise ValueError(f"`generative_loss_weight` must be positive, got {self.generative_loss_weight}.")
        if self.head != "ranking" and self.generative_id == "collaborative" and "collaborative" not in self.modalities:
            raise ValueError(
                f"`generative_id='collaborative'` needs the collaborative modality, but `modalities`={self.modalities}; "
                "set `generative_id='combined'` or add it."
            )
        hidden_size = self.text_config.hidden_size
        if self.sid_projection == "none" and self.codebook_dim != hidden_size:
            raise ValueError(
                f"`codebook_dim` ({self.codebook_dim}) must equal `text_config.hidden_size` ({hidden_size}) when "
                "`sid_projection='none'`; set `sid_projection='orthogonal'` or train MM-RQ-VAE with "
                f"`e_dim={hidden_size}`."
            )
        vocab_size = self.text_config.vocab_size
        if self.item_token_id is not None and not 0 <= self.item_token_id < vocab_size:
            raise ValueError(
                f"`item_token_id` ({self.item_token_id}) must be inside the backbone vocabulary "
                f"(`text_config.vocab_size`={vocab_size}); resize the token embeddings after adding the processor's tokens."
            )
        if self.sid_token_offset is not None:
            last = self.sid_token_offset + self.num_sid_tokens - 1
            if self.sid_token_offset < 0 or last >= vocab_size:
                raise ValueError(
                    f"SID token ids {self.sid_token_offset}..{last} (`sid_token_offset`={self.sid_token_offset}, "
                    f"{self.num_sid_tokens} tokens) must be inside the backbone vocabulary "
                    f"(`text_config.vocab_size`={vocab_size})."
                )
            if self.item_token_id is not None and self.sid_token_offset <= self.item_token_id <= last:
                raise ValueError(
                    f"`item_token_id` ({self.item_token_id}) falls inside the SID token range "
                    f"{self.sid_token_offset}..{last}."
                )


__all__ = ["MMESIDConfig", "sid_token_id"]
