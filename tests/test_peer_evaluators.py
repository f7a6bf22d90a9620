"""Our evaluator against the peers' compiled ones (torchreid's and fast-reid's rank_cy.pyx), built
by scripts/benchmarks/peers.py from the sources kept beside this clone (or downloaded)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from torchreid_fgdi.evaluation.fast_rank import evaluate_rank

from .conftest import fixtures_missing, require_fixtures

REPO = Path(__file__).resolve().parents[1]
SOURCES = REPO.parent / "shared" / "fixtures" / "peer-evaluators"
pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("Cython") is None, reason="Cython is not installed"),
    pytest.mark.subprocess,
]


@pytest.fixture(scope="module")
def peers():
    spec = importlib.util.spec_from_file_location("peers", REPO / "scripts" / "benchmarks" / "peers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # downloading the sources is the benchmarks' job, not the tests'
    require_fixtures(*(f"peer-evaluators/{peer.name}/rank_cy.pyx" for peer in module.PEERS))
    found = module.available(str(SOURCES))
    if not found:
        fixtures_missing("no peer evaluator could be built here (see the [peers] lines above)")
    return found


def _case(seed: int, ties: bool):
    rng = np.random.default_rng(seed)
    nq, ng = 120, 900
    q_pids, g_pids = rng.integers(0, 60, nq), np.concatenate([rng.integers(0, 60, 700), rng.integers(60, 90, 200)])
    q_cams, g_cams = rng.integers(0, 4, nq), rng.integers(0, 4, ng)
    distmat = rng.random((nq, ng), dtype=np.float32)
    if ties:
        distmat = (distmat * 50).round() / 50  # many exact ties between matches and other identities
    return distmat, q_pids, g_pids, q_cams, g_cams


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("seed", range(3))
def test_market1501_metric_equals_every_compiled_peer(peers, seed, ties):
    case = _case(seed, ties)
    cmc, mAP = evaluate_rank(*case, max_rank=50)
    for name, evaluate_cy in peers.items():
        out = evaluate_cy(*case, 50, False)
        theirs_map = float(np.mean(out[1])) if len(out) == 3 else float(out[1])  # fast-reid returns every AP
        assert np.array_equal(cmc, out[0]), name
        assert mAP == pytest.approx(theirs_map, abs=1e-6), name
