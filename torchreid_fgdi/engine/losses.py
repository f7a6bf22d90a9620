"""CLIP-FGDI's losses, as the authors compute them (docs/method.md), on raw (un-normalised) features."""

from __future__ import annotations

import torch
import torch.nn.functional as F

GUIDE_DIRECTIONS = ("paper", "authors")


def id_loss(scores: list[torch.Tensor], pids: torch.Tensor, label_smooth: float = 0.1) -> torch.Tensor:
    """Label-smoothed cross-entropy summed over the classifiers."""
    return sum(F.cross_entropy(s.float(), pids, label_smoothing=label_smooth) for s in scores)


def _euclidean(x: torch.Tensor) -> torch.Tensor:
    sq = x.pow(2).sum(1, keepdim=True)
    return (sq + sq.t() - 2 * x @ x.t()).clamp(min=1e-12).sqrt()


def batch_hard_triplet(feat: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
    """Soft-margin batch-hard triplet: mean softplus(hardest positive - hardest negative distance)."""
    dist = _euclidean(feat.float())
    same = pids[:, None] == pids[None, :]
    hardest_pos = dist.masked_fill(~same, float("-inf")).amax(1)
    hardest_neg = dist.masked_fill(same, float("inf")).amin(1)
    return F.softplus(hardest_pos - hardest_neg).mean()


def triplet_loss(feats: list[torch.Tensor], pids: torch.Tensor) -> torch.Tensor:
    return sum(batch_hard_triplet(f, pids) for f in feats)


def supcon(a: torch.Tensor, b: torch.Tensor, labels_a: torch.Tensor, labels_b: torch.Tensor, temperature: float = 1.0):
    """Supervised contrastive loss from rows of `a` to rows of `b`; positives share a label."""
    logits = a.float() @ b.float().t() / temperature
    log_prob = logits - logits.logsumexp(1, keepdim=True)
    positives = (labels_a[:, None] == labels_b[None, :]).float()
    return -((positives * log_prob).sum(1) / positives.sum(1)).mean()


def domain_guidance(image: torch.Tensor, invariant: torch.Tensor, relevant: torch.Tensor, direction: str = "paper"):
    """The bidirectional domain-guiding loss on cosine similarities.

    ``'paper'`` pulls the image feature toward its domain-invariant (identity) prompt and pushes
    it from its domain-relevant prompt; ``'authors'`` is what their code computes, the opposite.
    """
    to_invariant = F.cosine_similarity(image.float(), invariant.float(), dim=1, eps=1e-6)
    to_relevant = F.cosine_similarity(image.float(), relevant.float(), dim=1, eps=1e-6)
    if direction == "paper":
        return F.softplus(to_relevant - to_invariant).mean()
    if direction == "authors":
        return F.softplus(to_invariant - to_relevant).mean()
    raise ValueError(f"guide direction must be one of {GUIDE_DIRECTIONS}, got {direction!r}")
