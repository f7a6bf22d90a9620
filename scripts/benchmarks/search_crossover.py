"""Top-k search time of faiss (exact inner product) vs torch (matmul + topk) by gallery size: where
`torchreid_fgdi.tools.nearest.FAISS_FROM` comes from.

Random L2-normalised features of the fgdi model's dimension (ViT-B/16: 768 + 512), through
`nearest.top_k` as a search calls it. The two paths alternate within each repeat, so load from
other processes hits both alike; each time is the best of --repeats. Prints one row per gallery
size and query count with both times, the ratio faiss / torch (below 1: faiss is faster) and
whether both rankings are equal. ``--tiny``: galleries of 200 and 1,000, 1 and 5 queries, one
repeat (seconds; the test suite runs it so).

    python scripts/benchmarks/search_crossover.py [--sizes 1000 ... 200000] [--queries 1 10 100] [--tiny]
"""

from __future__ import annotations

import argparse
import time

import open_clip
import torch
import torch.nn.functional as F

from torchreid_fgdi.models.variants import VARIANTS
from torchreid_fgdi.tools.nearest import FAISS_FROM, top_k


def feature_dim(model_name: str) -> int:
    """The eval feature's dimension of a ViT fgdi variant: the CLS token and its projection, side by side."""
    clip = open_clip.get_model_config(VARIANTS[model_name]["clip"])
    return clip["vision_cfg"]["width"] + clip["embed_dim"]


def best_times(queries: torch.Tensor, gallery: torch.Tensor, k: int, repeats: int):
    """{backend: (best seconds, last result)} for torch and faiss, called in turn."""
    times, results = {"torch": [], "faiss": []}, {}
    for _ in range(repeats):
        for backend in times:
            start = time.perf_counter()
            results[backend] = top_k(queries, gallery, k, backend)
            times[backend].append(time.perf_counter() - start)
    return {backend: (min(spans), results[backend]) for backend, spans in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 5000, 10000, 20000, 50000, 100000, 200000])
    parser.add_argument("--queries", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--model", default="fgdi", help="fgdi ViT variant whose feature dimension to use")
    parser.add_argument("--topk", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch's (and so faiss's) threads; default: torch's")
    parser.add_argument("--tiny", action="store_true", help="the same code at a size of seconds (for the tests)")
    args = parser.parse_args()
    if args.tiny:
        args.sizes, args.queries, args.repeats = [200, 1000], [1, 5], 1
    if args.threads:
        torch.set_num_threads(args.threads)
    dim = feature_dim(args.model)
    generator = torch.Generator().manual_seed(0)
    print(f"dim {dim}, top-{args.topk}, {torch.get_num_threads()} threads, FAISS_FROM now {FAISS_FROM}", flush=True)
    print("gallery  queries  torch ms  faiss ms  faiss/torch  same ranking", flush=True)
    for size in args.sizes:
        gallery = F.normalize(torch.randn(size, dim, generator=generator), dim=1)
        for count in args.queries:
            queries = F.normalize(torch.randn(count, dim, generator=generator), dim=1)
            top_k(queries, gallery, args.topk, "faiss")  # warm-up: faiss's first call loads its kernels
            timed = best_times(queries, gallery, args.topk, args.repeats)
            (t_torch, by_torch), (t_faiss, by_faiss) = timed["torch"], timed["faiss"]
            same = torch.equal(by_torch[1], by_faiss[1])
            print(
                f"{size:7d}  {count:7d}  {t_torch * 1e3:8.2f}  {t_faiss * 1e3:8.2f}  {t_faiss / t_torch:11.2f}  {same}",
                flush=True,
            )


if __name__ == "__main__":
    main()
