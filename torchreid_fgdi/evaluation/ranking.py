"""Per-target re-ID evaluation with torchreid's metrics (distance matrix, re-ranking, CMC, mAP)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
import torchreid

from ..errors import ConfigError, NonFiniteFeaturesError
from . import fast_rank
from .distances import distance_matrix
from .rerank import DEFAULT_MEMORY_GIB, Reranked
from .torchreid_rank import evaluate_rank

_FLOAT32_MAX = float(torch.finfo(torch.float32).max)
_NORM_ROWS = 4096  # features whose squared norms are computed at a time


def check_finite_features(
    feats: torch.Tensor,
    where: str,
    dist_metric: str = "cosine",
    normalize_feature: bool = False,
    rerank: bool = False,
) -> torch.Tensor:
    """`feats`, if every value and every float32 distance between them will be finite; otherwise an
    error (ranking NaNs gives a normal-looking table).

    Finite features can still overflow: a squared norm past float32's range makes unit vectors
    zero, euclidean distances (up to 4x the squared norm) inf or NaN, and re-ranking squares those
    again. The defaults check what any use needs (unit vectors); evaluation passes its settings.
    """
    bad = int((~feats.isfinite()).any(dim=1).sum()) if feats.dim() > 1 else int((~feats.isfinite()).sum())
    if bad:
        raise NonFiniteFeaturesError(
            f"the model gives non-finite (NaN / Inf) features for {bad} of {len(feats)} images of {where}: its "
            "weights are broken (a diverged run?) or test precision overflowed (fgdi.test_precision fp32); "
            "no result was written"
        )
    rows = feats.flatten(1) if feats.dim() > 1 else feats.unsqueeze(1)
    squared = torch.cat([block.double().pow(2).sum(1) for block in rows.split(_NORM_ROWS)])  # no float64 copy
    reach = squared if dist_metric == "cosine" or normalize_feature else 4 * squared  # largest distance
    too_large = (reach**2 if rerank else reach) > _FLOAT32_MAX
    if too_large.any():
        squares = " once re-ranking squares them" if rerank else ""
        raise NonFiniteFeaturesError(
            f"the model gives features too large for float32 distances{squares} (norm up to "
            f"{float(squared.max().sqrt()):.1e}: they would be inf or NaN) for {int(too_large.sum())} of "
            f"{len(feats)} images of {where}: its weights are broken (a diverged run or a damaged checkpoint?); "
            "evaluate an earlier checkpoint; no result was written"
        )
    return feats


@torch.no_grad()
def extract_features(
    loader: Iterable[dict],
    forward: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
    where: str = "the test set",
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Features, pids and camids of every image a test loader yields, in loader order."""
    feats, pids, camids = [], [], []
    for data in loader:
        feats.append(forward(data["img"].to(device)).float().cpu())
        pids.append(data["pid"].numpy())
        camids.append(data["camid"].numpy())
    return check_finite_features(torch.cat(feats), where), np.concatenate(pids), np.concatenate(camids)


EVALUATORS = ("fast", "torchreid")


def evaluate_features(
    query: tuple[torch.Tensor, np.ndarray, np.ndarray],
    gallery: tuple[torch.Tensor, np.ndarray, np.ndarray],
    dist_metric: str = "euclidean",
    normalize_feature: bool = False,
    rerank: bool = False,
    use_metric_cuhk03: bool = False,
    evaluator: str = "fast",
    keep_distmat: bool = False,
    rerank_memory_gib: float = DEFAULT_MEMORY_GIB,
    where: str = "the test set",
) -> dict:
    """{'mAP', 'cmc' (numpy, ranks 1..50, fewer on a tiny gallery), 'distmat'} for one query / gallery pair.

    ``evaluator='fast'`` ranks query chunk by query chunk (no query x gallery matrix unless
    ``keep_distmat`` asks for it, otherwise ``distmat`` is None), re-ranking with `Reranked` in
    ``rerank_memory_gib``; ``'torchreid'`` is torchreid's own `re_ranking` and `evaluate_rank` on
    whole matrices. ``where`` names the images in a refusal of features that cannot be ranked.
    """
    if evaluator not in EVALUATORS:
        raise ConfigError(f"test.evaluator must be one of {EVALUATORS}, got {evaluator!r}")
    for feats, split in ((query[0], "query"), (gallery[0], "gallery")):
        check_finite_features(feats, f"{where} {split}", dist_metric, normalize_feature, rerank)
    if evaluator == "fast" and not rerank and not keep_distmat:
        cmc, mAP = fast_rank.rank_features(
            query, gallery, dist_metric, normalize_feature, use_metric_cuhk03=use_metric_cuhk03
        )
        return {"mAP": mAP, "cmc": cmc, "distmat": None}
    qf, q_pids, q_camids = query
    gf, g_pids, g_camids = gallery
    if evaluator == "fast" and rerank:
        reranked = Reranked(qf, gf, dist_metric, normalize_feature, rerank_memory_gib)
        ranker = fast_rank.Ranker(q_pids, g_pids, q_camids, g_camids, use_metric_cuhk03=use_metric_cuhk03)
        kept = []
        for _, block in reranked.blocks():
            ranker.add(block)
            if keep_distmat:
                kept.append(block.numpy())
        cmc, mAP = ranker.result()
        return {"mAP": float(mAP), "cmc": np.asarray(cmc), "distmat": np.concatenate(kept) if kept else None}
    distmat = distance_matrix(qf, gf, dist_metric, normalize_feature)
    if rerank:
        distmat_qq = distance_matrix(qf, qf, dist_metric, normalize_feature)
        distmat_gg = distance_matrix(gf, gf, dist_metric, normalize_feature)
        distmat = torchreid.utils.re_ranking(distmat, distmat_qq, distmat_gg)
    rank = fast_rank.evaluate_rank if evaluator == "fast" else evaluate_rank
    cmc, mAP = rank(distmat, q_pids, g_pids, q_camids, g_camids, use_metric_cuhk03=use_metric_cuhk03)
    return {"mAP": float(mAP), "cmc": np.asarray(cmc), "distmat": distmat}
