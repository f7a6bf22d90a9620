"""Our evaluator against the peers' compiled ones (torchreid's and fast-reid's Cython) on a
Market-1501-sized problem: 3,368 queries x 15,913 gallery, 1,280-d, 750 identities, 6 cameras.

In one run, interleaved, median of ``--repeats``:
- ranking only, distances given (every evaluator on the same float32 matrix), beside the floor:
  the distance GEMM alone and GEMM + a top-50 partial sort;
- the whole evaluation from features (distances included);
- the CUHK03 metric on a CUHK03-sized problem (its sampling makes every evaluator slow at
  Market-1501 size).
Prints each time, the ratios, and whether CMC is identical and mAP equal to 1e-6. Peers that
cannot be built (no Cython or compiler, no source) or are left out (``--skip-peers``) are
reported as skipped and torchreid's Python reference is timed instead. ``--tiny`` runs the same
code at a size of seconds (the test suite does, so the script keeps working).

    python scripts/benchmarks/rank_speed.py [--peer-sources DIR] [--skip-peers] [--repeats 3] [--tiny]
"""

from __future__ import annotations

import argparse
import statistics
import warnings

import numpy as np
import torch
from _common import reid_split, timed_call
from peers import available

warnings.filterwarnings("ignore", message="Cython evaluation")
from torchreid.reid.metrics.rank import evaluate_py  # noqa: E402

from torchreid_fgdi.evaluation.distances import GalleryDistances, distance_matrix  # noqa: E402
from torchreid_fgdi.evaluation.fast_rank import block_rows, evaluate_rank, rank_features  # noqa: E402

NUM_QUERY, NUM_GALLERY, DIM = 3368, 15913, 1280
CUHK03 = (1400, 5332, 700)  # queries, gallery, identities
TINY = {"market": (120, 600, 64, 30), "cuhk03": (60, 240, 30)}  # --tiny: (queries, gallery, dim, ids), ...


def _floor_topk(qf: torch.Tensor, gf: torch.Tensor) -> None:
    distances, rows = GalleryDistances(gf), block_rows(len(gf))
    for start in range(0, len(qf), rows):
        torch.topk(distances(qf[start : start + rows]), 50, 1, largest=False)


def _same(a, b) -> bool:
    return np.array_equal(np.asarray(a[0])[: len(b[0])], np.asarray(b[0])[: len(a[0])]) and abs(a[1] - b[1]) < 1e-6


def _result(out):
    """(cmc, mAP) from any evaluator (fast-reid's Market-1501 metric returns every AP and INP)."""
    return (out[0], float(np.mean(out[1]))) if len(out) == 3 else (out[0], float(out[1]))


def _python_reference(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, use_metric_cuhk03=False):
    """torchreid's Python evaluator, called as the compiled peers are."""
    return evaluate_py(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, use_metric_cuhk03)


def _peers(args) -> dict:
    peers = {} if args.skip_peers else available(args.peer_sources)
    if not peers:
        why = "left out (--skip-peers)" if args.skip_peers else "none built"
        print(f"[peers] skipped, {why}: timing torchreid's Python reference instead (minutes at full size)")
        peers = {"torchreid-python": _python_reference}
    return peers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer-sources", default="", help="folder with <peer>/rank_cy.pyx (default: download)")
    parser.add_argument("--skip-peers", action="store_true", help="no compiled peers: ours and torchreid's Python")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each side (median shown)")
    parser.add_argument("--tiny", action="store_true", help="the same code at a size of seconds (for the tests)")
    args = parser.parse_args()
    num_query, num_gallery, dim, num_ids = TINY["market"] if args.tiny else (NUM_QUERY, NUM_GALLERY, DIM, 750)
    q_pids, g_pids, q_cams, g_cams = reid_split(num_query, num_gallery, num_ids=num_ids, num_cams=6)
    gen = torch.Generator().manual_seed(0)
    qf, gf = torch.randn(num_query, dim, generator=gen), torch.randn(num_gallery, dim, generator=gen)
    labels = (q_pids, g_pids, q_cams, g_cams)
    peers = _peers(args)
    distmat = distance_matrix(qf, gf)

    rank_only = {"ours": lambda: evaluate_rank(distmat, *labels, 50)}
    rank_only |= {name: (lambda f=f: _result(f(distmat, *labels, 50))) for name, f in peers.items()}
    whole = {"ours": lambda: rank_features((qf, q_pids, q_cams), (gf, g_pids, g_cams))}
    whole |= {name: (lambda f=f: _result(f(distance_matrix(qf, gf), *labels, 50))) for name, f in peers.items()}
    floors = {"GEMM": lambda: distance_matrix(qf, gf), "GEMM + top-50": lambda: _floor_topk(qf, gf)}

    times: dict[str, list[float]] = {}
    results = {}
    for _ in range(args.repeats):  # interleaved, so a slow spell of a shared machine hits every side
        for group, table in (("rank", rank_only), ("whole", whole), ("floor", floors)):
            for name, fn in table.items():
                seconds, out = timed_call(fn)
                times.setdefault(f"{group}:{name}", []).append(seconds)
                results[f"{group}:{name}"] = out
    t = {key: statistics.median(values) for key, values in times.items()}
    reference = results["rank:ours"]
    threads = torch.get_num_threads()
    size = "tiny" if args.tiny else "Market-1501 size"
    print(f"{size}: {num_query} x {num_gallery}, {dim}-d; median of {args.repeats}; threads {threads}")
    print(f"floor: GEMM {t['floor:GEMM']:.2f} s, GEMM + top-50 {t['floor:GEMM + top-50']:.2f} s")
    for group, title in (("rank", "ranking only (distances given)"), ("whole", "whole evaluation from features")):
        print(f"{title}: ours {t[f'{group}:ours']:.2f} s")
        for name in peers:
            ratio = t[f"{group}:{name}"] / t[f"{group}:ours"]
            equal = _same(results[f"{group}:{name}"], reference)
            print(f"  {name}: {t[f'{group}:{name}']:.2f} s -> ours is {ratio:.3g}x as fast; CMC and mAP equal: {equal}")
    print(f"whole evaluation, ours / (GEMM + top-50 floor): {t['whole:ours'] / t['floor:GEMM + top-50']:.3g}x")

    # The CUHK03 metric on a CUHK03-sized problem (1,400 x 5,332, 700 identities, 2 cameras):
    # every evaluator draws numpy samples per identity and query, minutes at Market-1501 size.
    c_num_query, c_num_gallery, c_ids = TINY["cuhk03"] if args.tiny else CUHK03
    c_q, c_g, c_qc, c_gc = reid_split(c_num_query, c_num_gallery, num_ids=c_ids, num_cams=2, seed=1)
    c_dist = distance_matrix(qf[:c_num_query], gf[:c_num_gallery])
    np.random.seed(0)
    ours_time, ours = timed_call(lambda: evaluate_rank(c_dist, c_q, c_g, c_qc, c_gc, 50, use_metric_cuhk03=True))
    print(f"CUHK03 metric, {c_num_query:,} x {c_num_gallery:,}: ours {ours_time:.2f} s")
    for name, f in peers.items():
        np.random.seed(0)
        seconds, theirs = timed_call(lambda f=f: _result(f(c_dist, c_q, c_g, c_qc, c_gc, 50, True)))
        equal = abs(theirs[1] - ours[1]) < 1e-6
        print(f"  {name}: {seconds:.2f} s -> ours is {seconds / ours_time:.3g}x as fast; mAP equal: {equal}")


if __name__ == "__main__":
    main()
