"""The contrastive loss and the retrieval metrics against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vlagym.vl.metrics import info_nce, mean_reciprocal_rank, ranks, recall_at_k, retrieval_report


def test_info_nce_matches_hand_computed_case():
    # Unit vectors: image 0 = (1, 0), image 1 = (0, 1); text 0 = (1, 0), text 1 = (0.6, 0.8). Scale e^0 = 1.
    img = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # norms do not matter
    txt = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    # logits (image rows, text columns) = [[1, 0.6], [0, 0.8]]
    i2t = 0.5 * ((-1 + math.log(math.e**1 + math.e**0.6)) + (-0.8 + math.log(math.e**0 + math.e**0.8)))
    # columns as rows: [[1, 0], [0.6, 0.8]]
    t2i = 0.5 * ((-1 + math.log(math.e**1 + math.e**0)) + (-0.8 + math.log(math.e**0.6 + math.e**0.8)))
    got = info_nce(img, txt, torch.tensor(0.0))
    assert got.item() == pytest.approx(0.5 * (i2t + t2i), abs=1e-6)


def test_info_nce_temperature_and_hard_negatives():
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    scale = torch.tensor(math.log(10.0))
    base = info_nce(img, txt, scale)
    # logits [[10, 0], [0, 10]] in both directions
    assert base.item() == pytest.approx(-10 + math.log(math.e**10 + 1), abs=1e-6)
    # A hard negative equal to image 0's direction ties its positive: image 0's row gains a column of 10.
    neg = torch.tensor([[1.0, 0.0]])
    with_neg = info_nce(img, txt, scale, neg)
    row0 = -10 + math.log(2 * math.e**10 + 1)
    row1 = -10 + math.log(math.e**10 + 2)
    t2i = -10 + math.log(math.e**10 + 1)
    assert with_neg.item() == pytest.approx(0.5 * (0.5 * (row0 + row1) + t2i), abs=1e-6)
    assert with_neg.item() > base.item()


def test_info_nce_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="both be"):
        info_nce(torch.zeros(3, 4), torch.zeros(2, 4), torch.tensor(0.0))


def test_recall_and_mrr_on_hand_made_matrix():
    sim = np.array([
        [0.9, 0.1, 0.0, 0.2],   # positive (0) ranks 1
        [0.8, 0.5, 0.1, 0.0],   # positive (1) ranks 2
        [0.3, 0.2, 0.1, 0.4],   # positive (2) ranks 4
        [0.0, 0.0, 0.0, 0.0],   # ties count against the query: rank 4
    ])
    assert ranks(sim).tolist() == [1, 2, 4, 4]
    assert recall_at_k(sim, 1) == 0.25
    assert recall_at_k(sim, 2) == 0.5
    assert recall_at_k(sim, 4) == 1.0
    assert mean_reciprocal_rank(sim) == pytest.approx((1 + 0.5 + 0.25 + 0.25) / 4)
    rep = retrieval_report(sim, ks=(1,))
    # columns: text 0 -> image 0 (0.9) ranks 1; text 1 -> image 1 (0.5) ranks 1; text 2 -> image 2 (0.1) ties
    # image 1 -> 2; text 3 -> image 3 (0.0) below 0.2, 0.4 and a tie at 0.0 -> 4
    assert rep["t2i_MRR"] == pytest.approx((1 + 1 + 1 / 2 + 1 / 4) / 4)
    assert rep["i2t_R@1"] == 0.25


def test_positive_mask_counts_duplicate_captions():
    sim = np.array([[0.1, 0.9, 0.0], [0.2, 0.1, 0.3]])
    positive = np.array([[True, True, False], [False, True, False]])
    assert ranks(sim, positive).tolist() == [1, 3]
    with pytest.raises(ValueError, match="no positive"):
        ranks(sim, np.zeros_like(positive))
    with pytest.raises(ValueError, match="explicit positive"):
        ranks(sim)
    with pytest.raises(ValueError, match="k must be"):
        recall_at_k(np.eye(2), 0)
