"""CMC and mAP without torchreid's per-query Python loop, and in bounded memory.

`evaluate_rank` takes the same arguments as torchreid's and returns the same numbers: the CMC
bit for bit, mAP to float64 rounding (torchreid sums each query's precisions over its kept
gallery, here over all gallery positions with zeros between, so the last bit may differ). The
CUHK03 metric draws its random gallery samples in torchreid's order from numpy's global
generator, so it also gives torchreid's numbers for the same seed. `rank_features` computes
distances query chunk by query chunk, so no query x gallery matrix is ever held whole.
"""

from __future__ import annotations

import numpy as np
import torch

from .distances import distance_matrix
from .torchreid_rank import usable_ranks

CHUNK = 256
_CUHK03_REPEATS = 10


def _market_stats(order, q_pids, q_camids, g_pids, g_camids):
    """For queries with a valid match: AP and the rank (1-based, among kept images) of the first hit."""
    gp, gc = g_pids[order], g_camids[order]
    match = gp == q_pids[:, None]
    keep = ~(match & (gc == q_camids[:, None]))
    hit = match & keep
    valid = hit.any(1)
    hit, keep = hit[valid], keep[valid]
    kept_rank = np.cumsum(keep, 1, dtype=np.int64)
    cum_hits = np.cumsum(hit, 1, dtype=np.int64)
    ap = np.where(hit, cum_hits / np.maximum(kept_rank, 1), 0.0).sum(1) / hit.sum(1)
    first = np.where(hit, kept_rank, np.iinfo(np.int64).max).min(1)
    return valid, ap, first


def _cuhk03_cmc(row, q_pid, q_camid, g_pids, g_camids, max_rank: int) -> np.ndarray:
    """One query's single-gallery-shot CMC: each repeat samples one kept image per gallery identity,
    drawing from numpy's global generator in torchreid's order (identities by first appearance)."""
    gp, gc = g_pids[row], g_camids[row]
    kept = gp[~((gp == q_pid) & (gc == q_camid))]
    pids, first_pos, group = np.unique(kept, return_index=True, return_inverse=True)
    by_position = np.argsort(group, kind="stable")  # kept positions grouped by identity, ascending
    counts = np.bincount(group)
    starts = np.cumsum(counts) - counts
    appearance = np.argsort(first_pos, kind="stable")
    sizes, starts = counts[appearance], starts[appearance]
    own = int(np.flatnonzero(pids[appearance] == q_pid)[0])
    ranks = np.arange(1, min(max_rank, len(pids)) + 1)
    cmc = np.zeros(len(ranks), dtype=np.float32)
    for _ in range(_CUHK03_REPEATS):
        sampled = by_position[starts + np.random.randint(0, sizes)]
        cmc += (1 + (sampled < sampled[own]).sum() <= ranks).astype(np.float32)
    return cmc / _CUHK03_REPEATS


class _Accumulator:
    """Per-query results, added chunk by chunk in query order."""

    def __init__(self, max_rank: int, cuhk03: bool):
        self.max_rank, self.cuhk03 = max_rank, cuhk03
        self.hits = np.zeros(max_rank, dtype=np.int64)
        self.aps: list[np.ndarray] = []
        self.cuhk03_rows: list[np.ndarray] = []
        self.valid = 0

    def add(self, order, q_pids, q_camids, g_pids, g_camids) -> None:
        valid, ap, first = _market_stats(order, q_pids, q_camids, g_pids, g_camids)
        self.aps.append(ap)
        self.valid += int(valid.sum())
        if not self.cuhk03:
            self.hits += (first[:, None] <= np.arange(1, self.max_rank + 1)[None, :]).sum(0)
            return
        for row, q_pid, q_camid in zip(order[valid], q_pids[valid], q_camids[valid]):
            self.cuhk03_rows.append(_cuhk03_cmc(row, q_pid, q_camid, g_pids, g_camids, self.max_rank))

    def result(self) -> tuple[np.ndarray, float]:
        if self.valid == 0:
            raise ValueError("no query has a valid gallery match (its identity from another camera)")
        if self.cuhk03:
            length = min(len(r) for r in self.cuhk03_rows)
            cmc = np.asarray([r[:length] for r in self.cuhk03_rows], dtype=np.float32).sum(0) / float(self.valid)
        else:
            cmc = self.hits.astype(np.float32) / float(self.valid)
        return cmc, float(np.mean(np.concatenate(self.aps)))


def evaluate_rank(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 50,
    use_metric_cuhk03: bool = False,
) -> tuple[np.ndarray, float]:
    """torchreid's `evaluate_rank` (Market-1501 or CUHK03 metric) on a distance matrix."""
    acc = _Accumulator(usable_ranks(q_pids, q_camids, g_pids, g_camids, max_rank), use_metric_cuhk03)
    for start in range(0, len(q_pids), CHUNK):
        rows = slice(start, start + CHUNK)
        acc.add(np.argsort(distmat[rows], axis=1), q_pids[rows], q_camids[rows], g_pids, g_camids)
    return acc.result()


def rank_features(
    query: tuple[torch.Tensor, np.ndarray, np.ndarray],
    gallery: tuple[torch.Tensor, np.ndarray, np.ndarray],
    dist_metric: str = "euclidean",
    normalize_feature: bool = False,
    max_rank: int = 50,
    use_metric_cuhk03: bool = False,
    chunk: int = CHUNK,
) -> tuple[np.ndarray, float]:
    """CMC and mAP from features, one chunk of queries at a time (memory: chunk x gallery)."""
    qf, q_pids, q_camids = query
    gf, g_pids, g_camids = gallery
    acc = _Accumulator(usable_ranks(q_pids, q_camids, g_pids, g_camids, max_rank), use_metric_cuhk03)
    for start in range(0, len(q_pids), chunk):
        rows = slice(start, start + chunk)
        dist = distance_matrix(qf[rows], gf, dist_metric, normalize_feature)
        acc.add(np.argsort(dist, axis=1), q_pids[rows], q_camids[rows], g_pids, g_camids)
    return acc.result()
