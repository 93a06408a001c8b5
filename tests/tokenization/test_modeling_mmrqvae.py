# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
import pytest
import torch
import torch.nn.functional as F

from tokenization.configuration_mmrqvae import MMRQVAEConfig
from tokenization.modeling_mmrqvae import (
    MMRQVAE,
    gaussian_mmd,
    info_nce,
    kmeans_init,
    sinkhorn_assign,
    squared_distances,
    straight_through,
)
from tokenization.semantic_ids import compute_semantic_ids, load_semantic_ids, resolve_collisions, save_semantic_ids
from tokenization.train_rqvae import MMRQVAETrainingArguments, train_mmrqvae


pytestmark = pytest.mark.usefixtures("one_thread")
NUM_ITEMS = 64


def tiny_config(**kwargs) -> MMRQVAEConfig:
    defaults = {
        "modalities": ["collaborative", "text"],
        "input_dims": [8, 12],
        "hidden_dims": [16],
        "e_dim": 6,
        "num_levels": 2,
        "codebook_size": 8,
    }
    defaults.update(kwargs)
    return MMRQVAEConfig(**defaults)


def tiny_embeddings(seed: int = 0, n: int = NUM_ITEMS) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 4, generator=g)  # shared structure so the modalities are related
    return {
        "collaborative": base @ torch.randn(4, 8, generator=g) + 0.1 * torch.randn(n, 8, generator=g),
        "text": base @ torch.randn(4, 12, generator=g) + 0.1 * torch.randn(n, 12, generator=g),
    }


def direct_mmd(x, y, multipliers):
    """tllib's formulation: (2B, 2B, D) differences, then the unbiased estimator without the constant."""
    z = torch.cat([x, y])
    d2 = ((z.unsqueeze(0) - z.unsqueeze(1)) ** 2).sum(2)
    sigma2 = d2.detach().mean()  # tllib: track_running_stats detaches the bandwidth
    k = sum(torch.exp(-d2 / (2 * a * sigma2)) for a in multipliers)
    b = x.shape[0]
    total = 0.0
    for i in range(b):
        for j in range(b):
            if i != j:
                total += (k[i, j] + k[i + b, j + b]) / (b * (b - 1))
            total -= 2 * k[i, j + b] / (b * b)
    return total


# ---------------------------------------------------------------------------------------------- equivalence (P17)


class TestEquivalence:
    @pytest.mark.parametrize("multipliers", [[0.5], [0.25, 0.5, 1.0, 2.0]])
    def test_mmd_equals_direct_formula(self, multipliers):
        torch.manual_seed(0)
        x, y = torch.randn(9, 5, dtype=torch.float64), torch.randn(9, 5, dtype=torch.float64) + 0.3
        torch.testing.assert_close(gaussian_mmd(x, y, multipliers), direct_mmd(x, y, multipliers))

    def test_mmd_gradients_equal_direct_formula(self):
        torch.manual_seed(1)
        x1 = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
        x2 = x1.detach().clone().requires_grad_(True)
        y = torch.randn(7, 4, dtype=torch.float64)
        gaussian_mmd(x1, y).backward()
        direct_mmd(x2, y, [0.5]).backward()
        torch.testing.assert_close(x1.grad, x2.grad)

    def test_mmd_zero_for_identical_batches_and_positive_otherwise(self):
        torch.manual_seed(0)
        x = torch.randn(32, 3, dtype=torch.float64)
        assert gaussian_mmd(x, x.clone()).abs() < 0.05
        assert gaussian_mmd(x, x + 3.0) > 0.5

    def test_same_seed_same_ids(self):
        ids = []
        for _ in range(2):
            model, _ = train_mmrqvae(
                tiny_config(), tiny_embeddings(), MMRQVAETrainingArguments(num_epochs=3, batch_size=32, seed=7)
            )
            ids.append(model.get_codes(tiny_embeddings()))
        for m in ids[0]:
            assert torch.equal(ids[0][m], ids[1][m])

    def test_save_load_round_trip_gives_identical_ids(self, tmp_path):
        model, _ = train_mmrqvae(
            tiny_config(), tiny_embeddings(), MMRQVAETrainingArguments(num_epochs=2, batch_size=32), output_dir=tmp_path
        )
        assert {"config.json", "model.safetensors"} <= {p.name for p in tmp_path.iterdir()}
        loaded = MMRQVAE.from_pretrained(tmp_path).eval()
        assert loaded.is_initialized
        for m in model.codebooks:
            torch.testing.assert_close(loaded.codebooks[m], model.codebooks[m])
        a, b = model.get_codes(tiny_embeddings()), loaded.get_codes(tiny_embeddings())
        for m in a:
            assert torch.equal(a[m], b[m])


# ---------------------------------------------------------------------------------------------- building blocks


def test_straight_through_value_and_gradient():
    x = torch.randn(4, 3, requires_grad=True)
    q = torch.randn(4, 3)
    out = straight_through(x, q)
    torch.testing.assert_close(out, q)
    out.sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x))


def test_gradients_reach_encoder_through_quantizer():
    model = MMRQVAE(tiny_config(recon_loss="mse"))
    model.train()
    out = model(tiny_embeddings())
    # Reconstruction alone: its only path to the encoder is the straight-through estimator.
    (out.reconstruction_loss).backward()
    for m in model.config.modalities:
        grad = model.encoders[m][0].weight.grad
        assert grad is not None and grad.abs().sum() > 0, m
        assert model.quantizers[m].codebooks.grad is None  # codebooks learn from the codebook loss only


def test_sinkhorn_assignment_is_balanced():
    torch.manual_seed(0)
    # Skewed data: argmin piles most vectors on one code, Sinkhorn spreads them out.
    x = torch.randn(512, 4) * 0.1
    codes = torch.randn(8, 4)
    codes[0] = 0.0
    d2 = torch.cdist(x, codes) ** 2
    argmin_counts = torch.bincount(d2.argmin(1), minlength=8)
    counts = torch.bincount(sinkhorn_assign(d2, epsilon=0.003, num_iters=50), minlength=8)
    assert argmin_counts.max() > 400
    assert counts.min() >= 512 / 8 * 0.5 and counts.max() <= 512 / 8 * 1.5, counts


def test_sinkhorn_equals_argmin_when_argmin_is_already_balanced():
    # 16 vectors around each of 8 separated codes: the nearest-code assignment is balanced, so the balanced
    # assignment must be it (a sign error sends every vector to its farthest code and stays balanced).
    torch.manual_seed(0)
    codes = torch.randn(8, 4) * 3
    x = codes.repeat_interleave(16, 0) + 0.1 * torch.randn(128, 4)
    d2 = squared_distances(x, codes)
    assert torch.bincount(d2.argmin(1), minlength=8).tolist() == [16] * 8
    assert torch.equal(sinkhorn_assign(d2, epsilon=0.003, num_iters=50), d2.argmin(1))


def test_kmeans_init_finds_separated_clusters():
    torch.manual_seed(0)
    centers = torch.tensor([[10.0, 0.0], [-10.0, 0.0], [0.0, 10.0], [0.0, -10.0]])
    x = centers.repeat_interleave(25, 0) + 0.1 * torch.randn(100, 2)
    for constrained in (False, True):
        torch.manual_seed(3)
        found, labels = kmeans_init(x, 4, num_iters=10, constrained=constrained)
        assert torch.bincount(labels, minlength=4).tolist() == [25] * 4
        # Every true center has a found center within 0.5.
        assert (torch.cdist(centers, found).min(1).values < 0.5).all()


def test_constrained_kmeans_bounds_cluster_sizes():
    torch.manual_seed(0)
    x = torch.cat([torch.randn(180, 2) * 0.1, torch.randn(20, 2) + 5])  # one dense blob + a few outliers
    _, labels = kmeans_init(x, 10, num_iters=10, constrained=True)
    # size_max = max(4 * min(200 // 20, 50), ceil(200 / 10)) = 40
    assert torch.bincount(labels, minlength=10).max() <= 40


def test_kmeans_init_needs_enough_vectors():
    with pytest.raises(ValueError, match="at least `codebook_size` \\(8\\)"):
        kmeans_init(torch.randn(5, 3), 8)


def test_info_nce_matches_cross_entropy():
    torch.manual_seed(0)
    q, k = torch.randn(6, 4), torch.randn(6, 4)
    logits = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).T / 0.1
    torch.testing.assert_close(info_nce(q, k, 0.1), F.cross_entropy(logits, torch.arange(6)))
    sym = (F.cross_entropy(logits, torch.arange(6)) + F.cross_entropy(logits.T, torch.arange(6))) / 2
    torch.testing.assert_close(info_nce(q, k, 0.1, symmetric=True), sym)


# ---------------------------------------------------------------------------------------------- model


def test_forward_output_fields_and_shapes():
    config = tiny_config()
    model = MMRQVAE(config).train()
    assert not model.is_initialized
    out = model(tiny_embeddings())
    assert model.is_initialized  # first training batch runs k-means
    assert out.codes["text"].shape == (NUM_ITEMS, 2)
    assert out.reconstructions["text"].shape == (NUM_ITEMS, 12)
    assert out.quantized["collaborative"].shape == (NUM_ITEMS, 6)
    expected = 3.0 * out.reconstruction_loss + 1.0 * out.vq_loss + 0.01 * out.alignment_loss
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(out.vq_loss, out.codebook_loss + 0.25 * out.commitment_loss)
    assert {m: c.shape for m, c in model.codebooks.items()} == {"collaborative": (2, 8, 6), "text": (2, 8, 6)}


def test_quantized_latent_is_sum_of_code_vectors():
    model = MMRQVAE(tiny_config()).eval()
    emb = tiny_embeddings()
    model.initialize_codebooks(emb)
    out = model(emb)
    summed = model.code_embeddings(out.codes)
    for m in model.config.modalities:
        torch.testing.assert_close(out.quantized[m], summed[m], atol=1e-5, rtol=1e-5)


def test_codes_equal_an_independent_residual_loop():
    # r = z; per level: c = argmin ||r - B_l||^2, r -= B_l[c]; written here, not with the library's helpers.
    model = MMRQVAE(tiny_config(num_levels=3)).eval()
    emb = tiny_embeddings()
    model.initialize_codebooks(emb)
    codes, out = model.get_codes(emb), model(emb)
    for m in model.config.modalities:
        with torch.no_grad():
            z = model.encoders[m](emb[m]).double()
        books = model.quantizers[m].codebooks.detach().double()
        r, expected = z.clone(), []
        for level in range(3):
            c = ((r.unsqueeze(1) - books[level].unsqueeze(0)) ** 2).sum(-1).argmin(1)
            expected.append(c)
            r = r - books[level][c]
        expected = torch.stack(expected, dim=1)
        assert len(set(expected[:, 1].tolist())) > 1  # the later levels see different residuals
        assert torch.equal(codes[m], expected), m
        assert torch.equal(out.codes[m], expected), m
        torch.testing.assert_close(out.quantized[m].double(), z - r, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("recon_loss", ["mmd", "mse"])
def test_recon_loss_switch(recon_loss):
    torch.manual_seed(0)
    model = MMRQVAE(tiny_config(recon_loss=recon_loss)).eval()
    emb = tiny_embeddings()
    model.initialize_codebooks(emb)
    out = model(emb)
    if recon_loss == "mse":
        expected = sum(F.mse_loss(out.reconstructions[m], emb[m]) for m in emb)
    else:
        expected = sum(gaussian_mmd(out.reconstructions[m], emb[m]) for m in emb)
    torch.testing.assert_close(out.reconstruction_loss, expected)


def test_single_modality_has_no_alignment():
    config = tiny_config(modalities=["text"], input_dims=[12])
    model = MMRQVAE(config).train()
    out = model({"text": tiny_embeddings()["text"]})
    assert out.alignment_loss == 0


def test_tiny_training_loss_falls():
    _, history = train_mmrqvae(
        tiny_config(), tiny_embeddings(), MMRQVAETrainingArguments(num_epochs=30, batch_size=32, learning_rate=1e-2)
    )
    assert history["loss"][-1] < 0.5 * history["loss"][0], history["loss"]
    assert history["best_loss"] == min(history["loss"])


def test_early_stopping_keeps_best():
    _, history = train_mmrqvae(
        tiny_config(),
        tiny_embeddings(),
        MMRQVAETrainingArguments(num_epochs=200, batch_size=64, learning_rate=0.5, patience=2),
    )
    assert history["stopped_early"] and history["epochs_run"] < 200
    assert history["best_epoch"] == history["epochs_run"] - 3


def test_semantic_ids_files(tmp_path):
    model, _ = train_mmrqvae(tiny_config(), tiny_embeddings(), MMRQVAETrainingArguments(num_epochs=1, batch_size=32))
    padded = {m: torch.cat([torch.zeros(1, t.shape[1]), t]) for m, t in tiny_embeddings().items()}
    sids = compute_semantic_ids(model, padded, batch_size=10)
    assert sids.shape == (NUM_ITEMS + 1, 2, 2) and sids.dtype == torch.long
    assert (sids[0] == 0).all()
    codes = model.get_codes(tiny_embeddings())
    assert torch.equal(sids[1:, 1], codes["text"])
    save_semantic_ids(tmp_path, sids, model.codebooks, model.config.modalities, dataset_fingerprint="abc")
    loaded, books, meta = load_semantic_ids(tmp_path)
    assert torch.equal(loaded, sids)
    assert books["text"].shape == (2, 8, 6)
    assert meta == {
        "modalities": ["collaborative", "text"],
        "num_levels": 2,
        "codebook_size": 8,
        "e_dim": 6,
        "num_items": NUM_ITEMS,
        "dataset_fingerprint": "abc",
    }


def _padded_with_duplicates(copies: dict[int, int]) -> dict[str, torch.Tensor]:
    """Tiny tables with row 0 = padding, where item `dst` is an exact copy of item `src` in every modality."""
    tables = {m: torch.cat([torch.zeros(1, t.shape[1]), t]) for m, t in tiny_embeddings().items()}
    for dst, src in copies.items():
        for t in tables.values():
            t[dst] = t[src]
    return tables


def test_resolve_collisions_moves_later_items_to_the_nearest_free_last_code():
    from tokenization.diagnostics import collision_rate

    model, _ = train_mmrqvae(tiny_config(), tiny_embeddings(), MMRQVAETrainingArguments(num_epochs=1, batch_size=32))
    tables = _padded_with_duplicates({5: 2, 9: 2, 30: 11})
    sids = compute_semantic_ids(model, tables)
    assert collision_rate(sids[1:]) > 0
    resolved, changes = resolve_collisions(model, tables, sids)
    assert collision_rate(resolved[1:]) == 0
    moved = sorted(c["item"] for c in changes)
    assert 2 not in moved and 11 not in moved  # the first item of a group keeps its ID
    assert {5, 9, 30} <= set(moved)
    unchanged = [i for i in range(sids.shape[0]) if i not in moved]
    assert torch.equal(resolved[unchanged], sids[unchanged])
    assert torch.equal(resolved[moved, :, :-1], sids[moved, :, :-1])  # only the last level moves
    # JSON-ready (assign_sids.py writes them): the increase of the chosen code, ≥ 0 since the old code was nearest
    assert all(type(c["distance_increase"]) is float and c["distance_increase"] >= -1e-6 for c in changes), changes

    # Oracle: each moved item (in id order) takes the free (modality, code) with the least total squared error
    # ‖z_m − Σ_levels e‖² over modalities, against the IDs held before it.
    books = model.codebooks
    held = {tuple(r) for r in sids[1:].reshape(sids.shape[0] - 1, -1).tolist()}
    for item in moved:
        with torch.no_grad():
            latents = {m: model.encoders[m](tables[m][item : item + 1])[0] for m in model.config.modalities}

        def error(ids, latents=latents):
            return sum(
                float((latents[m] - sum(books[m][lv, ids[i, lv]] for lv in range(ids.shape[1]))).pow(2).sum())
                for i, m in enumerate(model.config.modalities)
            )

        best = None
        for i in range(sids.shape[1]):
            for code in range(books["text"].shape[1]):
                trial = sids[item].clone()
                trial[i, -1] = code
                key = tuple(trial.reshape(-1).tolist())
                if key in held:
                    continue
                if best is None or error(trial) < best[0] - 1e-6:
                    best = (error(trial), trial)
        assert torch.equal(resolved[item], best[1]), item
        held.add(tuple(resolved[item].reshape(-1).tolist()))


def test_resolve_collisions_leaves_unique_ids_alone():
    model, _ = train_mmrqvae(tiny_config(), tiny_embeddings(), MMRQVAETrainingArguments(num_epochs=1, batch_size=32))
    tables = _padded_with_duplicates({})
    items = compute_semantic_ids(model, tables)[1:].reshape(NUM_ITEMS, -1)
    _, inverse, counts = torch.unique(items, dim=0, return_inverse=True, return_counts=True)
    keep = torch.cat([torch.zeros(1, dtype=torch.long), (counts[inverse] == 1).nonzero().squeeze(1) + 1])
    assert keep.numel() > NUM_ITEMS // 2
    subset = {m: t[keep] for m, t in tables.items()}  # only items whose ID no other item shares
    sids = compute_semantic_ids(model, subset)
    resolved, changes = resolve_collisions(model, subset, sids)
    assert changes == [] and torch.equal(resolved, sids)


# ---------------------------------------------------------------------------------------------- refusals (P7)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"codebook_size": 1}, "`codebook_size` must be at least 2, got 1"),
        ({"modalities": ["collaborative", "audio"]}, "Unknown modality \\['audio'\\]"),
        ({"input_dims": [8]}, "`input_dims` has 1 entries but `modalities` has 2"),
        ({"input_dims": {"collaborative": 8, "image": 12}}, "`input_dims` keys"),
        ({"num_levels": 0}, "`num_levels` must be at least 1"),
        ({"alignment_anchor": "image"}, "`alignment_anchor` 'image' is not one of"),
        ({"mmd_bandwidth_multipliers": [0.5, -1.0]}, "`mmd_bandwidth_multipliers` must be"),
        ({"modalities": []}, "at least one modality"),
        ({"restart_usage_fraction": 1.0}, "`restart_usage_fraction` must be in \\[0, 1\\)"),
    ],
)
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny_config(**kwargs)


def test_dim_mismatch_raises():
    model = MMRQVAE(tiny_config())
    emb = tiny_embeddings()
    emb["text"] = emb["text"][:, :10]
    with pytest.raises(ValueError, match=r"`embeddings\['text'\]` has shape \(64, 10\); expected \(batch, 12\)"):
        model(emb)
    with pytest.raises(ValueError, match="Missing embeddings for modalities \\['text'\\]"):
        model({"collaborative": tiny_embeddings()["collaborative"]})


def test_get_codes_before_init_raises():
    with pytest.raises(ValueError, match="codebooks are not initialized"):
        MMRQVAE(tiny_config()).get_codes(tiny_embeddings())


def test_bad_training_args_raise():
    with pytest.raises(ValueError, match="`batch_size` must be positive, got 0"):
        MMRQVAETrainingArguments(batch_size=0)


# ---------------------------------------------------------------------------------------------- dead-code restart


def reference_training(config, embeddings, args):
    """The official loop (no restart): k-means init on the catalog, AdamW, one permutation per epoch, keep the
    lowest-loss weights. `train_mmrqvae` with `dead_code_restart=False` must match it bit for bit."""
    from accelerate.utils import set_seed

    set_seed(args.seed)
    data = {m: embeddings[m].float() for m in config.modalities}
    model = MMRQVAE(config)
    model.initialize_codebooks(data)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    generator = torch.Generator().manual_seed(args.seed)
    n = next(iter(data.values())).shape[0]
    best, best_state, losses = float("inf"), None, []
    for _ in range(args.num_epochs):
        perm = torch.randperm(n, generator=generator)
        total, steps = 0.0, 0
        for begin in range(0, n, args.batch_size):
            idx = perm[begin : begin + args.batch_size]
            out = model({m: t[idx] for m, t in data.items()})
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            total, steps = total + float(out.loss.detach()), steps + 1
        losses.append(torch.tensor(total / steps).item())  # the trainer reduces the mean as a float32 tensor
        if losses[-1] < best:
            best, best_state = losses[-1], {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return model.eval(), losses


def collapsing_run(restart: bool):
    """A tiny collaborative branch with a learning rate high enough that the latents outrun the codebook."""
    config = tiny_config(modalities=["collaborative"], input_dims=[8], codebook_size=16, dead_code_restart=restart)
    emb = {"collaborative": tiny_embeddings(n=128)["collaborative"]}
    args = MMRQVAETrainingArguments(num_epochs=30, batch_size=64, learning_rate=0.1, patience=1000)
    return train_mmrqvae(config, emb, args)


def test_restart_off_reproduces_the_official_loop_bit_for_bit():
    config = tiny_config(dead_code_restart=False)
    args = MMRQVAETrainingArguments(num_epochs=4, batch_size=24, seed=3)
    model, history = train_mmrqvae(config, tiny_embeddings(), args)
    reference, losses = reference_training(config, tiny_embeddings(), args)
    assert history["loss"] == losses
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert history["restarted_codes"]["text"] == [[0, 0]] * 4


def test_codes_die_without_restart_and_stay_alive_with_it():
    _, off = collapsing_run(restart=False)
    _, on = collapsing_run(restart=True)
    first_off = [u[0] for u in off["utilization"]["collaborative"]]
    first_on = [u[0] for u in on["utilization"]["collaborative"]]
    # Level 1 loses a third of its codes for good without restarts; with them, each epoch ends with most alive.
    assert first_off[0] > 0.9 and max(first_off[-5:]) < 0.75, first_off
    assert sum(first_on[-5:]) / 5 >= 0.9, first_on
    # measured 1.8x (one thread, torch 2.14.1) to over 2x (two threads): the ratio moves with the float reductions
    assert on["perplexity"]["collaborative"][-1][0] > 1.5 * off["perplexity"]["collaborative"][-1][0]
    assert sum(r[0] for r in on["restarted_codes"]["collaborative"]) > 0


def test_history_has_usage_per_epoch_and_level():
    _, history = train_mmrqvae(tiny_config(), tiny_embeddings(), MMRQVAETrainingArguments(num_epochs=3, batch_size=32))
    for key in ("utilization", "perplexity", "restarted_codes"):
        assert set(history[key]) == {"collaborative", "text"}
        assert len(history[key]["text"]) == 3 and all(len(levels) == 2 for levels in history[key]["text"])
    assert all(0 < u <= 1 for levels in history["utilization"]["text"] for u in levels)
    assert all(1 <= p <= 8 for levels in history["perplexity"]["text"] for p in levels)


def test_restart_reseeds_every_dead_code_and_resets_its_optimizer_state():
    from tokenization.train_rqvae import _reset_optimizer_rows

    config = tiny_config(modalities=["text"], input_dims=[12])
    model = MMRQVAE(config)
    emb = {"text": tiny_embeddings()["text"]}
    model.initialize_codebooks(emb)
    books = model.quantizers["text"].codebooks
    with torch.no_grad():
        books[0, :3] = 1e3  # three codes nobody can pick
    optimizer = torch.optim.AdamW(model.parameters())
    model.train()
    model(emb).loss.backward()
    optimizer.step()
    masks = model.restart_dead_codes(emb, torch.Generator().manual_seed(0))["text"]
    assert masks[0][:3].all()
    state = optimizer.state[books]
    state["exp_avg"].fill_(0.5)  # as after many steps where every code was picked
    state["exp_avg_sq"].fill_(0.25)
    _reset_optimizer_rows(optimizer, books, torch.stack(masks))
    dead = torch.stack(masks)
    # Both moments of the re-seeded rows, nothing else (docs/SID_QUALITY.md, "Optimizer state of re-seeded codes").
    assert (state["exp_avg"][dead] == 0).all() and (state["exp_avg"][~dead] == 0.5).all()
    assert (state["exp_avg_sq"][dead] == 0).all() and (state["exp_avg_sq"][~dead] == 0.25).all()
    codes = model.get_codes(emb)["text"]
    assert torch.bincount(codes[:, 0], minlength=8).min() > 0  # every level-1 code is picked again


@pytest.mark.parametrize("fraction, min_usage", [(0.0, 1), (0.05, 1), (0.3, 2.4), (0.6, 4.8)])
def test_restart_reseeds_exactly_the_codes_below_min_usage(fraction, min_usage):
    # 64 items over 8 codes: a balanced code holds 8, so the bar is max(1, 8 * fraction)
    config = tiny_config(modalities=["text"], input_dims=[12], restart_usage_fraction=fraction)
    model = MMRQVAE(config)
    emb = {"text": tiny_embeddings()["text"]}
    model.initialize_codebooks(emb)
    with torch.no_grad():
        model.quantizers["text"].codebooks[0, :2] = 1e3  # two codes nobody can pick
        latents = model.encoders["text"](emb["text"])
    counts = torch.bincount(squared_distances(latents, model.quantizers["text"].codebooks[0]).argmin(1), minlength=8)
    masks = model.restart_dead_codes(emb, torch.Generator().manual_seed(0))["text"]
    assert torch.equal(masks[0], counts < min_usage), (counts, masks[0])
    assert int(masks[0].sum()) >= 2


@pytest.mark.parametrize("batch_size", [None, 128])
def test_restart_counts_the_last_level_as_training_assigns_it(batch_size):
    # One level, so it is the last: argmin piles the vectors onto code 0, Sinkhorn (training) spreads them over all.
    torch.manual_seed(0)
    x = torch.randn(512, 4) * 0.1
    codes = torch.randn(8, 4)
    codes[0] = 0.0
    counts = {}
    for epsilon in (0.003, 0.0):
        quantizer = MMRQVAE(tiny_config(num_levels=1, e_dim=4, sinkhorn_epsilon=epsilon)).quantizers["text"]
        with torch.no_grad():
            quantizer.codebooks[0] = codes
        counts[epsilon] = quantizer.restart_dead_codes(x, torch.Generator().manual_seed(0), batch_size)[0]
        if epsilon:
            torch.testing.assert_close(quantizer.codebooks[0], codes)  # nothing moved
    argmin_counts = torch.bincount(squared_distances(x, codes).argmin(1), minlength=8)
    assert not counts[0.003].any()  # every code gets its balanced share from Sinkhorn
    bar = 0.1 * 512 / 8
    assert torch.equal(counts[0.0], argmin_counts < bar) and counts[0.0].any()  # argmin training: re-seeded


def test_normalized_latents_have_norm_sqrt_e_dim_and_round_trip(tmp_path):
    config = tiny_config(normalize_latents=True)
    model, _ = train_mmrqvae(config, tiny_embeddings(), MMRQVAETrainingArguments(num_epochs=2, batch_size=32))
    with torch.no_grad():
        latents = model.encoders["text"](tiny_embeddings()["text"])
    torch.testing.assert_close(latents.norm(dim=-1), torch.full((NUM_ITEMS,), 6**0.5))
    # Parameter-free: the same state-dict keys as the plain model, so a checkpoint names the same tensors.
    assert set(model.state_dict()) == set(MMRQVAE(tiny_config()).state_dict())
    model.save_pretrained(tmp_path)
    loaded = MMRQVAE.from_pretrained(tmp_path)
    assert loaded.config.normalize_latents
    for m, codes in model.get_codes(tiny_embeddings()).items():
        assert torch.equal(loaded.get_codes(tiny_embeddings())[m], codes)


def warnings_of_scripted_run(caplog, monkeypatch, perplexities, restart):
    """`test_tiny_training_loss_falls`'s run (30 epochs; its loss halves, so the kept epoch is not the first), where
    level 1's perplexity in epoch e reads `perplexities[min(e, len - 1)]` for both modalities (level 2: 8 of 8 codes;
    warning bar 0.5 x 8 = 4). Returns the warning text and the history."""
    from transformers.utils import logging as hf_logging

    import tokenization.train_rqvae as train_module

    calls = iter(range(10**6))

    def scripted_usage(codes, codebook_size):
        p = perplexities[min(next(calls) // 2, len(perplexities) - 1)]  # two modalities per epoch
        return {"utilization": [p / codebook_size, 1.0], "perplexity": [p, 8.0]}

    monkeypatch.setattr(train_module, "codebook_usage", scripted_usage)
    args = MMRQVAETrainingArguments(num_epochs=30, batch_size=32, learning_rate=1e-2, low_perplexity_fraction=0.5)
    hf_logging.enable_propagation()
    try:
        with caplog.at_level("WARNING"):
            _, history = train_mmrqvae(tiny_config(dead_code_restart=restart), tiny_embeddings(), args)
    finally:
        hf_logging.disable_propagation()
    return caplog.text, history


def test_no_collapse_warning_while_the_restart_revives_the_codes(caplog, monkeypatch):
    # The main job: with the restart on, level 1 starts below the bar and recovers.
    text, history = warnings_of_scripted_run(caplog, monkeypatch, [2, 6], restart=True)
    assert history["best_epoch"] >= 1  # the kept epoch is a recovered one
    assert "perplexity" not in text, text


def test_collapse_warning_when_usage_stays_low_despite_the_restart(caplog, monkeypatch):
    text, _ = warnings_of_scripted_run(caplog, monkeypatch, [2], restart=True)
    assert text.count("level 1 perplexity") == 2, text  # once per modality, at the end
    assert "text level 1 perplexity 2.0 < 4.0" in text and "at the kept epoch" in text
    assert "restart_usage_fraction" in text and "for more epochs" in text


def test_collapse_warning_without_restart_says_to_turn_it_on(caplog, monkeypatch):
    text, _ = warnings_of_scripted_run(caplog, monkeypatch, [6, 2], restart=False)
    assert text.count("level 1 perplexity") == 2 and "epoch 1: text level 1 perplexity 2.0" in text, text
    assert "set `dead_code_restart=True`" in text


def test_initial_residuals_use_the_nearest_code():
    # Constrained k-means can label a vector with a farther center; the next level must see nearest-code residuals.
    torch.manual_seed(0)
    x = torch.cat([torch.randn(56, 6) * 0.05, torch.randn(8, 6) * 3])  # one dense blob: capacity binds
    config = tiny_config(modalities=["text"], input_dims=[12])
    quantizer = MMRQVAE(config).quantizers["text"]
    torch.manual_seed(1)
    quantizer.initialize(x)
    torch.manual_seed(1)
    first, labels = kmeans_init(x, 8, config.kmeans_iters, constrained=True)
    nearest = torch.cdist(x, first).argmin(1)
    assert not torch.equal(nearest, labels)  # the case the fix is about
    second, _ = kmeans_init(x - first[nearest], 8, config.kmeans_iters, constrained=True)
    torch.testing.assert_close(quantizer.codebooks[1], second)
