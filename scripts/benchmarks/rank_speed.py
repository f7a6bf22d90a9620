"""Fast evaluator vs torchreid-pip's Python fallback on a Market-1501-sized problem.

3,368 queries x 15,913 gallery images, a random distance matrix over a realistic pid / camid split;
prints both times, the speed-up, and checks the results are equal.

    python scripts/benchmarks/rank_speed.py
"""

from __future__ import annotations

import time
import warnings

import numpy as np
from _common import reid_split

warnings.filterwarnings("ignore", message="Cython evaluation")
from torchreid.reid.metrics.rank import evaluate_py  # noqa: E402

from torchreid_fgdi.evaluation.fast_rank import evaluate_rank  # noqa: E402


def main() -> None:
    q_pids, g_pids, q_cams, g_cams = reid_split(3368, 15913, num_ids=750, num_cams=6)
    distmat = np.random.default_rng(1).random((3368, 15913), dtype=np.float32)
    for metric, cuhk03 in (("Market-1501", False), ("CUHK03", True)):
        np.random.seed(0)
        start = time.perf_counter()
        theirs = evaluate_py(distmat, q_pids, g_pids, q_cams, g_cams, 50, cuhk03)
        t_theirs = time.perf_counter() - start
        np.random.seed(0)
        start = time.perf_counter()
        ours = evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams, 50, cuhk03)
        t_ours = time.perf_counter() - start
        equal = np.array_equal(ours[0], theirs[0]) and abs(ours[1] - theirs[1]) < 1e-12
        print(
            f"{metric} metric: torchreid python {t_theirs:.1f} s, fast {t_ours:.1f} s, "
            f"speed-up {t_theirs / t_ours:.1f}x, results equal: {equal}",
            flush=True,
        )


if __name__ == "__main__":
    main()
