"""An MSMT17-sized evaluation (11,659 queries x 82,161 gallery, 1,280-d features) in bounded memory.

The fast evaluator ranks blocks of queries (distances and match ranks of a few hundred at a time). torchreid's
path holds the whole query x gallery matrix, its argsort and match matrix: that is measured on a
slice of the queries (``--torchreid-queries``, default a tenth) and its memory and time for all
queries extrapolated linearly (the big arrays scale with the number of queries). Each side runs
in its own process so that the peak RSS is its own.

    python scripts/benchmarks/msmt17_scale.py
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

NUM_QUERY, NUM_GALLERY, DIM = 11659, 82161, 1280


def _problem(num_query: int):
    q_pids, g_pids, q_cams, g_cams = reid_split(NUM_QUERY, NUM_GALLERY, num_ids=3060, num_cams=15)
    gen = torch.Generator().manual_seed(0)
    gf = torch.randn(NUM_GALLERY, DIM, generator=gen)
    qf = torch.randn(NUM_QUERY, DIM, generator=gen)[:num_query]
    return (qf, q_pids[:num_query], q_cams[:num_query]), (gf, g_pids, g_cams)


def run(side: str, num_query: int) -> dict:
    query, gallery = _problem(num_query)
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
    parser.add_argument("--torchreid-queries", type=int, default=NUM_QUERY // 10)
    parser.add_argument("--side", choices=["fast", "torchreid"], help=argparse.SUPPRESS)
    parser.add_argument("--queries", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps(run(args.side, args.queries)))
        return

    def child(side: str, queries: int) -> dict:
        out = subprocess.run(
            [sys.executable, __file__, "--side", side, "--queries", str(queries)],
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])

    fast = child("fast", NUM_QUERY)
    part = child("torchreid", args.torchreid_queries)
    scale = NUM_QUERY / args.torchreid_queries
    theirs_peak = part["inputs_gib"] + (part["peak_gib"] - part["inputs_gib"]) * scale
    print(
        f"problem: {NUM_QUERY} queries x {NUM_GALLERY} gallery, {DIM}-d (features alone: {fast['inputs_gib']:.2f} GiB)"
    )
    print(f"fast evaluator, all queries: {fast['seconds']:.0f} s, peak RSS {fast['peak_gib']:.2f} GiB")
    print(
        f"torchreid, {args.torchreid_queries} queries: {part['seconds']:.0f} s, peak RSS {part['peak_gib']:.2f} GiB; "
        f"all queries extrapolated: {part['seconds'] * scale:.0f} s, peak RSS {theirs_peak:.1f} GiB"
    )
    print(
        f"ratios (torchreid extrapolated / fast): time {part['seconds'] * scale / fast['seconds']:.1f}x, "
        f"peak memory {theirs_peak / fast['peak_gib']:.1f}x"
    )


if __name__ == "__main__":
    main()
