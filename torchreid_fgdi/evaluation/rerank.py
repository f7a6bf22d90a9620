"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) in memory bounded by ``test.rerank_memory_gib``.

torchreid's `re_ranking` takes the same steps on dense (Q+G)^2 matrices (distances, their argsort,
V, V after query expansion): tens of GiB at MSMT17 size. Here the Q+G images' distances are
computed a block of rows at a time and only each row's k1+1 nearest and its maximum are kept; V
is sparse (a row holds the image's expanded k-reciprocal set, a few dozen entries); the Jaccard
part is computed for a block of queries at a time through the gallery's inverted index (the
columns of V), and each block of final distances goes straight to the ranking.

The arithmetic is torchreid's: squared distances divided by the row's maximum over query and
gallery, k-reciprocal sets with the 2/3 expansion rule, weights exp(-distance) normalised to sum
to 1, query expansion as the mean of the k2 nearest rows of V, Jaccard distance 1 - m / (2 - m)
with m the sum of element-wise minima, final = (1 - lambda) * Jaccard + lambda * distance. The
results agree with torchreid's to float32 rounding. Where distances tie exactly (duplicate images)
at the end of a neighbour list, the row is ordered by numpy's argsort of the whole row as
torchreid's is, so the same tied images fall inside the list.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp
import torch

from .distances import GalleryDistances

K1, K2, LAMBDA = 20, 6, 0.3
DEFAULT_MEMORY_GIB = 2.0
_SETS_ROWS = 2048  # rows per block when building the k-reciprocal sets: a few MiB, well inside any budget
_WEIGHT_ROWS = 64  # rows per block when weighting them: the distances to their union of members
_PAIR_BYTES = 48  # per (query entry, gallery entry) pair of the Jaccard sum: indices, values, bincount keys


class _Images:
    """The query and the gallery as one set of Q+G images (query first), without concatenating them."""

    def __init__(self, qf: torch.Tensor, gf: torch.Tensor, dist_metric: str, normalize_feature: bool):
        self.qf, self.gf, self.metric, self.normalize = qf, gf, dist_metric, normalize_feature
        self.num_query, self.total = len(qf), len(qf) + len(gf)
        self.to_query = GalleryDistances(qf, dist_metric, normalize_feature)
        self.to_gallery = GalleryDistances(gf, dist_metric, normalize_feature)

    def features(self, index: np.ndarray) -> torch.Tensor:
        """Features of images `index` (sorted ascending)."""
        split = int(np.searchsorted(index, self.num_query))
        q, g = torch.from_numpy(index[:split]), torch.from_numpy(index[split:] - self.num_query)
        return torch.cat([self.qf[q], self.gf[g]])

    def blocks(self, rows: int) -> Iterator[tuple[slice, torch.Tensor]]:
        """(image rows, their features) in blocks that never straddle the query / gallery boundary."""
        for offset, feats in ((0, self.qf), (self.num_query, self.gf)):
            for start in range(0, len(feats), rows):
                block = feats[start : start + rows]
                yield slice(offset + start, offset + start + len(block)), block

    def squared(self, feats: torch.Tensor) -> torch.Tensor:
        """Squared distances (torchreid squares the distance matrix it is given) to all Q+G images."""
        dist = torch.cat([self.to_query(feats), self.to_gallery(feats)], 1)
        return dist.mul_(dist)


def _nearest(images: _Images, k: int, cuts: tuple[int, ...], row_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """(each image's k nearest images, nearest first; each row's largest squared distance).

    Only the sets of the first `cuts` neighbours count. Where an exact tie straddles a cut, which
    images fall inside depends on the sort, so those rows are ordered by numpy's argsort of the
    whole row, as torchreid's `re_ranking` orders every row (duplicate images make such ties).
    """
    rows = max(1, row_bytes // (images.total * 4 * 4))
    inside = np.asarray([c for c in cuts if c < images.total], dtype=np.int64)  # cuts with an image past them
    width = min(k + 1, images.total)  # one past the last cut: is the next image tied with it?
    nearest = np.empty((images.total, k), dtype=np.int64)
    row_max = np.empty(images.total, dtype=np.float32)
    for block, feats in images.blocks(rows):
        dist = images.squared(feats)
        top = dist.max(1).values
        dist = dist.div_(top.unsqueeze(1))
        values, index = dist.topk(width, 1, largest=False)
        index = index.numpy()
        tied = torch.nonzero((values[:, inside - 1] == values[:, inside]).any(1)).view(-1)
        if len(tied):
            index[tied.numpy()] = np.argsort(dist[tied].numpy(), 1)[:, :width]
        nearest[block] = index[:, :k]
        row_max[block] = top.numpy()
    return nearest, row_max


def _half(k1: int) -> int:
    """The size of a member's own reciprocal set in the expansion rule (torchreid's round(k1/2))."""
    return int(np.around(k1 / 2.0))


def _reciprocal(nearest: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Which of `rows`' k+1 nearest have the row among their own k+1 nearest."""
    forward = nearest[rows, : k + 1]
    return (nearest[forward, : k + 1] == rows[:, None, None]).any(2)


def _expanded_sets(nearest: np.ndarray, rows: np.ndarray, k1: int) -> np.ndarray:
    """Each row's k-reciprocal set with the expansion rule, as (rows x width) indices, -1 past the end.

    A member's own half-size (round(k1/2)) reciprocal set joins when more than 2/3 of it is
    already in the row's set.
    """
    half = _half(k1)
    width = min(k1 + 1, nearest.shape[1])
    members = np.where(_reciprocal(nearest, rows, k1), nearest[rows, :width], -1)  # rows x (k1+1)
    safe = np.maximum(members, 0)
    sub = nearest[safe, : half + 1]  # rows x (k1+1) x (half+1): each member's nearest
    sub_ok = _reciprocal(nearest, safe.reshape(-1), half).reshape(sub.shape) & (members >= 0)[:, :, None]
    inside = (sub[:, :, :, None] == members[:, None, None, :]).any(3) & sub_ok
    joins = inside.sum(2) > 2.0 / 3 * sub_ok.sum(2)
    added = np.where(sub_ok & joins[:, :, None], sub, -1).reshape(len(rows), -1)
    merged = np.sort(np.concatenate([members, added], 1), 1)
    merged[:, 1:][merged[:, 1:] == merged[:, :-1]] = -1  # duplicates: keep one
    return merged


def _v(images: _Images, nearest: np.ndarray, row_max: np.ndarray, k1: int) -> sp.csr_matrix:
    """V: row i holds image i's expanded k-reciprocal set, weighted by exp(-distance), summing to 1."""
    counts, indices, data = [], [], []
    for start in range(0, images.total, _SETS_ROWS):
        rows = np.arange(start, min(start + _SETS_ROWS, images.total))
        sets = _expanded_sets(nearest, rows, k1)
        for s in range(0, len(rows), _WEIGHT_ROWS):
            part, members = rows[s : s + _WEIGHT_ROWS], sets[s : s + _WEIGHT_ROWS]
            present = members >= 0
            union = np.unique(members[present])  # the distances needed: to these images only
            dist = GalleryDistances(images.features(union), images.metric, images.normalize)(images.features(part))
            dist = dist.mul_(dist).div_(torch.from_numpy(row_max[part]).unsqueeze(1)).numpy()
            picked = np.take_along_axis(dist, np.searchsorted(union, np.maximum(members, 0)), 1)
            weight = np.where(present, np.exp(-picked), np.float32(0))
            weight /= weight.sum(1, keepdims=True)
            counts.append(present.sum(1))
            indices.append(members[present])
            data.append(weight[present])
    indptr = np.concatenate([[0], np.cumsum(np.concatenate(counts))])
    shape = (images.total, images.total)
    return sp.csr_matrix((np.concatenate(data), np.concatenate(indices), indptr), shape=shape)


def _query_expansion(v: sp.csr_matrix, nearest: np.ndarray, k2: int) -> sp.csr_matrix:
    """Each row of V replaced by the mean of the rows of its k2 nearest images (itself included)."""
    if k2 == 1:
        return v
    near = nearest[:, :k2]
    width = near.shape[1]
    pick = sp.csr_matrix(
        (np.ones(near.size, dtype=np.float32), near.ravel(), np.arange(0, near.size + 1, width)), shape=v.shape
    )
    mean = (pick @ v).tocsr()
    mean.data /= np.float32(width)
    return mean


class Reranked:
    """Re-ranked query x gallery distances, computed a block of query rows at a time when asked for.

    ``rerank[rows]`` (a slice) is a float32 array, so the object can stand for the matrix where a
    ranking reads it a block of rows at a time. ``memory_gib`` bounds the blocks' working memory
    (at least one row each); the features and the sparse V (tens of entries per image, about a
    kilobyte with its inverted index) come on top.
    """

    def __init__(
        self,
        qf: torch.Tensor,
        gf: torch.Tensor,
        dist_metric: str = "euclidean",
        normalize_feature: bool = False,
        memory_gib: float = DEFAULT_MEMORY_GIB,
        k1: int = K1,
        k2: int = K2,
        lambda_value: float = LAMBDA,
    ):
        if memory_gib <= 0:
            raise ValueError(f"the re-ranking memory budget must be positive, got {memory_gib} GiB")
        self.budget, self.lambda_value = int(memory_gib * 2**30), lambda_value
        self.images = images = _Images(qf, gf, dist_metric, normalize_feature)
        self.shape = (len(qf), len(gf))
        cuts = (k1 + 1, _half(k1) + 1, k2)  # the neighbour lists' lengths used below
        nearest, self.row_max = _nearest(images, min(max(cuts), images.total), cuts, self.budget)
        v = _query_expansion(_v(images, nearest, self.row_max, k1), nearest, k2)
        self.query_v = v[: len(qf)]
        self.inverted = v[len(qf) :].T.tocsr()  # row c: the gallery images whose V has column c
        entry_pairs = np.diff(self.inverted.indptr)[self.query_v.indices]
        self.pairs = np.bincount(  # per query: the (query entry, gallery entry) pairs its Jaccard sum visits
            np.repeat(np.arange(len(qf)), np.diff(self.query_v.indptr)), entry_pairs, minlength=len(qf)
        ).astype(np.int64)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> np.ndarray:
        if not isinstance(rows, slice):
            raise TypeError(f"re-ranked distances are read by blocks of rows (a slice), not {type(rows).__name__}")
        start, stop, step = rows.indices(self.shape[0])
        if step != 1:
            raise TypeError("re-ranked distances are read by contiguous blocks of rows (a slice with step 1)")
        blocks = [block for _, block in self.blocks(start, stop)]
        return torch.cat(blocks).numpy() if blocks else np.empty((0, self.shape[1]), dtype=np.float32)

    def blocks(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[slice, torch.Tensor]]:
        """(query rows, their re-ranked distances to the gallery), in query order, each within the budget."""
        stop = self.shape[0] if stop is None else stop
        row_bytes = self.shape[1] * 20  # the block's minima (float64), Jaccard, distances, result
        while start < stop:
            cost = np.cumsum(self.pairs[start:stop] * _PAIR_BYTES + row_bytes)
            end = start + max(1, int(np.searchsorted(cost, self.budget, side="right")))
            yield slice(start, end), self._block(start, end)
            start = end

    def matrix(self) -> np.ndarray:
        """The whole query x gallery matrix (for pictures of ranked results; Q x G float32)."""
        return self[:]

    def _block(self, start: int, stop: int) -> torch.Tensor:
        part = self.query_v[start:stop]
        entry_rows = np.repeat(np.arange(stop - start), np.diff(part.indptr))
        first = self.inverted.indptr[part.indices]
        counts = self.inverted.indptr[part.indices + 1] - first
        ends = np.cumsum(counts)
        pos = np.arange(ends[-1] if len(ends) else 0) + np.repeat(first - (ends - counts), counts)
        gallery = self.inverted.indices[pos]
        least = np.minimum(np.repeat(part.data, counts), self.inverted.data[pos])
        keys = np.repeat(entry_rows, counts) * self.shape[1] + gallery
        shared = np.bincount(keys, least, minlength=(stop - start) * self.shape[1]).astype(np.float32)
        shared = torch.from_numpy(shared.reshape(stop - start, self.shape[1]))
        jaccard = 1 - shared / (2 - shared)
        dist = self.images.to_gallery(self.images.qf[start:stop])
        original = dist.mul_(dist).div_(torch.from_numpy(self.row_max[start:stop]).unsqueeze(1))
        return jaccard.mul_(1 - self.lambda_value).add_(original.mul_(self.lambda_value))
