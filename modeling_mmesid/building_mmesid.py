# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Building MME-SID from the item tokenizer's outputs (Stage 1): the backbone, the per-item tables (raw modality
embeddings, semantic IDs, training counts), the SID rows of the input embeddings initialized from the MM-RQ-VAE
codebooks (paper §3.2) and the learned item table's initialization.

These run once, where the model is built (`MMESIDForSequentialRecommendation.from_backbone`); afterwards the tables
are buffers and weights of the checkpoint. `MMESIDModel` takes `MMESIDItemTablesMixin` (the tables are its buffers),
`MMESIDForSequentialRecommendation` takes `MMESIDBuildMixin`.

Hub-side file: imports only `torch`, `transformers` and its sibling files.
"""

import math

import torch
from torch import nn
from transformers import AutoModel, PreTrainedConfig, PreTrainedModel

from .configuration_mmesid import MMESIDConfig, sid_token_id
from .recommender_mmesid import CUSTOM_PIPELINES


def buffer_name(modality: str) -> str:
    """The name of `modality`'s raw-embedding buffer in [`MMESIDModel`]."""
    return f"{modality}_embeddings"


class MMESIDItemTablesMixin:
    """Writers of [`MMESIDModel`]'s per-item tables and of the SID rows of its input embeddings."""

    @torch.no_grad()
    def set_item_tables(
        self,
        modality_embeddings: dict[str, torch.Tensor],
        sids: torch.Tensor,
        item_counts: torch.Tensor | None = None,
    ) -> None:
        r"""
        Write the per-item tables (persistent buffers).

        Args:
            modality_embeddings (`dict[str, torch.Tensor]`):
                For each of `config.modalities`, `(num_items + 1, modality_dim)` raw embeddings; row 0 is padding.
            sids (`torch.LongTensor` of shape `(num_items + 1, num_modalities, num_levels)`):
                Semantic IDs, modalities in `config.modalities` order (`sids/sids.safetensors`).
            item_counts (`torch.LongTensor` of shape `(num_items + 1,)`, *optional*):
                Training-interaction count per item (frequency-aware fusion). Defaults to zeros.
        """
        config = self.config
        rows = config.num_items + 1
        if sorted(modality_embeddings) != sorted(config.modalities):
            raise ValueError(
                f"`modality_embeddings` has modalities {sorted(modality_embeddings)}, expected {config.modalities}."
            )
        for modality, dim in zip(config.modalities, config.modality_dims):
            table = modality_embeddings[modality]
            if tuple(table.shape) != (rows, dim):
                raise ValueError(
                    f"`modality_embeddings[{modality!r}]` has shape {tuple(table.shape)}, expected ({rows}, {dim}) "
                    "(`num_items + 1` rows, row 0 = padding)."
                )
            if not torch.isfinite(table).all():
                raise ValueError(f"`modality_embeddings[{modality!r}]` contains NaN or Inf.")
            buffer = self.modality_embeddings(modality)
            buffer.copy_(table.to(buffer.device, buffer.dtype))
        expected = (rows, config.num_modalities, config.num_levels)
        if tuple(sids.shape) != expected:
            raise ValueError(
                f"`sids` has shape {tuple(sids.shape)}, expected {expected} (items + 1, modalities, levels)."
            )
        if sids.min() < 0 or sids.max() >= config.codebook_size:
            raise ValueError(
                f"`sids` must be codes in 0..{config.codebook_size - 1}, got values in {int(sids.min())}..{int(sids.max())}."
            )
        self.sids.copy_(sids.to(self.sids.device, torch.long))
        if item_counts is None:
            self.item_counts.zero_()
        else:
            if tuple(item_counts.shape) != (rows,):
                raise ValueError(f"`item_counts` has shape {tuple(item_counts.shape)}, expected ({rows},).")
            if item_counts.min() < 0:
                raise ValueError("`item_counts` must be non-negative.")
            self.item_counts.copy_(item_counts.to(self.item_counts.device, torch.long))

    @torch.no_grad()
    def init_sid_embeddings(self, codebooks: dict[str, torch.Tensor], seed: int = 0) -> None:
        r"""
        Write the trained MM-RQ-VAE codebooks into the backbone's input-embedding rows of the SID tokens (paper §3.2:
        code embeddings initialized from the codebooks, then trained). Call after construction (`post_init`).

        When `codebook_dim != hidden_size`, the codebooks go through a fixed (semi-)orthogonal matrix drawn from
        `seed` (`config.sid_projection="orthogonal"`): for `D <= H` its rows are orthonormal, an exact isometry that
        keeps every distance and inner product of the codebook; for `D > H` its columns are orthonormal and the
        result is scaled by `sqrt(D / H)`, a Johnson-Lindenstrauss projection that keeps norms in expectation and
        distances approximately. The rows are data saved with the model, so the matrix is not needed afterwards.

        Args:
            codebooks (`dict[str, torch.Tensor]`):
                For each of `config.modalities`, `(num_levels, codebook_size, codebook_dim)` code vectors
                (`sids/codebooks.safetensors`, key `codebooks.<modality>`).
            seed (`int`, *optional*, defaults to 0):
                Seed of the projection when `codebook_dim != hidden_size`.
        """
        config = self.config
        if config.sid_init != "codebook":
            raise ValueError(
                f"`init_sid_embeddings` writes codebooks, but `config.sid_init={config.sid_init!r}` asks to keep the "
                "random init of the SID rows; set `sid_init='codebook'` or do not call it."
            )
        if config.sid_token_offset is None:
            raise ValueError("`config.sid_token_offset` is not set; build the config from `MMESIDProcessor`.")
        if sorted(codebooks) != sorted(config.modalities):
            raise ValueError(f"`codebooks` has modalities {sorted(codebooks)}, expected {config.modalities}.")
        hidden_size = config.text_config.hidden_size
        expected = (config.num_levels, config.codebook_size, config.codebook_dim)
        weight = self.get_input_embeddings().weight
        projection = self._sid_projection(config.codebook_dim, hidden_size, seed)
        block = config.num_levels * config.codebook_size
        for index, modality in enumerate(config.modalities):
            codebook = codebooks[modality]
            if tuple(codebook.shape) != expected:
                raise ValueError(
                    f"`codebooks[{modality!r}]` has shape {tuple(codebook.shape)}, expected {expected} "
                    "(num_levels, codebook_size, codebook_dim)."
                )
            rows = codebook.reshape(block, -1).float()
            if projection is not None:
                rows = rows @ projection
            start = sid_token_id(config.sid_token_offset, config.num_levels, config.codebook_size, index, 0, 0)
            weight[start : start + block] = rows.to(weight.device, weight.dtype)

    def sid_embedding_rows(self) -> torch.Tensor:
        """SID rows of the input embeddings, `(num_modalities, num_levels, codebook_size, hidden_size)`."""
        config = self.config
        weight = self.get_input_embeddings().weight
        n = config.num_sid_tokens
        return weight[config.sid_token_offset : config.sid_token_offset + n].reshape(
            config.num_modalities, config.num_levels, config.codebook_size, -1
        )

    @staticmethod
    def _sid_projection(codebook_dim: int, hidden_size: int, seed: int) -> torch.Tensor | None:
        if codebook_dim == hidden_size:
            return None
        generator = torch.Generator().manual_seed(seed)
        gaussian = torch.randn(max(codebook_dim, hidden_size), min(codebook_dim, hidden_size), generator=generator)
        q, r = torch.linalg.qr(gaussian)  # orthonormal columns
        q = q * torch.sign(torch.diagonal(r))  # unique (Haar) orthogonal factor
        if codebook_dim < hidden_size:
            return q.T.contiguous()  # (D, H), orthonormal rows: isometry
        return q * math.sqrt(codebook_dim / hidden_size)  # (D, H), JL scaling


class MMESIDBuildMixin:
    """[`MMESIDForSequentialRecommendation.from_backbone`] and the item table's initialization."""

    @torch.no_grad()
    def init_item_head(self, batch_size: int = 4096) -> None:
        r"""
        Initialize the learned item table `e` (`item_head`, paper Eq. 8) as `config.item_head_init` says: `"normal"`
        keeps the library init, `"zero"` zeroes it, `"collaborative"` copies `W_c c_j` and `"item_tokens"` copies
        each item's fused input token (Eq. 6), both with the current weights. Called by
        [`~MMESIDForSequentialRecommendation.from_backbone`] after the item tables and the SID rows are written.
        Row 0 (padding) is zero in every case but `"normal"`; its logit is `-inf` anyway.
        """
        mode = self.config.item_head_init
        weight = self.item_head.weight
        if mode == "normal":
            return
        if mode == "zero":
            weight.zero_()
            return
        rows = torch.zeros_like(weight)
        if mode == "collaborative":
            projection = self.model.modality_projections["collaborative"]
            rows[1:] = projection(self.model.modality_embeddings("collaborative")[1:].to(projection.weight.dtype))
        elif mode == "item_tokens":
            rows = self.model.catalog_item_features(rows.dtype, chunk_size=batch_size).to(rows.device)
        else:
            raise ValueError(f"Unknown `config.item_head_init` {mode!r}.")
        weight.copy_(rows)

    @classmethod
    def from_backbone(
        cls,
        backbone: "str | PreTrainedConfig | PreTrainedModel",
        processor,
        modality_embeddings: dict[str, torch.Tensor],
        sids: torch.Tensor,
        codebooks: dict[str, torch.Tensor] | None = None,
        item_counts: torch.Tensor | None = None,
        backbone_kwargs: dict | None = None,
        codebook_seed: int = 0,
        **config_kwargs,
    ) -> PreTrainedModel:
        r"""
        Build MME-SID around a causal-LM backbone (Stage 2 set-up).

        Args:
            backbone (`str`, `PreTrainedConfig` or `PreTrainedModel`):
                A path/repo id loaded with `AutoModel.from_pretrained(backbone, **backbone_kwargs)` (bare decoder, e.g.
                `gguf_file=...`, `dtype=...`, a 4-bit `quantization_config`), a config (random weights, for tests),
                or an already loaded model (a `*ForCausalLM` contributes its bare decoder).
            processor ([`MMESIDProcessor`]):
                Built on the backbone's tokenizer; it has added the `<item>` and SID tokens. The backbone's
                embeddings are resized to `len(processor.tokenizer)`.
            modality_embeddings (`dict[str, torch.Tensor]`):
                Raw `(num_items + 1, dim)` embeddings per modality; their keys (in `processor.modalities` order) are
                the model's modalities.
            sids (`torch.LongTensor` of shape `(num_items + 1, num_modalities, num_levels)`):
                Semantic IDs.
            codebooks (`dict[str, torch.Tensor]`, *optional*):
                `(num_levels, codebook_size, codebook_dim)` per modality; required when `sid_init="codebook"`.
            item_counts (`torch.LongTensor` of shape `(num_items + 1,)`, *optional*):
                Training-interaction counts (frequency-aware fusion).
            backbone_kwargs (`dict`, *optional*):
                Passed to `AutoModel.from_pretrained` when `backbone` is a path.
            codebook_seed (`int`, *optional*, defaults to 0):
                Seed of the codebook projection when `codebook_dim != hidden_size`.
            config_kwargs:
                Other [`MMESIDConfig`] fields (`fusion`, `sid_init`, `fusion_temperature`, ...).
        """
        if isinstance(backbone, str):
            backbone = AutoModel.from_pretrained(backbone, **(backbone_kwargs or {}))
        elif isinstance(backbone, PreTrainedConfig):
            backbone = AutoModel.from_config(backbone)
        elif not isinstance(backbone, PreTrainedModel):
            raise TypeError(
                f"`backbone` must be a path, a config or a `PreTrainedModel`, got {type(backbone).__name__}."
            )
        decoder = getattr(backbone, "base_model", backbone)
        if decoder is not backbone and hasattr(backbone, "lm_head"):
            backbone = decoder  # bare decoder: MME-SID has no LM head
        backbone.resize_token_embeddings(len(processor.tokenizer))

        unknown = [m for m in modality_embeddings if m not in processor.modalities]
        if unknown or len(modality_embeddings) != len(processor.modalities):
            raise ValueError(
                f"`modality_embeddings` has modalities {list(modality_embeddings)}, but the processor's SID tokens "
                f"are for {processor.modalities}."
            )
        modalities = list(processor.modalities)
        codebook_dim = None
        if codebooks is not None:
            codebook_dim = int(next(iter(codebooks.values())).shape[-1])
        config = MMESIDConfig(
            text_config=backbone.config,
            num_items=int(sids.shape[0]) - 1,
            modality_dims=[int(modality_embeddings[m].shape[1]) for m in modalities],
            codebook_dim=codebook_dim,
            **processor.config_kwargs(),
            **config_kwargs,
        )
        if config.sid_init == "codebook" and codebooks is None:
            raise ValueError("`sid_init='codebook'` needs `codebooks`; pass them or set `sid_init='random'`.")
        config.custom_pipelines = CUSTOM_PIPELINES  # `pipeline(model=saved_folder, trust_remote_code=True)`

        # Build everything but the backbone on the meta device, then plug the loaded backbone in, so a large
        # (possibly quantized) backbone is never allocated twice.
        with torch.device("meta"):
            model = cls(config)
        model.model.language_model = backbone
        device = backbone.get_input_embeddings().weight.device
        for module in (model.model.modality_projections, model.model.item_fusion, model.item_head, model.fusion_gate):
            module.to_empty(device=device)
            module.apply(model._init_weights)
        num_rows = config.num_items + 1
        for modality, dim in zip(config.modalities, config.modality_dims):
            setattr(model.model, buffer_name(modality), nn.Buffer(torch.zeros(num_rows, dim, device=device)))
        model.model.sids = nn.Buffer(torch.zeros(sids.shape, dtype=torch.long, device=device))
        model.model.item_counts = nn.Buffer(torch.zeros(num_rows, dtype=torch.long, device=device))
        model.model.set_item_tables(modality_embeddings, sids, item_counts)
        if config.sid_init == "codebook":
            model.model.init_sid_embeddings(codebooks, seed=codebook_seed)
        model.init_item_head()
        return model


__all__ = ["MMESIDBuildMixin", "MMESIDItemTablesMixin", "buffer_name"]
