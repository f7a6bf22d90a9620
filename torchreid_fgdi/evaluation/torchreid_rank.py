"""torchreid's rank metric on galleries with fewer usable images than the CMC is long.

torchreid's Python Market-1501 metric cuts each query's CMC at `max_rank` after dropping the
gallery images of the query's own identity and camera; when fewer than `max_rank` remain, the
curves differ in length and stacking them raises ``ValueError: ... inhomogeneous shape``. Ranks
are capped at the smallest usable gallery here, so the CMC is shorter but exact.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
from torchreid.reid import metrics


def usable_ranks(
    q_pids: np.ndarray, q_camids: np.ndarray, g_pids: np.ndarray, g_camids: np.ndarray, max_rank: int
) -> int:
    """`max_rank` capped at the smallest gallery left to a query once its identity's images from
    its own camera are dropped (counted per (pid, camid) pair: no query x gallery matrix)."""
    pairs, counts = np.unique(np.stack([g_pids, g_camids], 1), axis=0, return_counts=True)
    own = dict(zip(map(tuple, pairs.tolist()), counts.tolist()))
    dropped = max((own.get(key, 0) for key in zip(q_pids.tolist(), q_camids.tolist())), default=0)
    return max(1, min(max_rank, len(g_pids) - dropped))


def capped_ranks(max_rank: int, q_pids, g_pids, q_camids, g_camids, use_metric_cuhk03: bool) -> int:
    """The ranks the metric can give (the CUHK03 metric samples one image per identity: no cap)."""
    return max_rank if use_metric_cuhk03 else usable_ranks(q_pids, q_camids, g_pids, g_camids, max_rank)


def evaluate_rank(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 50,
    use_metric_cuhk03: bool = False,
    use_cython: bool = True,
) -> tuple[np.ndarray, float]:
    """torchreid's `evaluate_rank` (CMC, mAP) with the CMC cut at the usable gallery size.

    At a capped `max_rank` torchreid's metric gives the same numbers whether or not
    `torchreid_fgdi.integration.compat` has replaced it with `for_torchreid_engines`.
    """
    capped = capped_ranks(max_rank, q_pids, g_pids, q_camids, g_camids, use_metric_cuhk03)
    return metrics.evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, capped, use_metric_cuhk03, use_cython)


def for_torchreid_engines(torchreid_evaluate_rank: Callable) -> Callable:
    """torchreid's `evaluate_rank` as its engines need it on a small gallery: ranks capped, then the
    CMC padded with NaN up to `max_rank`, since the engines print fixed ranks (1, 5, 10, 20) that
    such a gallery does not define (NaN, not a made-up value)."""

    @functools.wraps(torchreid_evaluate_rank)
    def evaluate_rank(
        distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50, use_metric_cuhk03=False, use_cython=True
    ):
        capped = capped_ranks(max_rank, q_pids, g_pids, q_camids, g_camids, use_metric_cuhk03)
        cmc, mAP = torchreid_evaluate_rank(
            distmat, q_pids, g_pids, q_camids, g_camids, capped, use_metric_cuhk03, use_cython
        )
        return np.concatenate([cmc, np.full(max(0, max_rank - len(cmc)), np.nan, dtype=cmc.dtype)]), mAP

    return evaluate_rank
