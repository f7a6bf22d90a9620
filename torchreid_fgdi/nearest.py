"""Exact top-k inner-product search of L2-normalised features (cosine similarity).

Two paths give the same ranking: torch's matmul and topk, and faiss's exact inner-product search
(``faiss.knn``, the search of an ``IndexFlatIP`` without copying the gallery into one first; no
approximation). `FAISS_FROM` is the crossover measured by ``scripts/benchmarks/search_crossover.py``.
"""

from __future__ import annotations

import torch

BACKENDS = ("auto", "torch", "faiss")
# Gallery size from which `top_k` uses faiss (search_crossover.py on 2 CPU cores, dim 1280).
FAISS_FROM = 20_000
_SCORES_PER_CHUNK = 1 << 26  # query x gallery similarities held at once on the torch path (256 MiB)


def _torch_top_k(queries: torch.Tensor, gallery: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows = max(1, _SCORES_PER_CHUNK // len(gallery))
    best = [(chunk @ gallery.T).topk(k, dim=1) for chunk in queries.split(rows)]
    return torch.cat([b.values for b in best]), torch.cat([b.indices for b in best])


def _faiss_top_k(queries: torch.Tensor, gallery: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    import faiss

    faiss.omp_set_num_threads(torch.get_num_threads())
    values, indices = faiss.knn(queries.numpy(), gallery.numpy(), k, metric=faiss.METRIC_INNER_PRODUCT)
    return torch.from_numpy(values), torch.from_numpy(indices)


def top_k(
    queries: torch.Tensor, gallery: torch.Tensor, k: int, backend: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(similarities, gallery indices), each (queries, k), best first; ``k`` is capped at the gallery size.

    `backend` ``'auto'`` takes faiss from `FAISS_FROM` gallery images on, torch below.
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
    use_faiss = backend == "faiss" or (backend == "auto" and len(gallery) >= FAISS_FROM)
    return (_faiss_top_k if use_faiss else _torch_top_k)(queries, gallery, k)
