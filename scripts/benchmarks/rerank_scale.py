"""k-reciprocal re-ranking at Market-1501 and MSMT17 sizes: ours (`evaluation.rerank`, fast
evaluator) beside torchreid's `re_ranking` (torchreid evaluator), 1,280-d features.

Features are an identity centre plus noise (so re-ranking has neighbours to find and mAP means
something). Each run is its own process, so each peak RSS is its own. At Market size (3,368 x
15,913) both sides run and their mAP / CMC are compared. At MSMT17 size (11,659 x 82,161) ours
runs; torchreid's dense (Q+G)^2 arrays would not fit, so it runs on a slice (the first
``--torchreid-fraction`` of the queries and of the gallery) and its time and memory above the
inputs are extrapolated as c (Q+G)^2 (its argsort, V and the loops over V's columns), once from
the Market-size run and once from the slice: the two agree on memory; its time grows faster than
(Q+G)^2 between them (cache misses on the larger matrices), so the Market-based time is the
lower estimate. ``--tiny`` runs the same code on problems of seconds (the test suite runs it so).

    python scripts/benchmarks/rerank_scale.py          # 13-19 minutes here (2 shared cores)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings

import numpy as np
import torch
from _common import peak_rss_gib, reid_split

warnings.filterwarnings("ignore", message="Cython evaluation")

DIM, NOISE = 1280, 3.0
SIZES = {"market": (3368, 15913, 750, 6), "msmt17": (11659, 82161, 3060, 15)}
TINY_SIZES = {"market": (60, 300, 20, 6), "msmt17": (100, 500, 30, 15)}  # --tiny


def _sizes(tiny: bool) -> dict:
    return TINY_SIZES if tiny else SIZES


def _problem(size: str, fraction: float, tiny: bool = False):
    num_query, num_gallery, num_ids, num_cams = _sizes(tiny)[size]
    q_pids, g_pids, q_cams, g_cams = reid_split(num_query, num_gallery, num_ids=num_ids, num_cams=num_cams)
    q, g = round(num_query * fraction), round(num_gallery * fraction)
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(3 * num_ids, DIM, generator=gen)

    def features(pids: np.ndarray) -> torch.Tensor:
        return centres[torch.from_numpy(pids)].add_(torch.randn(len(pids), DIM, generator=gen), alpha=NOISE)

    return (features(q_pids[:q]), q_pids[:q], q_cams[:q]), (features(g_pids[:g]), g_pids[:g], g_cams[:g])


def run(side: str, size: str, fraction: float, memory_gib: float, tiny: bool = False) -> dict:
    from torchreid_fgdi.evaluation import evaluate_features

    query, gallery = _problem(size, fraction, tiny)
    base = peak_rss_gib()
    start = time.perf_counter()
    evaluator = "fast" if side == "ours" else "torchreid"
    result = evaluate_features(query, gallery, rerank=True, evaluator=evaluator, rerank_memory_gib=memory_gib)
    return {
        "seconds": time.perf_counter() - start,
        "peak_gib": peak_rss_gib(),
        "inputs_gib": base,
        "images": len(query[1]) + len(gallery[1]),
        "mAP": float(result["mAP"]),
        "cmc": [float(c) for c in result["cmc"]],
    }


def _child(side: str, size: str, fraction: float, memory_gib: float, tiny: bool) -> dict:
    command = [sys.executable, __file__, "--side", side, "--size", size, "--fraction", str(fraction)]
    command += ["--memory-gib", str(memory_gib), *(["--tiny"] if tiny else [])]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _line(name: str, r: dict) -> str:
    memory = f"peak RSS {r['peak_gib']:.2f} GiB (inputs {r['inputs_gib']:.2f})"
    return f"{name}: {r['seconds']:.0f} s, {memory}, mAP {r['mAP']:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--memory-gib", type=float, default=2.0, help="ours: test.rerank_memory_gib (default 2)")
    parser.add_argument(
        "--torchreid-fraction", type=float, default=0.1, help="torchreid's slice of MSMT17 (default 0.1)"
    )
    parser.add_argument("--skip-msmt17", action="store_true", help="the Market-size comparison only")
    parser.add_argument("--tiny", action="store_true", help="the same code at a size of seconds (for the tests)")
    parser.add_argument("--side", choices=["ours", "torchreid"], help=argparse.SUPPRESS)
    parser.add_argument("--size", choices=sorted(SIZES), help=argparse.SUPPRESS)
    parser.add_argument("--fraction", type=float, default=1.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps(run(args.side, args.size, args.fraction, args.memory_gib, args.tiny)))
        return
    sizes = _sizes(args.tiny)
    ours = _child("ours", "market", 1.0, args.memory_gib, args.tiny)
    theirs = _child("torchreid", "market", 1.0, args.memory_gib, args.tiny)
    print(f"Market-1501 size: {sizes['market'][0]} queries x {sizes['market'][1]} gallery, {DIM}-d")
    print("  " + _line(f"ours ({args.memory_gib:g} GiB budget)", ours))
    print("  " + _line("torchreid", theirs))
    same_cmc = ours["cmc"] == theirs["cmc"][: len(ours["cmc"])]
    print(f"  |mAP difference| {abs(ours['mAP'] - theirs['mAP']):.1e}, CMC ranks 1-50 identical: {same_cmc}")
    if args.skip_msmt17:
        return
    big = _child("ours", "msmt17", 1.0, args.memory_gib, args.tiny)
    part = _child("torchreid", "msmt17", args.torchreid_fraction, args.memory_gib, args.tiny)
    n = big["images"]

    def extrapolated(r: dict) -> tuple[float, float]:
        scale = (n / r["images"]) ** 2
        return r["seconds"] * scale, big["inputs_gib"] + (r["peak_gib"] - r["inputs_gib"]) * scale

    seconds, peak = extrapolated(theirs)
    slice_seconds, slice_peak = extrapolated(part)
    print(f"MSMT17 size: {sizes['msmt17'][0]} queries x {sizes['msmt17'][1]} gallery, {DIM}-d")
    print("  " + _line(f"ours ({args.memory_gib:g} GiB budget)", big))
    print("  " + _line(f"torchreid on {args.torchreid_fraction:g} of it ({part['images']} images)", part))
    print(
        f"  torchreid extrapolated to {n} images as c (Q+G)^2 from its Market-size run: {seconds:.0f} s, "
        f"peak RSS {peak:.0f} GiB (from the slice: {slice_seconds:.0f} s, {slice_peak:.0f} GiB)"
    )
    print(
        f"  ratios (torchreid extrapolated / ours): time {seconds / big['seconds']:.1f}x, "
        f"peak memory {peak / big['peak_gib']:.1f}x"
    )


if __name__ == "__main__":
    main()
