"""`test.normalize_feature` and `test.rerank` in the evaluation: the distances and metrics are those
computed here directly, and torchreid's own re-ranking and metric on them."""

import numpy as np
import pytest
import torch
import torchreid

from torchreid_fgdi.evaluation import evaluate_features

IDS, SHOTS = 20, 3


def _split(seed: int = 0):
    """One query (camera 0) and three gallery images (cameras 1-3) per identity; every feature is
    scaled by its own random factor, as feature norms vary between images."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(IDS, 16))
    q_pids, g_pids = np.arange(IDS), np.repeat(np.arange(IDS), SHOTS)
    q_cams, g_cams = np.zeros(IDS, dtype=np.int64), np.tile(np.arange(1, SHOTS + 1), IDS)

    def features(pids):
        noisy = centres[pids] + 0.9 * rng.normal(size=(len(pids), 16))
        return torch.tensor(noisy * rng.uniform(0.2, 5.0, size=(len(pids), 1)), dtype=torch.float32)

    return (features(q_pids), q_pids, q_cams), (features(g_pids), g_pids, g_cams)


def _torchreid_metrics(distmat, query, gallery):
    return torchreid.metrics.evaluate_rank(distmat, query[1], gallery[1], query[2], gallery[2], use_cython=False)


def _unit(features: torch.Tensor) -> np.ndarray:
    x = features.double().numpy()
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_normalize_feature_ranks_by_the_distance_of_unit_vectors():
    query, gallery = _split()
    result = evaluate_features(query, gallery, "euclidean", normalize_feature=True, keep_distmat=True)
    q, g = _unit(query[0]), _unit(gallery[0])
    want = ((q[:, None, :] - g[None, :, :]) ** 2).sum(-1)  # torchreid's euclidean: the squared distance
    np.testing.assert_allclose(result["distmat"], want, atol=1e-5)
    cmc, mAP = _torchreid_metrics(want, query, gallery)
    assert result["mAP"] == pytest.approx(mAP, abs=1e-6)
    np.testing.assert_allclose(result["cmc"], cmc[: len(result["cmc"])])
    chunked = evaluate_features(query, gallery, "euclidean", normalize_feature=True)  # no matrix held
    assert chunked["distmat"] is None and chunked["mAP"] == pytest.approx(mAP, abs=1e-6)
    raw = evaluate_features(query, gallery, "euclidean")
    assert raw["mAP"] != pytest.approx(mAP, abs=1e-3)  # the scales matter unless normalised


def test_normalize_feature_makes_euclidean_rank_as_cosine():
    query, gallery = _split(1)
    euclidean = evaluate_features(query, gallery, "euclidean", normalize_feature=True)
    cosine = evaluate_features(query, gallery, "cosine")
    assert euclidean["mAP"] == pytest.approx(cosine["mAP"], abs=1e-6)
    np.testing.assert_allclose(euclidean["cmc"], cosine["cmc"])


@pytest.mark.parametrize("normalize_feature", [False, True])
@pytest.mark.parametrize("evaluator", ["fast", "torchreid"])
def test_rerank_is_torchreids_k_reciprocal_re_ranking_of_the_same_distances(normalize_feature, evaluator):
    query, gallery = _split(2)
    result = evaluate_features(
        query, gallery, "euclidean", normalize_feature, rerank=True, evaluator=evaluator, keep_distmat=True
    )
    qf, gf = query[0], gallery[0]
    if normalize_feature:
        qf, gf = (torch.tensor(_unit(f), dtype=torch.float32) for f in (qf, gf))

    def distances(a, b):
        return torchreid.metrics.compute_distance_matrix(a, b, "euclidean").numpy()

    plain = distances(qf, gf)
    want = torchreid.utils.re_ranking(plain, distances(qf, qf), distances(gf, gf))
    np.testing.assert_allclose(result["distmat"], want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(want, plain)  # re-ranking moved the distances
    cmc, mAP = _torchreid_metrics(want, query, gallery)
    assert result["mAP"] == pytest.approx(mAP, abs=1e-6)
    np.testing.assert_allclose(result["cmc"], cmc[: len(result["cmc"])])
