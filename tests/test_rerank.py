"""Memory-bounded k-reciprocal re-ranking: torchreid's `re_ranking` distances and metrics, in blocks
of whatever size the budget allows, behind `test.rerank` with the fast evaluator."""

import numpy as np
import pytest
import torch
import torchreid

from torchreid_fgdi.config import RunSettings, load_config
from torchreid_fgdi.errors import ConfigError
from torchreid_fgdi.evaluation import evaluate_features, fast_rank
from torchreid_fgdi.evaluation.distances import distance_matrix
from torchreid_fgdi.evaluation.rerank import DEFAULT_MEMORY_GIB, Reranked

IDS, DIM = 40, 24


def _split(num_query: int = 90, num_gallery: int = 360, seed: int = 0, duplicates: float = 0.0):
    """Identity centres plus noise (re-ranking then has neighbours to find), cameras at random; a
    `duplicates` share of the images get their identity's centre itself, so theirs are equal."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(IDS, DIM))
    q_pids, g_pids = rng.integers(0, IDS, num_query), rng.integers(0, IDS, num_gallery)

    def features(pids):
        noisy = centres[pids] + 0.9 * rng.normal(size=(len(pids), DIM))
        same = rng.random(len(pids)) < duplicates
        noisy[same] = centres[pids[same]]
        return torch.tensor(noisy, dtype=torch.float32)

    q_cams, g_cams = rng.integers(0, 4, num_query), rng.integers(0, 4, num_gallery)
    return (features(q_pids), q_pids, q_cams), (features(g_pids), g_pids, g_cams)


def _torchreids(query, gallery, metric="euclidean", normalize=False, **params):
    qf, gf = query[0], gallery[0]
    return torchreid.utils.re_ranking(
        distance_matrix(qf, gf, metric, normalize),
        distance_matrix(qf, qf, metric, normalize),
        distance_matrix(gf, gf, metric, normalize),
        **params,
    )


def _metrics(distmat, query, gallery, rank):
    return rank(distmat, query[1], gallery[1], query[2], gallery[2])


@pytest.mark.parametrize(
    "metric, normalize, params",
    [
        ("euclidean", False, {}),
        ("euclidean", True, {}),
        ("cosine", False, {}),
        ("euclidean", False, {"k1": 5, "k2": 1, "lambda_value": 0.5}),  # round(5/2) = 2, no query expansion
    ],
)
def test_distances_and_metrics_are_torchreids(metric, normalize, params):
    query, gallery = _split()
    want = _torchreids(query, gallery, metric, normalize, **params)
    got = Reranked(query[0], gallery[0], metric, normalize, **params).matrix()
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert not np.allclose(want, distance_matrix(query[0], gallery[0], metric, normalize), atol=1e-2)
    cmc, mAP = _metrics(got, query, gallery, fast_rank.evaluate_rank)
    want_cmc, want_mAP = _metrics(want, query, gallery, torchreid.metrics.evaluate_rank)
    assert mAP == pytest.approx(want_mAP, abs=1e-6)
    np.testing.assert_array_equal(cmc, want_cmc[: len(cmc)])


def test_a_small_budget_only_makes_the_blocks_smaller():
    query, gallery = _split(seed=1)
    roomy = Reranked(query[0], gallery[0])
    tight = Reranked(query[0], gallery[0], memory_gib=2e-5)  # ~21 KiB: one or two query rows per block
    assert len(list(roomy.blocks())) == 1
    tight_blocks = [rows for rows, _ in tight.blocks()]
    assert len(tight_blocks) >= len(query[1]) // 2
    assert [r.start for r in tight_blocks[1:]] == [r.stop for r in tight_blocks[:-1]]  # in order, no gap
    np.testing.assert_allclose(tight.matrix(), roomy.matrix(), atol=1e-6)
    np.testing.assert_allclose(tight[10:13], roomy.matrix()[10:13], atol=1e-6)


def test_the_fast_evaluator_reranks_without_a_query_by_gallery_matrix():
    query, gallery = _split(seed=2)
    fast = evaluate_features(query, gallery, rerank=True, evaluator="fast", rerank_memory_gib=1e-4)
    theirs = evaluate_features(query, gallery, rerank=True, evaluator="torchreid")
    assert fast["distmat"] is None
    assert fast["mAP"] == pytest.approx(theirs["mAP"], abs=1e-6)
    np.testing.assert_array_equal(fast["cmc"], theirs["cmc"][: len(fast["cmc"])])
    kept = evaluate_features(query, gallery, rerank=True, evaluator="fast", keep_distmat=True)
    np.testing.assert_allclose(kept["distmat"], theirs["distmat"], atol=1e-5)


@pytest.mark.parametrize("memory_gib", [DEFAULT_MEMORY_GIB, 1e-4])
def test_duplicate_features_rank_as_in_torchreid(memory_gib):
    """Duplicates tie exactly in distance, and which of them fall inside a neighbour list is then the
    sort's choice: torchreid's is numpy's argsort of the whole row (before, the lists differed and
    so did mAP and CMC)."""
    query, gallery = _split(seed=7, duplicates=0.5)  # before: mAP 96.00 against 96.18, CMC apart
    fast = evaluate_features(query, gallery, rerank=True, keep_distmat=True, rerank_memory_gib=memory_gib)
    theirs = evaluate_features(query, gallery, rerank=True, evaluator="torchreid")
    np.testing.assert_allclose(fast["distmat"], theirs["distmat"], atol=1e-5)
    assert fast["mAP"] == pytest.approx(theirs["mAP"], abs=1e-9)
    np.testing.assert_array_equal(fast["cmc"], theirs["cmc"][: len(fast["cmc"])])


def test_bad_reads_and_budgets_are_refused_with_the_reason():
    query, gallery = _split(30, 60)
    reranked = Reranked(query[0], gallery[0])
    with pytest.raises(TypeError, match="blocks of rows"):
        reranked[3]
    with pytest.raises(ValueError, match="must be positive, got 0"):
        Reranked(query[0], gallery[0], memory_gib=0)
    with pytest.raises(ConfigError, match="test.rerank_memory_gib must be > 0, got -1"):
        load_config((), ["test.rerank_memory_gib", "-1.0"])


def test_the_budget_setting_reaches_the_fgdi_engine():
    cfg = load_config((), ["test.rerank_memory_gib", "0.5"])
    assert RunSettings.from_config(cfg).test.rerank_memory_gib == 0.5
