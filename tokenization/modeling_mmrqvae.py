# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""MM-RQ-VAE: the multimodal residual-quantized VAE that turns item embeddings into semantic IDs (paper §3.2)."""

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput, logging

from .configuration_mmrqvae import MMRQVAEConfig


logger = logging.get_logger(__name__)


# ----------------------------------------------------------------------------------------------------------------------
# Pure functions (lucidrains style): each one is a formula of the paper, testable on its own.
# ----------------------------------------------------------------------------------------------------------------------


def straight_through(x: torch.Tensor, quantized: torch.Tensor) -> torch.Tensor:
    """Straight-through estimator (VQ-VAE): the value of `quantized`, the gradient of `x`."""
    return x + (quantized - x).detach()


def squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pairwise squared Euclidean distances `(n, m)` as ‖x‖² + ‖y‖² − 2xyᵀ, never an `(n, m, dim)` tensor."""
    d2 = x.pow(2).sum(-1, keepdim=True) + y.pow(2).sum(-1).unsqueeze(0) - 2 * x @ y.T  # (n, m)
    return d2.clamp_min(0)


@torch.no_grad()
def sinkhorn_assign(distances: torch.Tensor, epsilon: float = 0.003, num_iters: int = 50) -> torch.LongTensor:
    """Balanced assignment of `batch` vectors to `codes` codes by entropic optimal transport (paper §3.2).

    Distances are rescaled to [-1, 1] (official `center_distance_for_constraint`), then the plan
    `Q ∝ exp(-d / epsilon)` is alternately normalized so every code receives mass 1/codes and every vector 1/batch;
    each vector takes the code with the largest mass.

    Args:
        distances (`torch.Tensor` of shape `(batch, codes)`): squared distances to each code.
        epsilon (`float`): entropic regularization (official 0.003).
        num_iters (`int`): Sinkhorn iterations (official 50).

    Returns:
        `torch.LongTensor` of shape `(batch,)`: one code per vector.

    NOTE: like the official code, the plan is exponentiated directly in float64: the rescaled distances lie in
    [-1, 1], so `exp(±1 / epsilon)` stays inside float64's range for the official epsilon (0.003; smaller values would
    overflow and are refused). This is much faster on CPU than the log domain (two reductions per iteration instead
    of two `logsumexp`s; docs/SPEED.md, "Stage 1"), and gives the same assignments.
    """
    if epsilon < 1.0 / 700:
        raise ValueError(f"`epsilon` must be at least 1/700 (float64 range of exp(1/epsilon)), got {epsilon}.")
    d = distances.double()
    middle = (d.max() + d.min()) / 2
    amplitude = d.max() - middle + 1e-5
    q = torch.exp(-((d - middle) / amplitude) / epsilon)  # (batch, codes)
    batch, codes = q.shape
    q = q / q.sum()
    for _ in range(num_iters):
        q = q / (q.sum(dim=0, keepdim=True) * codes)  # each code: mass 1/codes
        q = q / (q.sum(dim=1, keepdim=True) * batch)  # each vector: mass 1/batch
    return q.argmax(dim=-1)


def _capacity_assign(d2: torch.Tensor, capacity: int) -> torch.LongTensor:
    """Greedy assignment with at most `capacity` vectors per cluster: in rounds, each unassigned vector proposes to
    its nearest non-full cluster and each cluster accepts its closest proposers up to its remaining room."""
    n, k = d2.shape
    assign = torch.full((n,), -1, dtype=torch.long, device=d2.device)
    room = torch.full((k,), capacity, dtype=torch.long, device=d2.device)
    while True:
        todo = (assign < 0).nonzero().squeeze(1)
        if todo.numel() == 0:
            return assign
        d = d2[todo].masked_fill((room == 0).unsqueeze(0), float("inf"))  # (todo, k)
        dist, proposal = d.min(dim=1)
        order = torch.argsort(dist, stable=True)
        order = order[torch.argsort(proposal[order], stable=True)]  # grouped by cluster, closest first
        sorted_prop = proposal[order]
        counts = torch.bincount(sorted_prop, minlength=k)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(order.numel(), device=d2.device) - starts[sorted_prop]
        accepted = rank < room[sorted_prop]
        assign[todo[order[accepted]]] = sorted_prop[accepted]
        room -= torch.bincount(sorted_prop[accepted], minlength=k)


def _kmeans_plus_plus(x: torch.Tensor, num_clusters: int) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii, 2007), drawing from the global torch RNG."""
    n = x.shape[0]
    centers = [x[torch.randint(0, n, (1,), device=x.device)].squeeze(0)]
    closest = squared_distances(x, centers[0].unsqueeze(0)).squeeze(1)  # (n,)
    for _ in range(1, num_clusters):
        weights = closest if closest.sum() > 0 else torch.ones_like(closest)
        centers.append(x[torch.multinomial(weights, 1)].squeeze(0))
        closest = torch.minimum(closest, squared_distances(x, centers[-1].unsqueeze(0)).squeeze(1))
    return torch.stack(centers)


@torch.no_grad()
def kmeans_init(
    x: torch.Tensor, num_clusters: int, num_iters: int = 10, constrained: bool = True
) -> tuple[torch.Tensor, torch.LongTensor]:
    """k-means on the rows of `x`, used to initialize a codebook from encoder outputs (paper §3.2).

    Args:
        x (`torch.Tensor` of shape `(n, dim)`): vectors to cluster; needs `n >= num_clusters`.
        num_clusters (`int`): number of centers (codebook size).
        num_iters (`int`): Lloyd iterations.
        constrained (`bool`): bound cluster sizes as the official `KMeansConstrained` call does
            (`size_max = 4 * min(n // (2 * num_clusters), 50)`, at least `ceil(n / num_clusters)`).

    Returns:
        `(centers (num_clusters, dim), labels (n,))`.

    NOTE: the official code calls `k_means_constrained.KMeansConstrained` (min-cost flow, `n_init=10`, also a lower
    size bound). We enforce the upper bound with a greedy capacity assignment in torch (one run, k-means++ seeding
    from the global torch RNG, so `set_seed` makes it reproducible); empty clusters are re-seeded.
    """
    n = x.shape[0]
    if n < num_clusters:
        raise ValueError(
            f"k-means initialization needs at least `codebook_size` ({num_clusters}) vectors, got {n}; initialize "
            "on the whole catalog (`model.initialize_codebooks`) or use a larger first batch."
        )
    x = x.float()
    capacity = max(4 * min(n // (2 * num_clusters), 50), math.ceil(n / num_clusters)) if constrained else n
    centers = _kmeans_plus_plus(x, num_clusters)
    labels = torch.zeros(n, dtype=torch.long, device=x.device)
    for _ in range(num_iters):
        d2 = squared_distances(x, centers)  # (n, k)
        labels = _capacity_assign(d2, capacity) if constrained else d2.argmin(dim=1)
        counts = torch.bincount(labels, minlength=num_clusters)
        sums = torch.zeros_like(centers).index_add_(0, labels, x)
        empty = counts == 0
        centers = torch.where(empty.unsqueeze(1), centers, sums / counts.clamp_min(1).unsqueeze(1))
        if empty.any():  # re-seed empty clusters on random vectors
            centers[empty] = x[torch.randint(0, n, (int(empty.sum()),), device=x.device)]
    return centers, labels


def gaussian_mmd(x: torch.Tensor, y: torch.Tensor, bandwidth_multipliers: list[float] | tuple[float, ...] = (0.5,)):
    """Squared MMD between the batches `x` and `y` with a (sum of) Gaussian kernel(s) (paper Eq. 4).

    `k(a, b) = Σ_α exp(-‖a - b‖² / (2 α σ²))`, `σ²` = mean pairwise squared distance over the concatenated batch
    (detached, as tllib's `GaussianKernel(track_running_stats=True)`). Unbiased estimator:
    `mean_{i≠j} k(x_i, x_j) + mean_{i≠j} k(y_i, y_j) - 2 mean_{i,j} k(x_i, y_j)`.

    Memory is `O((2 batch)²)`: distances come from ‖a‖² + ‖b‖² − 2abᵀ, never from a `(2B, 2B, dim)` difference
    tensor (tllib's formulation needs `(2B)² · dim · 4` bytes, about 69 GB at B = 1024, dim = 4096).

    Args:
        x (`torch.Tensor` of shape `(batch, dim)`): reconstructions.
        y (`torch.Tensor` of shape `(batch, dim)`): inputs.
        bandwidth_multipliers (`list[float]`): α values (official: one kernel, α = 0.5).

    NOTE: tllib's `MultipleKernelMaximumMeanDiscrepancy` adds the constant `2 / (batch - 1)` to the estimate; we
    leave it out (same gradients).
    """
    batch = x.shape[0]
    z = torch.cat([x, y], dim=0)  # (2 batch, dim)
    d2 = squared_distances(z, z)
    d2 = d2.masked_fill(torch.eye(2 * batch, dtype=torch.bool, device=z.device), 0.0)
    sigma2 = d2.detach().mean()
    kernel = sum(torch.exp(-d2 / (2 * alpha * sigma2)) for alpha in bandwidth_multipliers)  # (2 batch, 2 batch)
    k_xx, k_yy, k_xy = kernel[:batch, :batch], kernel[batch:, batch:], kernel[:batch, batch:]
    off_diagonal = batch * (batch - 1)
    return (
        (k_xx.sum() - k_xx.diagonal().sum()) / off_diagonal
        + (k_yy.sum() - k_yy.diagonal().sum()) / off_diagonal
        - 2 * k_xy.mean()
    )


def info_nce(query: torch.Tensor, key: torch.Tensor, temperature: float = 0.1, symmetric: bool = False):
    """InfoNCE with cosine similarity and in-batch negatives (paper Eq. 5): row i of `query` must pick row i of `key`.

    One direction (query → key) by default, as the official `info_nce.InfoNCE()`; `symmetric=True` averages both.
    """
    logits = F.normalize(query, dim=-1) @ F.normalize(key, dim=-1).T / temperature  # (batch, batch)
    labels = torch.arange(logits.shape[0], device=logits.device)
    loss = F.cross_entropy(logits, labels)
    if symmetric:
        loss = (loss + F.cross_entropy(logits.T, labels)) / 2
    return loss


# ----------------------------------------------------------------------------------------------------------------------
# Modules
# ----------------------------------------------------------------------------------------------------------------------


class MMRQVAEMLP(nn.Sequential):
    """Encoder or decoder MLP `[dims[0], ..., dims[-1]]`: ReLU between layers, none after the last (official
    `MLPLayers` with dropout 0 and no batch norm)."""

    def __init__(self, dims: list[int]):
        layers = []
        for i, (d_in, d_out) in enumerate(itertools.pairwise(dims)):
            layers.append(nn.Linear(d_in, d_out))
            if i < len(dims) - 2:
                layers.append(nn.ReLU())
        super().__init__(*layers)


class MMRQVAELatentNorm(nn.Module):
    """`sqrt(dim) · x / ‖x‖` on the last axis (`MMRQVAEConfig.normalize_latents`); no parameters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1) * math.sqrt(x.shape[-1])


class MMRQVAEResidualQuantizer(nn.Module):
    """Residual quantizer of one modality (paper §3.2, Eq. 2): `num_levels` codebooks of `codebook_size` vectors.

    Level l quantizes the residual left by levels < l; the item's latent is approximated by the sum of its codes.
    """

    def __init__(self, config: MMRQVAEConfig):
        super().__init__()
        self.config = config
        self.codebooks = nn.Parameter(torch.empty(config.num_levels, config.codebook_size, config.e_dim))
        # Persistent, so a saved checkpoint never re-runs k-means on load (P15).
        self.initialized = nn.Buffer(torch.zeros((), dtype=torch.bool), persistent=True)

    @torch.no_grad()
    def initialize(self, latents: torch.Tensor) -> None:
        """k-means init of every level on the residuals of `latents` `(n, e_dim)` (official `vq_ini`)."""
        residual = latents.detach().float()
        for level in range(self.config.num_levels):
            centers, _labels = kmeans_init(
                residual,
                self.config.codebook_size,
                self.config.kmeans_iters,
                constrained=self.config.kmeans_method == "constrained",
            )
            self.codebooks[level].copy_(centers)
            # The next level starts from the nearest-code residual, as `forward` and the official `vq_ini` compute it
            # (the constrained labels can send a vector to a farther center when its nearest one is full).
            residual = residual - centers[squared_distances(residual, centers).argmin(dim=1)]
        self.initialized.fill_(True)

    @torch.no_grad()
    def restart_dead_codes(
        self, latents: torch.Tensor, generator: torch.Generator | None = None, batch_size: int | None = None
    ) -> list[torch.Tensor]:
        """Re-seed every code that fewer than `max(1, config.restart_usage_fraction × n / codebook_size)` of the `n`
        vectors of `latents` `(n, e_dim)` are assigned to (fraction 0 = unused codes only), level by level.

        At each level, the residuals of all `n` vectors are assigned as training assigns them: nearest code, and on
        the last level the Sinkhorn balanced assignment when `config.sinkhorn_epsilon > 0` (over chunks of
        `batch_size` vectors, as training's batches, or over all `n` when `None`). Each rarely used code is moved onto
        the residual of a distinct vector drawn at random (`generator`), then the residuals are recomputed with the
        updated codebook (nearest code) before the next level. Codes nobody is assigned get no gradient from the
        codebook loss and never move again; without this, the first level collapses onto a few codes as the
        encoder's latents drift (docs/SID_QUALITY.md, "Dead-code restart"). Not in the official code.

        Returns:
            `list[torch.BoolTensor]`, one `(codebook_size,)` mask per level: the codes that were re-seeded (the
            caller resets their optimizer state).
        """
        residual = latents.detach().float()
        n = residual.shape[0]
        min_usage = max(1.0, self.config.restart_usage_fraction * n / self.config.codebook_size)
        restarted = []
        for level in range(self.config.num_levels):
            codebook = self.codebooks[level]  # (codes, e_dim), updated in place
            d2 = squared_distances(residual, codebook)  # (n, codes)
            if level == self.config.num_levels - 1 and self.config.sinkhorn_epsilon > 0:
                # Training assigns the last level by Sinkhorn: codes it uses get gradient even when no vector has
                # them as its nearest code, so count its assignment, not the argmin.
                step = batch_size or n
                assigned = torch.cat(
                    [
                        sinkhorn_assign(d2[begin : begin + step], self.config.sinkhorn_epsilon, self.config.sinkhorn_iters)
                        for begin in range(0, n, step)
                    ]
                )
            else:
                assigned = d2.argmin(dim=1)
            dead = torch.bincount(assigned, minlength=self.config.codebook_size) < min_usage
            num_dead = int(dead.sum())
            if num_dead:
                if n >= num_dead:
                    pick = torch.randperm(n, generator=generator)[:num_dead]
                else:
                    pick = torch.randint(0, n, (num_dead,), generator=generator)
                codebook[dead] = residual[pick.to(residual.device)].to(codebook.dtype)
                d2 = squared_distances(residual, codebook)
            restarted.append(dead)
            residual = residual - codebook[d2.argmin(dim=1)]
        return restarted

    def forward(self, latents: torch.Tensor, balanced: bool = False):
        """Quantize `latents` `(batch, e_dim)`.

        Args:
            balanced (`bool`): use the Sinkhorn assignment on the last level (training); argmin otherwise.

        Returns:
            `(quantized (batch, e_dim) with straight-through gradient, codes (batch, num_levels),
            codebook_loss, commitment_loss)`; the losses are averaged over levels (official `rq_mm.py`).
        """
        residual = latents
        quantized = torch.zeros_like(latents)
        codes, codebook_losses, commitment_losses = [], [], []
        for level in range(self.config.num_levels):
            codebook = self.codebooks[level]  # (codes, e_dim)
            d2 = squared_distances(residual.detach(), codebook.detach())  # (batch, codes)
            last = level == self.config.num_levels - 1
            if balanced and last and self.config.sinkhorn_epsilon > 0:
                idx = sinkhorn_assign(d2, self.config.sinkhorn_epsilon, self.config.sinkhorn_iters)
            else:
                idx = d2.argmin(dim=-1)
            code_vectors = codebook[idx]  # (batch, e_dim)
            codebook_losses.append(F.mse_loss(code_vectors, residual.detach()))
            commitment_losses.append(F.mse_loss(residual, code_vectors.detach()))
            code_vectors = straight_through(residual, code_vectors)
            residual = residual - code_vectors  # the next level quantizes what this one missed
            quantized = quantized + code_vectors  # the latent is the sum of the chosen codes
            codes.append(idx)
        return (
            quantized,
            torch.stack(codes, dim=-1),
            torch.stack(codebook_losses).mean(),
            torch.stack(commitment_losses).mean(),
        )


@dataclass
class MMRQVAEOutput(ModelOutput):
    """
    Output of [`MMRQVAE.forward`]. Losses are sums over modalities of per-modality losses, before the weights of the
    total; `loss` is the weighted total (paper Eq. 6).

    Args:
        loss (`torch.FloatTensor` of shape `()`):
            `recon_weight · reconstruction_loss + vq_weight · vq_loss + alignment_weight · alignment_loss`.
        reconstruction_loss (`torch.FloatTensor` of shape `()`): Σ_m MMD (or MSE) of reconstruction vs input.
        vq_loss (`torch.FloatTensor` of shape `()`): Σ_m (codebook_m + beta · commitment_m).
        codebook_loss (`torch.FloatTensor` of shape `()`): Σ_m codebook MSE (code vectors pulled to latents).
        commitment_loss (`torch.FloatTensor` of shape `()`): Σ_m commitment MSE (latents pulled to codes), unweighted.
        alignment_loss (`torch.FloatTensor` of shape `()`): Σ InfoNCE(anchor, other); 0 with one modality.
        codes (`dict[str, torch.LongTensor]`, each of shape `(batch, num_levels)`): code index per level.
        reconstructions (`dict[str, torch.FloatTensor]`, each `(batch, input_dim)`): decoder outputs.
        quantized (`dict[str, torch.FloatTensor]`, each `(batch, e_dim)`): quantized latents (sum of codes).
    """

    loss: torch.FloatTensor | None = None
    reconstruction_loss: torch.FloatTensor | None = None
    vq_loss: torch.FloatTensor | None = None
    codebook_loss: torch.FloatTensor | None = None
    commitment_loss: torch.FloatTensor | None = None
    alignment_loss: torch.FloatTensor | None = None
    codes: dict[str, torch.LongTensor] | None = None
    reconstructions: dict[str, torch.FloatTensor] | None = None
    quantized: dict[str, torch.FloatTensor] | None = None


class MMRQVAEPreTrainedModel(PreTrainedModel):
    config: MMRQVAEConfig
    config_class = MMRQVAEConfig
    base_model_prefix = "mmrqvae"
    main_input_name = "embeddings"

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            init.xavier_normal_(module.weight, gain=self.config.initializer_range)
            init.zeros_(module.bias)
        elif isinstance(module, MMRQVAEResidualQuantizer):
            # Placeholder until k-means runs on the first batch (official: zeros when `kmeans_init`).
            init.zeros_(module.codebooks)
            init.zeros_(module.initialized)


class MMRQVAE(MMRQVAEPreTrainedModel):
    """MM-RQ-VAE (paper §3.2, Alg. 1): per modality, an MLP encoder, a residual quantizer and an MLP decoder.

    Codebooks are separate per modality. Trained with MMD reconstruction (paper Eq. 4), per-level codebook +
    commitment losses (Eq. 3) and InfoNCE alignment of the anchor modality's quantized latent with every other
    modality's (Eq. 5); the total is Eq. 6 with the weights of the config.

    NOTE: differences from the official `MM-RQ-VAE/rqvae_mm.py`: any set of modalities (the official hard-codes
    three); `beta` 0.25 instead of the accidental 0.01 (see `MMRQVAEConfig`); bounded-memory MMD; torch
    constrained k-means (see `kmeans_init`); the dead-code restart (`restart_dead_codes`).
    """

    def __init__(self, config: MMRQVAEConfig):
        super().__init__(config)
        dims = config.input_dims
        self.encoders = nn.ModuleDict(
            {m: MMRQVAEMLP([dims[m], *config.hidden_dims, config.e_dim]) for m in config.modalities}
        )
        if config.normalize_latents:  # a parameter-free last module: the Linear layers keep their state-dict keys
            for encoder in self.encoders.values():
                encoder.append(MMRQVAELatentNorm())
        self.decoders = nn.ModuleDict(
            {m: MMRQVAEMLP([config.e_dim, *config.hidden_dims[::-1], dims[m]]) for m in config.modalities}
        )
        self.quantizers = nn.ModuleDict({m: MMRQVAEResidualQuantizer(config) for m in config.modalities})
        self.post_init()

    @property
    def codebooks(self) -> dict[str, torch.Tensor]:
        """Per modality, the code vectors `(num_levels, codebook_size, e_dim)` (detached)."""
        return {m: self.quantizers[m].codebooks.detach() for m in self.config.modalities}

    @property
    def is_initialized(self) -> bool:
        return all(bool(q.initialized) for q in self.quantizers.values())

    def _check_inputs(self, embeddings: dict[str, torch.Tensor]) -> None:
        missing = [m for m in self.config.modalities if m not in embeddings]
        if missing:
            raise ValueError(f"Missing embeddings for modalities {missing}; the model expects {self.config.modalities}.")
        sizes = set()
        for m in self.config.modalities:
            x = embeddings[m]
            if x.dim() != 2 or x.shape[-1] != self.config.input_dims[m]:
                raise ValueError(
                    f"`embeddings[{m!r}]` has shape {tuple(x.shape)}; expected (batch, {self.config.input_dims[m]}) "
                    f"(`config.input_dims[{m!r}]`)."
                )
            sizes.add(x.shape[0])
        if len(sizes) > 1:
            raise ValueError(f"All modalities need the same batch of items, got batch sizes {sorted(sizes)}.")

    @torch.no_grad()
    def initialize_codebooks(self, embeddings: dict[str, torch.Tensor]) -> None:
        """k-means initialization of every modality's codebooks on `embeddings` (official: the whole catalog as the
        first batch, `vq_initialization`). Sets the persistent `initialized` flags."""
        self._check_inputs(embeddings)
        for m in self.config.modalities:
            self.quantizers[m].initialize(self.encoders[m](embeddings[m]))

    def forward(self, embeddings: dict[str, torch.Tensor], **kwargs) -> MMRQVAEOutput:
        r"""
        Args:
            embeddings (`dict[str, torch.FloatTensor]`, each of shape `(batch, input_dims[modality])`):
                The same batch of items in every modality of `config.modalities`.

        In training mode, a modality whose codebooks are not initialized is initialized by k-means on this batch,
        and the last level uses the Sinkhorn balanced assignment; in eval mode codes are plain argmin.
        """
        self._check_inputs(embeddings)
        config = self.config
        codes, recons, quantized = {}, {}, {}
        recon, codebook, commitment = [], [], []
        for m in config.modalities:
            x = embeddings[m]
            latent = self.encoders[m](x)  # (batch, e_dim)
            if self.training and not bool(self.quantizers[m].initialized):
                self.quantizers[m].initialize(latent)
            z_q, codes[m], cb_loss, commit_loss = self.quantizers[m](latent, balanced=self.training)
            recons[m] = self.decoders[m](z_q)  # (batch, input_dim)
            quantized[m] = z_q
            if config.recon_loss == "mmd":
                recon.append(gaussian_mmd(recons[m], x, config.mmd_bandwidth_multipliers))
            else:
                recon.append(F.mse_loss(recons[m], x))
            codebook.append(cb_loss)
            commitment.append(commit_loss)

        reconstruction_loss = torch.stack(recon).sum()
        codebook_loss = torch.stack(codebook).sum()
        commitment_loss = torch.stack(commitment).sum()
        vq_loss = codebook_loss + config.beta * commitment_loss
        others = [m for m in config.modalities if m != config.alignment_anchor]
        if len(config.modalities) > 1:
            anchor = quantized[config.alignment_anchor]
            alignment_loss = torch.stack(
                [info_nce(anchor, quantized[m], config.alignment_temperature) for m in others]
            ).sum()
        else:
            alignment_loss = reconstruction_loss.new_zeros(())
        loss = (
            config.recon_weight * reconstruction_loss
            + config.vq_weight * vq_loss
            + config.alignment_weight * alignment_loss
        )
        return MMRQVAEOutput(
            loss=loss,
            reconstruction_loss=reconstruction_loss,
            vq_loss=vq_loss,
            codebook_loss=codebook_loss,
            commitment_loss=commitment_loss,
            alignment_loss=alignment_loss,
            codes=codes,
            reconstructions=recons,
            quantized=quantized,
        )

    @torch.no_grad()
    def get_codes(self, embeddings: dict[str, torch.Tensor]) -> dict[str, torch.LongTensor]:
        """Semantic IDs by plain nearest code (argmin) at every level: per modality `(batch, num_levels)`."""
        self._check_inputs(embeddings)
        if not self.is_initialized:
            raise ValueError("The codebooks are not initialized; train the model or call `initialize_codebooks`.")
        return {m: self.quantizers[m](self.encoders[m](embeddings[m]), balanced=False)[1] for m in self.config.modalities}

    @torch.no_grad()
    def restart_dead_codes(
        self,
        embeddings: dict[str, torch.Tensor],
        generator: torch.Generator | None = None,
        batch_size: int | None = None,
    ) -> dict[str, list[torch.Tensor]]:
        """Per modality, re-seed the codes that fewer than `max(1, config.restart_usage_fraction × n /
        codebook_size)` of the `n` items of `embeddings` (the whole catalog) are assigned to, as training assigns
        them (Sinkhorn on the last level over chunks of `batch_size` items); see
        `MMRQVAEResidualQuantizer.restart_dead_codes`. Returns per modality one re-seeded mask per level."""
        self._check_inputs(embeddings)
        return {
            m: self.quantizers[m].restart_dead_codes(self.encoders[m](embeddings[m]), generator, batch_size)
            for m in self.config.modalities
        }

    def code_embeddings(self, codes: dict[str, torch.LongTensor]) -> dict[str, torch.Tensor]:
        """Sum over levels of the code vectors, per modality `(batch, e_dim)`: the SID embedding the LLM stage is
        initialized with (paper §3.3)."""
        out = {}
        for m, c in codes.items():
            books = self.quantizers[m].codebooks.detach()  # (levels, codes, e_dim)
            out[m] = torch.stack([books[level][c[:, level]] for level in range(c.shape[1])]).sum(0)
        return out


__all__ = [
    "MMRQVAE",
    "MMRQVAEOutput",
    "MMRQVAEPreTrainedModel",
    "gaussian_mmd",
    "info_nce",
    "kmeans_init",
    "sinkhorn_assign",
    "straight_through",
]
