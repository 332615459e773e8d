"""The contrastive loss and the retrieval metrics (Recall@K, mean reciprocal rank)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def info_nce(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor,
             negatives: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP's loss) over a batch of matching pairs.

    Args:
        image: ``(B, E)`` image embeddings; ``text``: ``(B, E)`` embeddings of their captions (row i matches i).
        logit_scale: the log of the inverse temperature (learned; CLIP clamps it at log 100).
        negatives: optional ``(M, E)`` extra captions (hard negatives), false of every image: they join the
            image-to-text softmax as further columns, and the text-to-image direction is unchanged.

    Returns the mean of the image-to-text and text-to-image cross-entropies.
    """
    if image.shape != text.shape or image.ndim != 2:
        raise ValueError(f"image and text embeddings must both be (B, E), got {tuple(image.shape)} and "
                         f"{tuple(text.shape)}")
    scale = logit_scale.exp()
    img, txt = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
    logits = scale * img @ txt.T
    labels = torch.arange(len(img), device=img.device)
    t2i = F.cross_entropy(logits.T, labels)
    if negatives is not None and len(negatives):
        logits = torch.cat([logits, scale * img @ F.normalize(negatives, dim=-1).T], dim=1)
    return 0.5 * (F.cross_entropy(logits, labels) + t2i)


def ranks(sim: np.ndarray, positive: np.ndarray | None = None) -> np.ndarray:
    """1-based rank of the best-ranked positive in each row of a ``(Q, N)`` similarity matrix.

    ``positive`` is a boolean ``(Q, N)`` mask (default: the diagonal). Ties count against the query:
    a negative scoring equal to the best positive ranks above it. A row without positives raises.
    """
    sim = np.asarray(sim, dtype=np.float64)
    if sim.ndim != 2:
        raise ValueError(f"similarity must be a (queries, items) matrix, got shape {sim.shape}")
    if positive is None:
        if sim.shape[0] != sim.shape[1]:
            raise ValueError(f"a non-square similarity {sim.shape} needs an explicit positive mask")
        positive = np.eye(len(sim), dtype=bool)
    positive = np.asarray(positive, dtype=bool)
    if positive.shape != sim.shape:
        raise ValueError(f"positive mask shape {positive.shape} differs from similarity shape {sim.shape}")
    if not positive.any(1).all():
        raise ValueError(f"queries {np.flatnonzero(~positive.any(1))[:5].tolist()} have no positive item")
    best = np.where(positive, sim, -np.inf).max(1)
    return 1 + (np.where(positive, -np.inf, sim) >= best[:, None]).sum(1)


def recall_at_k(sim: np.ndarray, k: int, positive: np.ndarray | None = None) -> float:
    """Fraction of queries whose best positive is among the top ``k`` items."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return float((ranks(sim, positive) <= k).mean())


def mean_reciprocal_rank(sim: np.ndarray, positive: np.ndarray | None = None) -> float:
    return float((1.0 / ranks(sim, positive)).mean())


def retrieval_report(sim: np.ndarray, positive: np.ndarray | None = None, ks=(1, 5, 10)) -> dict[str, float]:
    """Image-to-text and text-to-image Recall@K and MRR of an ``(images, texts)`` similarity matrix."""
    pos_t = None if positive is None else np.asarray(positive).T
    out = {}
    for name, s, p in (("i2t", sim, positive), ("t2i", np.asarray(sim).T, pos_t)):
        for k in ks:
            out[f"{name}_R@{k}"] = recall_at_k(s, k, p)
        out[f"{name}_MRR"] = mean_reciprocal_rank(s, p)
    return out
