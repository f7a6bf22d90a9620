"""Query x gallery distances as every ranking here computes them, so evaluation, re-ranking and the
ranked-results pictures cannot disagree on what `test.normalize_feature` means.

The arithmetic is torchreid's `compute_distance_matrix`, value for value; what depends only on
the gallery (its squared norms, its normalised features) is computed once, not per query block.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

METRICS = ("euclidean", "cosine")
_NORM_ROWS = 4096  # gallery rows squared at a time: no temporary as large as the gallery


class GalleryDistances:
    """Distances from query blocks to one gallery (torchreid's squared euclidean or cosine)."""

    def __init__(self, gf: torch.Tensor, dist_metric: str = "euclidean", normalize_feature: bool = False):
        if dist_metric not in METRICS:
            raise ValueError(f"unknown distance metric {dist_metric!r}; choose one of {METRICS}")
        self.metric, self.normalize = dist_metric, normalize_feature
        gf = F.normalize(gf, dim=1) if normalize_feature else gf
        if dist_metric == "cosine":
            gf = F.normalize(gf, p=2, dim=1)
        self.gallery_t = gf.t()
        self.squared_norms = None
        if dist_metric == "euclidean":
            self.squared_norms = torch.cat([rows.pow(2).sum(dim=1) for rows in gf.split(_NORM_ROWS)])

    def __call__(self, qf: torch.Tensor) -> torch.Tensor:
        qf = F.normalize(qf, dim=1) if self.normalize else qf
        if self.metric == "cosine":
            return 1 - torch.mm(F.normalize(qf, p=2, dim=1), self.gallery_t)
        dist = qf.pow(2).sum(dim=1, keepdim=True) + self.squared_norms.unsqueeze(0)
        return dist.addmm_(qf, self.gallery_t, beta=1, alpha=-2)


def distance_matrix(
    qf: torch.Tensor, gf: torch.Tensor, dist_metric: str = "euclidean", normalize_feature: bool = False
) -> np.ndarray:
    """torchreid's `compute_distance_matrix` of `qf` x `gf`, on L2-normalised features when
    `normalize_feature` (torchreid's ``test.normalize_feature``)."""
    return GalleryDistances(gf, dist_metric, normalize_feature)(qf).numpy()
