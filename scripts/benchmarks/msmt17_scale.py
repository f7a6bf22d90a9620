"""An MSMT17-sized evaluation (11,659 queries x 82,161 gallery, 1,280-d features) in bounded memory.

The fast evaluator ranks blocks of queries (distances and match ranks of a few hundred at a time). torchreid's
path holds the whole query x gallery matrix, its argsort and match matrix: that is measured on a
slice of the queries (``--torchreid-queries``, default a tenth) and its memory and time for all
queries extrapolated linearly (the big arrays scale with the number of queries). Each side runs
in its own process so that the peak RSS is its own. ``--tiny`` runs the same code on a problem of
seconds (the test suite runs it so).

    python scripts/benchmarks/msmt17_scale.py [--torchreid-queries N] [--tiny]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings

import torch
from _common import peak_rss_gib, reid_split

warnings.filterwarnings("ignore", message="Cython evaluation")

NUM_QUERY, NUM_GALLERY, DIM, NUM_IDS = 11659, 82161, 1280, 3060
TINY = (200, 1000, 64, 50)  # --tiny: queries, gallery, dimension, identities


def _problem(num_query: int, tiny: bool):
    all_queries, num_gallery, dim, num_ids = TINY if tiny else (NUM_QUERY, NUM_GALLERY, DIM, NUM_IDS)
    q_pids, g_pids, q_cams, g_cams = reid_split(all_queries, num_gallery, num_ids=num_ids, num_cams=15)
    gen = torch.Generator().manual_seed(0)
    gf = torch.randn(num_gallery, dim, generator=gen)
    qf = torch.randn(all_queries, dim, generator=gen)[:num_query]
    return (qf, q_pids[:num_query], q_cams[:num_query]), (gf, g_pids, g_cams)


def run(side: str, num_query: int, tiny: bool = False) -> dict:
    query, gallery = _problem(num_query, tiny)
    base = peak_rss_gib()
    start = time.perf_counter()
    if side == "fast":
        from torchreid_fgdi.evaluation.fast_rank import rank_features

        cmc, mAP = rank_features(query, gallery)
    else:
        import torchreid

        distmat = torchreid.metrics.compute_distance_matrix(query[0], gallery[0]).numpy()
        cmc, mAP = torchreid.metrics.evaluate_rank(
            distmat, query[1], gallery[1], query[2], gallery[2], use_cython=False
        )
    return {"seconds": time.perf_counter() - start, "peak_gib": peak_rss_gib(), "inputs_gib": base, "mAP": float(mAP)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--torchreid-queries", type=int, help="torchreid's slice (default: a tenth of the queries)")
    parser.add_argument("--tiny", action="store_true", help="the same code at a size of seconds (for the tests)")
    parser.add_argument("--side", choices=["fast", "torchreid"], help=argparse.SUPPRESS)
    parser.add_argument("--queries", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps(run(args.side, args.queries, args.tiny)))
        return
    num_query, num_gallery, dim, _ = TINY if args.tiny else (NUM_QUERY, NUM_GALLERY, DIM, NUM_IDS)
    torchreid_queries = args.torchreid_queries or num_query // 10

    def child(side: str, queries: int) -> dict:
        out = subprocess.run(
            [sys.executable, __file__, "--side", side, "--queries", str(queries), *(["--tiny"] if args.tiny else [])],
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])

    fast = child("fast", num_query)
    part = child("torchreid", torchreid_queries)
    scale = num_query / torchreid_queries
    theirs_peak = part["inputs_gib"] + (part["peak_gib"] - part["inputs_gib"]) * scale
    print(
        f"problem: {num_query} queries x {num_gallery} gallery, {dim}-d (features alone: {fast['inputs_gib']:.2f} GiB)"
    )
    print(f"fast evaluator, all queries: {fast['seconds']:.0f} s, peak RSS {fast['peak_gib']:.2f} GiB")
    print(
        f"torchreid, {torchreid_queries} queries: {part['seconds']:.0f} s, peak RSS {part['peak_gib']:.2f} GiB; "
        f"all queries extrapolated: {part['seconds'] * scale:.0f} s, peak RSS {theirs_peak:.1f} GiB"
    )
    print(
        f"ratios (torchreid extrapolated / fast): time {part['seconds'] * scale / fast['seconds']:.1f}x, "
        f"peak memory {theirs_peak / fast['peak_gib']:.1f}x"
    )


if __name__ == "__main__":
    main()
