"""The fast evaluator against torchreid's: random and constructed cases, ties, queries without a match."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchreid
from torchreid.reid.metrics.rank import evaluate_py

from torchreid_fgdi.evaluation import evaluate_features
from torchreid_fgdi.evaluation.distances import GalleryDistances
from torchreid_fgdi.evaluation.fast_rank import evaluate_rank, rank_features


def _case(seed: int, nq: int = 70, ng: int = 400):
    rng = np.random.default_rng(seed)
    q_pids = np.concatenate([rng.integers(0, 30, nq - 5), [500, 501, 502, 503, 504]])  # 5 ids not in the gallery
    g_pids = np.concatenate([rng.integers(0, 30, ng - 60), rng.integers(100, 130, 60)])  # distractor ids
    q_cams, g_cams = rng.integers(0, 4, nq), rng.integers(0, 4, ng)
    distmat = rng.random((nq, ng)).round(2)  # many ties in distance
    return distmat, q_pids, g_pids, q_cams, g_cams


@pytest.mark.parametrize("cuhk03", [False, True], ids=["market1501", "cuhk03"])
@pytest.mark.parametrize("seed", range(4))
def test_equal_to_torchreid_on_random_cases_with_ties(seed, cuhk03):
    case = _case(seed)
    np.random.seed(7)
    want_cmc, want_map = evaluate_py(*case, 50, cuhk03)
    np.random.seed(7)
    cmc, mAP = evaluate_rank(*case, max_rank=50, use_metric_cuhk03=cuhk03)
    assert cmc.dtype == want_cmc.dtype and np.array_equal(cmc, want_cmc)
    assert mAP == pytest.approx(want_map, rel=1e-12, abs=0)


def test_constructed_case():
    # query 0 (pid 1, cam 0): gallery by distance: pid1 cam0 (same camera: dropped), pid2, pid1 cam1, pid1 cam2
    # query 1 (pid 9): no gallery image of its identity -> not counted
    distmat = np.array([[0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4]])
    q_pids, q_cams = np.array([1, 9]), np.array([0, 0])
    g_pids, g_cams = np.array([1, 2, 1, 1]), np.array([0, 0, 1, 2])
    cmc, mAP = evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams)
    assert cmc.tolist() == [0.0, 1.0, 1.0]  # 3 usable gallery images: ranks capped at 3
    assert mAP == pytest.approx((1 / 2 + 2 / 3) / 2)
    with pytest.raises(ValueError, match="no query has a valid gallery match"):
        evaluate_rank(distmat[1:], q_pids[1:], g_pids, q_cams[1:], g_cams)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_chunked_features_give_the_dense_result(metric):
    rng = np.random.default_rng(1)
    qf, gf = (
        torch.from_numpy(rng.integers(-3, 4, (50, 8))).float(),
        torch.from_numpy(rng.integers(-3, 4, (300, 8))).float(),
    )
    _, q_pids, g_pids, q_cams, g_cams = _case(1, nq=50, ng=300)
    query, gallery = (qf, q_pids, q_cams), (gf, g_pids, g_cams)
    dense = evaluate_features(query, gallery, metric, evaluator="torchreid")
    cmc, mAP = rank_features(query, gallery, metric, chunk=7)
    # Cosine distances of these (tied) features can differ in the last float32 bit between the chunked
    # and the dense matrix products, which reorders exact ties inside a query's positives: mAP to 1e-5.
    assert np.array_equal(cmc, dense["cmc"]) and mAP == pytest.approx(dense["mAP"], abs=1e-5)
    fast = evaluate_features(query, gallery, metric)
    assert fast["distmat"] is None and np.array_equal(fast["cmc"], dense["cmc"])
    with pytest.raises(ValueError, match="test.evaluator must be one of"):
        evaluate_features(query, gallery, metric, evaluator="cython")


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_block_distances_are_torchreids_value_for_value(metric, normalize):
    gen = torch.Generator().manual_seed(3)
    qf, gf = torch.randn(40, 24, generator=gen) * 5, torch.randn(5000, 24, generator=gen) * 5  # > _NORM_ROWS
    q, g = (F.normalize(qf, dim=1), F.normalize(gf, dim=1)) if normalize else (qf, gf)
    want = torchreid.metrics.compute_distance_matrix(q, g, metric)
    distances = GalleryDistances(gf, metric, normalize)
    assert torch.equal(torch.cat([distances(qf[:17]), distances(qf[17:])]), want)
    with pytest.raises(ValueError, match="unknown distance metric 'cityblock'"):
        GalleryDistances(gf, "cityblock")
