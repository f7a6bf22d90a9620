"""Query x gallery distances as every ranking here computes them, so evaluation, re-ranking and the
ranked-results pictures cannot disagree on what `test.normalize_feature` means."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
import torchreid


def distance_matrix(
    qf: torch.Tensor, gf: torch.Tensor, dist_metric: str = "euclidean", normalize_feature: bool = False
) -> np.ndarray:
    """torchreid's `compute_distance_matrix` of `qf` x `gf`, on L2-normalised features when
    `normalize_feature` (torchreid's ``test.normalize_feature``)."""
    if normalize_feature:
        qf, gf = F.normalize(qf, dim=1), F.normalize(gf, dim=1)
    return torchreid.metrics.compute_distance_matrix(qf, gf, dist_metric).numpy()
