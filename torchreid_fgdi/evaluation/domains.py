"""How well features tell their source domain, and what chance is for each measure.

The run's diagnostics (`engine.diagnostics`) ask this of text features (can a domain classifier
tell an identity's domain from its prompt?) and of test image features (are an image's nearest
neighbours from its own domain?). A domain-invariant feature scores near chance.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch

from .distances import distance_matrix

NEIGHBOURS = 10  # the k of `neighbour_domain_share`
NEAR_CHANCE_FLOOR = 0.05  # `near_chance`'s smallest margin: 5 points, however many items were measured


def majority_share(labels: Sequence) -> float:
    """The accuracy of always answering the commonest label: chance for a classifier's accuracy on
    these items (1 / classes when they are balanced, more when not, which 1 / classes would hide)."""
    return max(Counter(labels).values()) / len(labels)


def near_chance(value: float, chance: float, items: int) -> bool:
    """Whether an accuracy on `items` items is within two binomial standard errors of `chance`
    (at least `NEAR_CHANCE_FLOOR`): what a classifier that cannot tell the labels apart scores."""
    margin = max(2 * math.sqrt(chance * (1 - chance) / items), NEAR_CHANCE_FLOOR)
    return value < chance + margin


def neighbour_domain_share(
    features: torch.Tensor,
    domains: Sequence[str],
    k: int = NEIGHBOURS,
    dist_metric: str = "euclidean",
    normalize_feature: bool = False,
) -> tuple[float, float]:
    """(share, chance): the mean fraction of each image's `k` nearest other images (by the test's
    distance) that come from its own domain, and that fraction for features that ignore the
    domain (each neighbour drawn at random from the other images: sum n_d (n_d - 1) / N (N - 1))."""
    names = np.asarray(domains)
    n = len(names)
    if n <= k:
        raise ValueError(f"{n} images cannot each have {k} nearest neighbours among the others")
    dist = distance_matrix(features.float(), features.float(), dist_metric, normalize_feature)
    np.fill_diagonal(dist, np.inf)  # leave-one-out: an image is not its own neighbour
    nearest = np.argpartition(dist, k, axis=1)[:, :k]
    share = float((names[nearest] == names[:, None]).mean())
    counts = np.array(list(Counter(domains).values()), dtype=np.float64)
    chance = float((counts * (counts - 1)).sum() / (n * (n - 1)))
    return share, chance
