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


def check_finite_features(feats: torch.Tensor, where: str) -> torch.Tensor:
    """`feats`, if every value is finite; otherwise an error (ranking NaNs gives a normal-looking table)."""
    bad = int((~feats.isfinite()).any(dim=1).sum()) if feats.dim() > 1 else int((~feats.isfinite()).sum())
    if bad:
        raise NonFiniteFeaturesError(
            f"the model gives non-finite (NaN / Inf) features for {bad} of {len(feats)} images of {where}: its "
            "weights are broken (a diverged run?) or test precision overflowed (fgdi.test_precision fp32); "
            "no result was written"
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
) -> dict:
    """{'mAP', 'cmc' (numpy, ranks 1..50, fewer on a tiny gallery), 'distmat'} for one query / gallery pair.

    ``evaluator='fast'`` ranks query chunk by query chunk (no query x gallery matrix unless
    ``keep_distmat`` asks for it, otherwise ``distmat`` is None), re-ranking with `Reranked` in
    ``rerank_memory_gib``; ``'torchreid'`` is torchreid's own `re_ranking` and `evaluate_rank` on
    whole matrices.
    """
    if evaluator not in EVALUATORS:
        raise ConfigError(f"test.evaluator must be one of {EVALUATORS}, got {evaluator!r}")
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
