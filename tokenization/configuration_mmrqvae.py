# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""Configuration of MM-RQ-VAE, the multimodal item tokenizer of MME-SID (paper §3.2)."""

from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig
from transformers.utils import logging

from mmesid_artifacts.run import MODALITIES


logger = logging.get_logger(__name__)

# One modality order for the whole project, the model's (`configuration_mmesid.KNOWN_MODALITIES`): collaborative,
# image, text. It lives on the ground floor so that Stage 1 follows it without importing Stage 2.
KNOWN_MODALITIES = MODALITIES
# Paper/official input sizes: SASRec 64-d, LLM2CLIP text and image 1280-d (official MM-RQ-VAE/rqvae_mm.py).
PAPER_INPUT_DIMS = {"collaborative": 64, "text": 1280, "image": 1280}


@strict
class MMRQVAEConfig(PreTrainedConfig):
    r"""
    Configuration of [`MMRQVAE`]: one encoder / residual quantizer / decoder branch per modality, trained jointly with
    MMD reconstruction, codebook + commitment losses and InfoNCE alignment (paper §3.2, Eq. 3-6).

    The defaults are the paper's official Beauty run (`MM-RQ-VAE/train_tokenizer_MM.sh`): hidden `[4096] * 3`,
    `e_dim=4096` (= Llama-3-8B hidden size, so code vectors live directly in the LLM space), 4 levels × 256 codes. The
    CPU recipe (`recipes/configs/beauty-smollm2-135m/rqvae.yaml`) shrinks them.

    Args:
        modalities (`list[str]`, *optional*, defaults to `["collaborative", "image", "text"]`):
            Branches to build, in the order used for axis 1 of `sids.safetensors`. Each must be one of
            `collaborative`, `text`, `image` (paper §3.1).
        input_dims (`dict[str, int]` or `list[int]`, *optional*):
            Input embedding size per modality (a list is aligned with `modalities`). Defaults to the paper's
            SASRec 64 / LLM2CLIP 1280 / 1280. Stored as a dict.
        hidden_dims (`list[int]`, *optional*, defaults to `[4096, 4096, 4096]`):
            Hidden layer sizes of each encoder MLP `[in_dim, *hidden_dims, e_dim]`; decoders mirror it
            (official `--layers 4096 4096 4096`).
        e_dim (`int`, *optional*, defaults to 4096):
            Latent and code-vector size (official `--e_dim 4096`).
        num_levels (`int`, *optional*, defaults to 4):
            Residual quantization levels (official `--num_emb_list 256 256 256 256`).
        codebook_size (`int`, *optional*, defaults to 256):
            Codes per level (official `--num_emb_list 256 256 256 256`).
        kmeans_method (`Literal["constrained", "plain"]`, *optional*, defaults to `"constrained"`):
            Codebook initialization on the first batch of encoder outputs. `"constrained"` bounds cluster sizes as
            the official `KMeansConstrained` call does (official `vq_mm.py`); `"plain"` is Lloyd's k-means (LC-Rec).
        kmeans_iters (`int`, *optional*, defaults to 10):
            Lloyd iterations of the initialization (official `max_iter=10` of `KMeansConstrained`).
        sinkhorn_epsilon (`float`, *optional*, defaults to 0.003):
            Entropic regularization of the Sinkhorn balanced assignment on the last level during training;
            0 disables it (paper §3.2; official `sk_epsilons` = `[0, 0, 0, 0.003]`).
        sinkhorn_iters (`int`, *optional*, defaults to 50):
            Sinkhorn iterations (official `sk_iters=50`).
        dead_code_restart (`bool`, *optional*, defaults to `True`):
            After every training epoch, re-seed each code that fewer than `max(1, restart_usage_fraction × n /
            codebook_size)` of the catalog's `n` items are assigned to (as training assigns them: nearest code, Sinkhorn
            on the last level) from the current residuals of random items, and zero its AdamW moments. Without it the
            first level collapses onto a few codes as the encoder's latents drift (docs/SID_QUALITY.md, "Dead-code
            restart"). Not in the official code: `False` reproduces it.
        restart_usage_fraction (`float`, *optional*, defaults to 0.1):
            With `dead_code_restart`, the codes assigned fewer than `max(1, restart_usage_fraction × n /
            codebook_size)` of the catalog's `n` items (that fraction of a balanced code's share) are re-seeded; 0
            re-seeds only unused codes. Re-seeding rarely used codes too moves them into crowded regions (their
            random items come mostly from large clusters) and raises the level's perplexity: on Beauty_new, 0.1
            (codes with fewer than 4.7 items) took level 1 from perplexity 86/94 to 133/167 (collaborative/text, 40
            epochs), 0.42 did worse (74/109); docs/SID_QUALITY.md.
        normalize_latents (`bool`, *optional*, defaults to `False`):
            L2-normalize the encoder outputs (scaled by `sqrt(e_dim)`, so a latent keeps the norm of a unit-variance
            vector) before quantization, which stops the latents' norm drift that strands codes
            (docs/SID_QUALITY.md). Not in the official code.
        recon_loss (`Literal["mmd", "mse"]`, *optional*, defaults to `"mmd"`):
            Reconstruction loss: Gaussian-kernel MMD between reconstructions and inputs (paper Eq. 4) or the
            MSE of the paper's ablation (paper Table 5).
        mmd_bandwidth_multipliers (`list[float]`, *optional*, defaults to `[0.5]`):
            Kernel bandwidths as multiples of the batch's mean pairwise squared distance; several values give a
            multi-kernel MMD (official: one `GaussianKernel(alpha=2 ** -1)` of tllib).
        beta (`float`, *optional*, defaults to 0.25):
            Commitment weight of the per-level VQ loss (VQ-VAE / TIGER value).
        recon_weight (`float`, *optional*, defaults to 3.0):
            Weight of Σ_m reconstruction (official `--recon 3`).
        vq_weight (`float`, *optional*, defaults to 1.0):
            Weight of Σ_m VQ loss (official `quant_loss_weight=1.0`).
        alignment_weight (`float`, *optional*, defaults to 0.01):
            Weight of Σ InfoNCE(anchor, other) (official `align=0.01`).
        alignment_temperature (`float`, *optional*, defaults to 0.1):
            InfoNCE temperature (official `info_nce.InfoNCE()` default 0.1).
        alignment_anchor (`str`, *optional*, defaults to `"collaborative"`):
            Modality whose quantized latent is aligned with each other modality's (paper Eq. 5: z_cf with z_img,
            z_txt). Ignored when only one modality is present.
        initializer_range (`float`, *optional*, defaults to 1.0):
            Gain of the Xavier-normal initialization of the MLPs (official `MLPLayers` uses `xavier_normal_`).

    > [!NOTE]
    > `beta` defaults to 0.25. The official code passes the alignment weight (`align=0.01`) as the commitment
    > weight `mu` (`ResidualVectorQuantizer(..., align=self.align)` → `VectorQuantizer(mu=align)`), which we read as
    > accidental; set `beta=0.01` to reproduce it exactly.

    Example:

    ```python
    >>> from tokenization.configuration_mmrqvae import MMRQVAEConfig
    >>> config = MMRQVAEConfig(modalities=["collaborative", "text"], input_dims=[64, 384], hidden_dims=[512, 512], e_dim=576)
    ```
    """

    model_type = "mmrqvae"

    modalities: list[str] | None = None
    input_dims: dict[str, int] | list[int] | None = None
    hidden_dims: list[int] | None = None
    e_dim: int = 4096
    num_levels: int = 4
    codebook_size: int = 256
    kmeans_method: Literal["constrained", "plain"] = "constrained"
    kmeans_iters: int = 10
    sinkhorn_epsilon: float = 0.003
    sinkhorn_iters: int = 50
    dead_code_restart: bool = True
    restart_usage_fraction: float = 0.1
    normalize_latents: bool = False
    recon_loss: Literal["mmd", "mse"] = "mmd"
    mmd_bandwidth_multipliers: list[float] | None = None
    beta: float = 0.25
    recon_weight: float = 3.0
    vq_weight: float = 1.0
    alignment_weight: float = 0.01
    alignment_temperature: float = 0.1
    alignment_anchor: str = "collaborative"
    initializer_range: float = 1.0

    def __post_init__(self, **kwargs):
        if self.modalities is None:
            self.modalities = list(KNOWN_MODALITIES)
        self.modalities = list(self.modalities)
        if not self.modalities:
            raise ValueError("`modalities` must name at least one modality, got an empty list.")
        if self.input_dims is None:
            self.input_dims = {m: PAPER_INPUT_DIMS.get(m, 0) for m in self.modalities}
        elif isinstance(self.input_dims, list):
            if len(self.input_dims) != len(self.modalities):
                raise ValueError(
                    f"`input_dims` has {len(self.input_dims)} entries but `modalities` has {len(self.modalities)} "
                    f"({self.modalities}); give one input size per modality, in the same order."
                )
            self.input_dims = dict(zip(self.modalities, self.input_dims))
        else:
            self.input_dims = dict(self.input_dims)
        if self.hidden_dims is None:
            self.hidden_dims = [4096, 4096, 4096]
        if self.mmd_bandwidth_multipliers is None:
            self.mmd_bandwidth_multipliers = [0.5]
        # NOTE: `@strict` wraps errors raised in `validate_architecture` in `StrictDataclassClassValidationError`,
        # which is not a `ValueError`; we run the same checks here first so users get a plain `ValueError`.
        self._check()
        super().__post_init__(**kwargs)

    def validate_architecture(self):
        """Cross-field checks (part of `@strict` validation); see `_check`."""
        self._check()

    def _check(self):
        if not self.modalities:
            raise ValueError("`modalities` must name at least one modality, got an empty list.")
        unknown = [m for m in self.modalities if m not in KNOWN_MODALITIES]
        if unknown:
            raise ValueError(f"Unknown modality {unknown}; expected a subset of {list(KNOWN_MODALITIES)}.")
        if len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"`modalities` has duplicates: {self.modalities}.")
        if set(self.input_dims) != set(self.modalities):
            raise ValueError(
                f"`input_dims` keys {sorted(self.input_dims)} do not match `modalities` {self.modalities}; "
                "give one input size per modality."
            )
        for m, d in self.input_dims.items():
            if not isinstance(d, int) or d < 1:
                raise ValueError(f"`input_dims[{m!r}]` must be a positive integer, got {d!r}.")
        if any(h < 1 for h in self.hidden_dims):
            raise ValueError(f"`hidden_dims` must be positive, got {self.hidden_dims}.")
        if self.e_dim < 1:
            raise ValueError(f"`e_dim` must be positive, got {self.e_dim}.")
        if self.num_levels < 1:
            raise ValueError(f"`num_levels` must be at least 1, got {self.num_levels}.")
        if self.codebook_size < 2:
            raise ValueError(f"`codebook_size` must be at least 2, got {self.codebook_size}.")
        if self.sinkhorn_epsilon < 0 or self.sinkhorn_iters < 1:
            raise ValueError(
                f"`sinkhorn_epsilon` must be >= 0 and `sinkhorn_iters` >= 1, got {self.sinkhorn_epsilon} and "
                f"{self.sinkhorn_iters}."
            )
        if not 0 <= self.restart_usage_fraction < 1:
            raise ValueError(f"`restart_usage_fraction` must be in [0, 1), got {self.restart_usage_fraction}.")
        if self.kmeans_iters < 1:
            raise ValueError(f"`kmeans_iters` must be at least 1, got {self.kmeans_iters}.")
        if not self.mmd_bandwidth_multipliers or any(a <= 0 for a in self.mmd_bandwidth_multipliers):
            raise ValueError(
                f"`mmd_bandwidth_multipliers` must be a non-empty list of positive numbers, got "
                f"{self.mmd_bandwidth_multipliers}."
            )
        if self.alignment_temperature <= 0:
            raise ValueError(f"`alignment_temperature` must be positive, got {self.alignment_temperature}.")
        if len(self.modalities) > 1 and self.alignment_anchor not in self.modalities:
            raise ValueError(
                f"`alignment_anchor` {self.alignment_anchor!r} is not one of `modalities` {self.modalities}."
            )


__all__ = ["MMRQVAEConfig"]
