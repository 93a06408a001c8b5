# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
import math

import pytest
import torch

from tokenization.diagnostics import (
    codebook_usage,
    collision_rate,
    embedding_collapse_tables,
    kendall_tau_concordance,
    read_validation_pairs,
    save_spectrum_plot,
    semantic_id_diagnostics,
    singular_values,
    spectrum_summary,
)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_collision_rate_hand_table():
    ids = torch.tensor([[1, 2], [1, 2], [3, 4], [1, 3], [3, 4], [0, 0]])
    # items 0,1 share (1,2); items 2,4 share (3,4) → 4 of 6 collide
    assert collision_rate(ids) == pytest.approx(4 / 6)
    assert collision_rate(torch.tensor([[1, 2], [2, 1], [1, 1]])) == 0.0


def test_combined_collision_needs_every_modality_equal():
    sids = torch.tensor(
        [
            [[1, 1], [5, 5]],
            [[1, 1], [5, 5]],  # same as item 0 in both modalities
            [[1, 1], [6, 6]],  # same as 0 in modality 0 only
            [[2, 2], [6, 6]],
        ]
    )
    assert collision_rate(sids[:, 0]) == pytest.approx(3 / 4)
    assert collision_rate(sids[:, 1]) == pytest.approx(1.0)
    assert collision_rate(sids) == pytest.approx(2 / 4)


def test_codebook_usage_hand_values():
    codes = torch.tensor([[0, 0], [1, 0], [2, 0], [3, 1]])
    usage = codebook_usage(codes, codebook_size=8)
    assert usage["utilization"] == [4 / 8, 2 / 8]
    assert usage["perplexity"][0] == pytest.approx(4.0)  # uniform over 4 codes
    p = torch.tensor([0.75, 0.25])
    assert usage["perplexity"][1] == pytest.approx(math.exp(-(p * p.log()).sum().item()))


def test_kendall_tau_hand_case():
    # Target item 4; history items 1, 2, 3.
    pretrained = torch.tensor([[0.0, 0], [3, 0], [2, 0], [1, 0], [1, 0]])  # dot with target: 3, 2, 1
    derived = torch.tensor([[0.0, 0], [3, 0], [1, 0], [2, 0], [1, 0]])  # dot with target: 3, 1, 2
    # pairs (1,2): + / + concordant; (1,3): + / + concordant; (2,3): + / - discordant → 2/3
    fraction = kendall_tau_concordance([[1, 2, 3]], [4], pretrained, derived, similarity="dot", statistic="fraction")
    assert fraction == pytest.approx(2 / 3)
    tau_a = kendall_tau_concordance([[1, 2, 3]], [4], pretrained, derived, similarity="dot")  # tau-a is the default
    assert tau_a == pytest.approx((2 - 1) / 3)
    assert kendall_tau_concordance([[1, 2, 3]], [4], pretrained, pretrained, similarity="dot") == pytest.approx(1.0)
    # Two users (one short, skipped) average per user: [1,2,3] → 1/3, [3,2] → pair (3,2): 1 vs 2, 2 vs 1 → -1.
    tau = kendall_tau_concordance([[1, 2, 3], [1], [3, 2]], [4, 4, 4], pretrained, derived, similarity="dot")
    assert tau == pytest.approx((1 / 3 - 1) / 2)


def test_kendall_tau_a_of_unrelated_tables_is_near_zero():
    torch.manual_seed(0)
    a, b = torch.randn(200, 8), torch.randn(200, 8)
    histories = [torch.randint(1, 200, (10,)).tolist() for _ in range(300)]
    targets = torch.randint(1, 200, (300,)).tolist()
    assert abs(kendall_tau_concordance(histories, targets, a, b)) < 0.03
    assert kendall_tau_concordance(histories, targets, a, b, statistic="fraction") == pytest.approx(0.5, abs=0.03)


def test_kendall_tau_batches_agree():
    torch.manual_seed(0)
    a, b = torch.randn(30, 4), torch.randn(30, 4)
    histories = [torch.randint(1, 30, (int(n),)).tolist() for n in torch.randint(2, 9, (20,))]
    targets = torch.randint(1, 30, (20,)).tolist()
    one = kendall_tau_concordance(histories, targets, a, b, batch_size=1)
    many = kendall_tau_concordance(histories, targets, a, b, batch_size=64)
    assert one == pytest.approx(many)


def test_kendall_tau_rejects_unknown_similarity():
    with pytest.raises(ValueError, match="`similarity` must be 'cosine' or 'dot', got 'l2'"):
        kendall_tau_concordance([[1, 2]], [3], torch.randn(4, 2), torch.randn(4, 2), similarity="l2")


def table_with_singular_values(values: list[float], num_items: int = 50, dim: int = 16, seed: int = 0) -> torch.Tensor:
    """A `(num_items, dim)` table whose mean-centred singular values are exactly `values` (then zeros), shifted by a
    constant row (centring removes it)."""
    g = torch.Generator().manual_seed(seed)
    ones = torch.ones(num_items, 1, dtype=torch.float64)
    # orthonormal columns orthogonal to the all-ones vector, i.e. with zero mean
    u = torch.linalg.qr(torch.cat([ones, torch.randn(num_items, len(values), generator=g, dtype=torch.float64)], 1))[0]
    v = torch.linalg.qr(torch.randn(dim, len(values), generator=g, dtype=torch.float64))[0]
    table = u[:, 1:] @ torch.diag(torch.tensor(values, dtype=torch.float64)) @ v.T
    return table + torch.randn(1, dim, generator=g, dtype=torch.float64)


@pytest.mark.parametrize(
    "values, dims_90, dims_99",
    [
        ([10.0, 1.0, 0.01], 1, 1),  # energies 100, 1, 1e-4: the first holds 99.01%
        ([10.0, 3.0, 1.0], 1, 2),  # 100 / 110 = 90.9%, 109 / 110 = 99.09%
        ([1.0, 1.0, 1.0, 1.0], 4, 4),  # 3 / 4 < 90%: all four
    ],
)
def test_spectrum_of_known_singular_values(values, dims_90, dims_99):
    table = table_with_singular_values(values)
    torch.testing.assert_close(singular_values(table)[: len(values)], torch.tensor(values, dtype=torch.float64))
    summary = spectrum_summary(table)
    p = torch.tensor(values, dtype=torch.float64) / sum(values)
    assert summary["effective_rank"] == pytest.approx(math.exp(-(p * p.log()).sum().item()), rel=1e-6)
    assert (summary["dims_90pct_energy"], summary["dims_99pct_energy"], summary["dim"]) == (dims_90, dims_99, 16)


def test_read_validation_pairs_from_raw_file(tmp_path):
    path = tmp_path / "seq.txt"
    path.write_text("1 5 6 7 8\n2 3 4 5\n3 9 9 1\n4 2 3\n")  # user 4 is too short
    histories, targets = read_validation_pairs(path)
    assert histories == [[5, 6], [3], [9]] and targets == [7, 4, 9]
    path.write_text("1 5 x 7\n")
    with pytest.raises(ValueError, match="seq.txt:1: item id .* is not an integer"):
        read_validation_pairs(path)


def test_semantic_id_diagnostics_report():
    torch.manual_seed(0)
    sids = torch.tensor([[[0, 0]], [[0, 1]], [[0, 1]], [[1, 2]], [[2, 3]]])  # (5, 1 modality, 2 levels)
    # Code-derived rows (sum over both levels): items 1, 2 = (1, 1) + 0; item 3 = (1, 0) + (-1, 2) = (0, 2);
    # target item 4 = (1, 0) + 0. Cosine with the target: 0.707, 0.707, 0 (level 1 alone would rank item 3 first).
    codebooks = {"text": torch.zeros(2, 4, 2)}
    codebooks["text"][0, 0] = torch.tensor([1.0, 1.0])
    codebooks["text"][0, 1] = torch.tensor([1.0, 0.0])
    codebooks["text"][0, 2] = torch.tensor([1.0, 0.0])
    codebooks["text"][1, 2] = torch.tensor([-1.0, 2.0])
    # Pre-trained rows: cosine with the target 0.949 > 0.707 > 0.
    emb = {"text": torch.zeros(5, 6)}
    emb["text"][1, :2] = torch.tensor([3.0, 1.0])
    emb["text"][2, :2] = torch.tensor([1.0, 1.0])
    emb["text"][3, :2] = torch.tensor([0.0, 1.0])
    emb["text"][4, :2] = torch.tensor([1.0, 0.0])
    report = semantic_id_diagnostics(sids, codebooks, ["text"], emb, [[1, 2, 3]], [4])
    assert report["num_items"] == 4
    assert report["collision_rate"] == {"text": 0.5, "combined": 0.5}
    assert report["codebook"]["text"]["utilization"] == [3 / 4, 3 / 4]
    tau = report["kendall_tau"]["text"]
    # pairs (1, 3) and (2, 3) concordant, (1, 2) tied in the code-derived ranking: tau-a = 2 / 3, fraction 2 / 3
    # (the pre-trained table against itself would give 1; level 1 alone -2 / 3).
    assert tau["tau_a"] == pytest.approx(2 / 3) and tau["concordant_fraction"] == pytest.approx(2 / 3)
    assert {"gaussian_table_tau_a", "gaussian_table_concordant_fraction", "statistic"} <= set(tau)
    assert set(report["spectrum"]) == {"text_codes", "text_input"}
    assert set(report["embedding_collapse"]) == {"text_sid"}


def test_embedding_collapse_tables_and_plot(tmp_path):
    torch.manual_seed(0)
    sids = torch.randint(0, 4, (41, 2, 2))
    codebooks = {"collaborative": torch.randn(2, 4, 16), "text": torch.randn(2, 4, 16)}
    collaborative = torch.randn(41, 3)
    tables = embedding_collapse_tables(sids, codebooks, ["collaborative", "text"], collaborative)
    assert set(tables) == {"collaborative_projected", "collaborative_sid", "text_sid"}
    assert tables["collaborative_projected"].shape == (40, 16)
    assert spectrum_summary(tables["collaborative_projected"])["dims_99pct_energy"] <= 3  # rank ≤ input dim
    torch.testing.assert_close(tables["text_sid"][0], codebooks["text"][0, sids[1, 1, 0]] + codebooks["text"][1, sids[1, 1, 1]])
    legend = save_spectrum_plot(tables, tmp_path / "spectra.png", width=120, height=80)
    data = (tmp_path / "spectra.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and b"IHDR" in data[:16] and data.endswith(b"IEND\xaeB`\x82")
    import struct
    import zlib

    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (120, 80)
    idat = data[data.index(b"IDAT") + 4 : data.index(b"IEND") - 8]
    assert len(zlib.decompress(idat)) == height * (1 + 3 * width)
    assert [name for name, _ in legend] == list(tables)
