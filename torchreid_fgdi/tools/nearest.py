"""Exact top-k inner-product search of L2-normalised features (cosine similarity).

Two paths give the same ranking: torch's matmul and topk, and faiss's exact inner-product search
(``faiss.knn``, the search of an ``IndexFlatIP`` without copying the gallery into one first; no
approximation). `FAISS_FROM` is the crossover measured by ``scripts/benchmarks/search_crossover.py``.

faiss comes with the ``search`` extra. Without it, ``'auto'`` ranks large galleries with torch and
says so in one line: the same exact search, only slower there. Asking for ``'faiss'`` refuses.
"""

from __future__ import annotations

import torch

from ..utils import extras

BACKENDS = ("auto", "torch", "faiss")
# Gallery size from which `top_k` uses faiss. search_crossover.py (2 CPU cores, dim 1280, 1 / 10 /
# 100 queries): on idle cores faiss took 0.74-0.97x torch's time from 20,000 images to 100,000 and
# was level or slower below 10,000; with the cores shared, 0.55-1.0x from 20,000 (one query over
# 200,000 images was slower, 2.4x).
FAISS_FROM = 20_000
_SCORES_PER_CHUNK = 1 << 26  # query x gallery similarities held at once on the torch path (256 MiB)
# faiss scans the gallery once per query while queries x dim < its distance_compute_blas_threshold
# (128000: up to 99 queries of dim 1280), and uses BLAS above; BLAS is faster from 4 queries on.
_FAISS_BLAS_FROM_QUERIES = 4
# faiss's BLAS path multiplies the queries by 1024 gallery rows at a time, a parallel region each:
# on shared cores, waiting for a descheduled thread at every one made it 3-10x slower than torch.
# Blocks of up to 65536 rows (64 MiB of similarities at most) take that to parity.
_FAISS_BLOCK_SCORES, _FAISS_BLOCK_ROWS = 1 << 24, (1024, 65536)
WITHOUT_FAISS = (
    f"=> faiss is not installed: exact top-k with torch instead (the same ranking, slower from {FAISS_FROM:,} "
    f"gallery images; {extras.install_command('search')} brings faiss)"
)


def _torch_top_k(queries: torch.Tensor, gallery: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows = max(1, _SCORES_PER_CHUNK // len(gallery))
    best = [(chunk @ gallery.T).topk(k, dim=1) for chunk in queries.split(rows)]
    return torch.cat([b.values for b in best]), torch.cat([b.indices for b in best])


def _faiss_top_k(queries: torch.Tensor, gallery: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    import faiss

    faiss.omp_set_num_threads(torch.get_num_threads())
    faiss.cvar.distance_compute_blas_threshold = _FAISS_BLAS_FROM_QUERIES * gallery.shape[1]
    low, high = _FAISS_BLOCK_ROWS
    rows = _FAISS_BLOCK_SCORES // min(len(queries), faiss.cvar.distance_compute_blas_query_bs)
    faiss.cvar.distance_compute_blas_database_bs = min(max(rows, low), high)
    values, indices = faiss.knn(queries.numpy(), gallery.numpy(), k, metric=faiss.METRIC_INNER_PRODUCT)
    return torch.from_numpy(values), torch.from_numpy(indices)


def top_k(
    queries: torch.Tensor, gallery: torch.Tensor, k: int, backend: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(similarities, gallery indices), each (queries, k), best first; ``k`` is capped at the gallery size.

    `backend` ``'auto'`` takes faiss from `FAISS_FROM` gallery images on (if installed), torch below.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown search backend {backend!r}: choose from {', '.join(BACKENDS)}")
    if queries.dim() != 2 or gallery.dim() != 2 or queries.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"queries and gallery must be (N, D) features of one dimension, got {tuple(queries.shape)} "
            f"and {tuple(gallery.shape)}"
        )
    if len(gallery) == 0 or k < 1:
        raise ValueError(f"top_k needs a non-empty gallery and k >= 1, got {len(gallery)} images and k={k}")
    k = min(k, len(gallery))
    queries, gallery = queries.float().cpu().contiguous(), gallery.float().cpu().contiguous()
    return (_faiss_top_k if _use_faiss(backend, len(gallery)) else _torch_top_k)(queries, gallery, k)


def _use_faiss(backend: str, gallery_size: int) -> bool:
    """faiss when asked for (refused without it), or for `auto` on a large gallery when installed."""
    if backend == "faiss":
        extras.require("search", ("faiss",), "the faiss search backend")
        return True
    if backend == "torch" or gallery_size < FAISS_FROM:
        return False
    if not extras.available("faiss"):
        print(WITHOUT_FAISS)
        return False
    return True
