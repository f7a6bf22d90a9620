"""CMC and mAP without sorting the gallery, in bounded memory.

Only the ranks of a query's true matches enter CMC and mAP. The rank of the j-th closest match is
the number of gallery images at a distance up to its own, minus the query's own-camera images of
its identity (torchreid drops those). So each block of queries bins every gallery distance among
the block's few match distances (`torch.searchsorted`, log k per image) and counts the bins,
instead of sorting whole rows (log G per image). Distances are computed block by block from the
features, so no query x gallery matrix is held; `evaluate_rank` does the same on a given matrix.

The numbers are torchreid's `evaluate_rank` (Market-1501 metric): the CMC bit for bit and mAP to
float64 rounding. A row where a match and another identity's image are at exactly the same
distance is sorted with numpy's argsort, as torchreid's is, so ties come out in its order. The
CUHK03 metric samples galleries in ranked order from numpy's global generator, as torchreid does,
so it sorts its blocks to give torchreid's numbers for the same seed.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from .distances import GalleryDistances
from .torchreid_rank import capped_ranks

BLOCK_BYTES = 2**27  # a block's distances and bin numbers (8 bytes a pair) take at most this


def block_rows(gallery_size: int) -> int:
    """Queries per block: as many as `BLOCK_BYTES` holds, 16 to 1024."""
    return max(16, min(1024, BLOCK_BYTES // (8 * max(gallery_size, 1))))


_CUHK03_REPEATS = 10
_SORTED_ROWS = 32  # rows with a tie, sorted together (each sorted row holds ~4 gallery-sized arrays)


class _Matches:
    """Each query's same-identity gallery images (matches in other cameras, junk in its own), padded."""

    def __init__(self, q_pids, q_camids, g_pids, g_camids):
        if len(g_pids) == 0:
            raise ValueError("the gallery is empty; nothing can be ranked")
        self.q_pids, self.q_camids, self.g_camids = q_pids, q_camids, g_camids
        self.by_pid = np.argsort(g_pids, kind="stable")
        pids, starts, counts = np.unique(g_pids[self.by_pid], return_index=True, return_counts=True)
        slot = np.minimum(np.searchsorted(pids, q_pids), len(pids) - 1)
        found = pids[slot] == q_pids
        self.starts, self.counts = np.where(found, starts[slot], 0), np.where(found, counts[slot], 0)

    def block(self, rows: slice) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(gallery index, is a match, is junk), each (queries x most same-identity images)."""
        starts, counts = self.starts[rows], self.counts[rows]
        width = max(1, int(counts.max(initial=0)))
        offset = np.arange(width)[None, :]
        present = offset < counts[:, None]
        index = self.by_pid[np.where(present, starts[:, None] + offset, 0)]
        same_cam = self.g_camids[index] == self.q_camids[rows, None]
        return torch.from_numpy(index), torch.from_numpy(present & ~same_cam), torch.from_numpy(present & same_cam)


def _blocks(n: int, size: int) -> Iterator[slice]:
    return (slice(start, min(start + size, n)) for start in range(0, n, size))


def match_ranks(
    dist: torch.Tensor, index: torch.Tensor, match: torch.Tensor, junk: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(1-based rank among the gallery without junk of each query's matches, closest first; whether
    the row has a distance tie involving a match, where only a sort gives torchreid's order).

    Entries past a query's number of matches are undefined.
    """
    if not torch.isfinite(dist.sum(1)).all():  # one reduction: a NaN or inf anywhere makes its row's sum one
        raise ValueError("the distance matrix holds NaN or infinite values; no ranking can be computed from them")
    same = dist.gather(1, index)
    inf = torch.full_like(same, float("inf"))
    matched = torch.where(match, same, inf).sort(1).values
    width = matched.shape[1]
    # Each match distance and the next float above it: an image is closer than P when it falls below
    # P's edge, at most as far when it falls below the next one; one search gives both.
    edges = torch.cat([matched, torch.nextafter(matched, inf)], 1).sort(1).values.contiguous()
    bins = torch.searchsorted(edges, dist, right=True, out_int32=True)  # per image: the edges at or below it
    bins += torch.arange(len(dist), dtype=torch.int32).unsqueeze(1) * (2 * width + 1)  # int32: no wide copy
    below = torch.bincount(bins.view(-1), minlength=len(dist) * (2 * width + 1)).view(len(dist), -1).cumsum(1)
    before = below.gather(1, torch.searchsorted(edges, matched))  # images strictly closer than each match
    up_to = below.gather(1, torch.searchsorted(edges, torch.nextafter(matched, inf)))
    n = match.sum(1)
    own = torch.where(match | junk, same, inf)  # the query's identity: its matches and its junk
    # A tie with another identity's image is the one whose order counts (junk is dropped, and two
    # matches in either order give the same ranks).
    others_tied = up_to - before - (own.unsqueeze(1) == matched.unsqueeze(2)).sum(2)
    tied = torch.where(torch.arange(width) < n.unsqueeze(1), others_tied, 0).sum(1) > 0
    others_before = before - (own.unsqueeze(1) < matched.unsqueeze(2)).sum(2)
    return others_before + torch.arange(1, width + 1), tied


def _sorted_stats(dist: np.ndarray, q_pids, q_camids, g_pids, g_camids) -> tuple[np.ndarray, np.ndarray]:
    """(AP, rank of the first match) of rows with ties, from torchreid's own sort."""
    order = np.argsort(dist, axis=1)
    gp, gc = g_pids[order], g_camids[order]
    match = gp == q_pids[:, None]
    keep = ~(match & (gc == q_camids[:, None]))
    hit = match & keep
    kept_rank = np.cumsum(keep, 1, dtype=np.int64)
    cum_hits = np.cumsum(hit, 1, dtype=np.int64)
    ap = np.where(hit, cum_hits / np.maximum(kept_rank, 1), 0.0).sum(1) / np.maximum(hit.sum(1), 1)
    first = np.where(hit, kept_rank, np.iinfo(np.int64).max).min(1)
    return ap, first


class Ranker:
    """CMC and mAP of a query set, from blocks of its distance rows added in query order.

    Re-ranking and the feature path feed it blocks as they compute them, so no query x gallery
    matrix is ever whole.
    """

    def __init__(
        self,
        q_pids: np.ndarray,
        g_pids: np.ndarray,
        q_camids: np.ndarray,
        g_camids: np.ndarray,
        max_rank: int = 50,
        use_metric_cuhk03: bool = False,
    ):
        q_pids, g_pids, q_camids, g_camids = map(np.asarray, (q_pids, g_pids, q_camids, g_camids))
        self.matches = _Matches(q_pids, q_camids, g_pids, g_camids)
        self.g_pids, self.cuhk03 = g_pids, use_metric_cuhk03
        self.max_rank = capped_ranks(max_rank, q_pids, g_pids, q_camids, g_camids, use_metric_cuhk03)
        self.hits = np.zeros(self.max_rank, dtype=np.int64)
        self.ap_sum = 0.0
        self.cuhk03_rows: list[np.ndarray] = []
        self.valid = 0
        self.next_row = 0

    def add(self, dist: torch.Tensor) -> None:
        """The distances of the next ``len(dist)`` queries to the whole gallery."""
        rows = slice(self.next_row, self.next_row + len(dist))
        self.next_row = rows.stop
        matches = self.matches
        index, match, junk = matches.block(rows)
        ranks, tied = match_ranks(dist, index, match, junk)
        ranks = ranks.double()
        n = match.sum(1)
        j = torch.arange(1, ranks.shape[1] + 1, dtype=torch.float64)
        ap = torch.where(j <= n.unsqueeze(1), j / ranks, 0.0).sum(1) / n.clamp(min=1)
        first = ranks[:, 0]
        q_pids, q_camids = matches.q_pids[rows], matches.q_camids[rows]
        for part in torch.nonzero(tied).view(-1).split(_SORTED_ROWS):  # a few rows at a time: sorting is costly
            i = part.numpy()
            ap_t, first_t = _sorted_stats(dist[part].numpy(), q_pids[i], q_camids[i], self.g_pids, matches.g_camids)
            ap[part], first[part] = torch.from_numpy(ap_t), torch.from_numpy(first_t).double()
        valid = n > 0
        self.ap_sum += float(ap[valid].sum())
        self.valid += int(valid.sum())
        if not self.cuhk03:
            self.hits += (first[valid].numpy()[:, None] <= np.arange(1, self.max_rank + 1)[None, :]).sum(0)
            return
        v = valid.numpy()
        order = np.argsort(dist[valid].numpy(), axis=1)
        for row, q_pid, q_camid in zip(order, q_pids[v], q_camids[v]):
            self.cuhk03_rows.append(_cuhk03_cmc(row, q_pid, q_camid, self.g_pids, matches.g_camids, self.max_rank))

    def result(self) -> tuple[np.ndarray, float]:
        """(CMC, mAP) over every query added; all of them must have been."""
        if self.next_row != len(self.matches.q_pids):
            raise ValueError(f"distances of {self.next_row} of {len(self.matches.q_pids)} queries were added")
        if self.valid == 0:
            raise ValueError("no query has a valid gallery match (its identity from another camera)")
        if self.cuhk03:
            length = min(len(r) for r in self.cuhk03_rows)
            cmc = np.asarray([r[:length] for r in self.cuhk03_rows], dtype=np.float32).sum(0) / float(self.valid)
        else:
            cmc = self.hits.astype(np.float32) / float(self.valid)
        return cmc, self.ap_sum / self.valid


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
    ranker = Ranker(q_pids, g_pids, q_camids, g_camids, max_rank, use_metric_cuhk03)
    for rows in _blocks(len(q_pids), block_rows(len(g_pids))):
        ranker.add(torch.from_numpy(np.ascontiguousarray(distmat[rows])))
    return ranker.result()


def rank_features(
    query: tuple[torch.Tensor, np.ndarray, np.ndarray],
    gallery: tuple[torch.Tensor, np.ndarray, np.ndarray],
    dist_metric: str = "euclidean",
    normalize_feature: bool = False,
    max_rank: int = 50,
    use_metric_cuhk03: bool = False,
    chunk: int | None = None,
) -> tuple[np.ndarray, float]:
    """CMC and mAP from features, one block of `chunk` queries at a time (default `block_rows`)."""
    qf, q_pids, q_camids = query
    gf, g_pids, g_camids = gallery
    ranker = Ranker(q_pids, g_pids, q_camids, g_camids, max_rank, use_metric_cuhk03)
    distances = GalleryDistances(gf, dist_metric, normalize_feature)
    for rows in _blocks(len(q_pids), chunk or block_rows(len(g_pids))):
        ranker.add(distances(qf[rows]))
    return ranker.result()
