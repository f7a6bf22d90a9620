"""PNG figures of a run: loss curves per stage, CMC per target, a few ranked queries, domain mixing.

matplotlib's object API (no pyplot) draws off-screen, so it runs on servers and in workers.
"""

from __future__ import annotations

import os
import os.path as osp

import numpy as np
import torch

from .distances import distance_matrix

_NOT_LOSSES = ("lr", "acc", "domain_acc")


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(fig, path: str) -> str:
    from .. import atomic

    return atomic.write_atomically(path, lambda tmp: fig.savefig(tmp, format="png"))


def plot_losses(stages: dict[str, list[dict]], path: str) -> str | None:
    """One panel per stage: every loss term's epoch average against the stage's epochs."""
    stages = {name: rows for name, rows in stages.items() if rows}
    if not stages:
        return None
    fig = _figure(4 * len(stages), 3.2)
    for ax, (stage, rows) in zip(fig.subplots(1, len(stages), squeeze=False)[0], stages.items()):
        steps = [row["step"] for row in rows]
        for term in [k for k in rows[0] if k not in ("group", "step", *_NOT_LOSSES)]:
            ax.plot(steps, [row.get(term, np.nan) for row in rows], marker=".", label=term)
        ax.set(title=stage, xlabel="epoch of the stage", ylabel="loss")
        ax.legend(fontsize=7)
    return _save(fig, path)


def plot_cmc(results: dict[str, dict], path: str, max_rank: int = 20) -> str | None:
    """CMC curves (ranks 1..max_rank) of every target, mAP in the legend."""
    if not results:
        return None
    fig = _figure(5, 3.6)
    ax = fig.subplots()
    for name, res in results.items():
        cmc = np.asarray(res["cmc"])[:max_rank] * 100
        ax.plot(np.arange(1, len(cmc) + 1), cmc, marker=".", label=f"{name} (mAP {res['mAP']:.1%})")
    ax.set(xlabel="rank", ylabel="matching rate (%)", ylim=(0, 100), title="CMC")
    ax.legend(fontsize=7)
    return _save(fig, path)


def pca_2d(features: torch.Tensor) -> np.ndarray:
    """The first two principal components of L2-normalised features."""
    x = torch.nn.functional.normalize(features.double(), dim=1)
    x = x - x.mean(0)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    return (x @ v[:2].T).numpy()


def plot_domains(panels: dict[str, tuple[torch.Tensor, list[str]]], path: str) -> str | None:
    """One PCA scatter per panel (e.g. before / after the text-guided stage), coloured by domain."""
    if not panels:
        return None
    fig = _figure(4.5 * len(panels), 4)
    for ax, (title, (features, domains)) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels.items()):
        points = pca_2d(features)
        for domain in dict.fromkeys(domains):
            mask = np.array([d == domain for d in domains])
            ax.scatter(points[mask, 0], points[mask, 1], s=8, alpha=0.7, label=domain)
        ax.set(title=title, xlabel="PC 1", ylabel="PC 2")
        ax.legend(fontsize=7, markerscale=2)
    return _save(fig, path)


def visrank_queries(
    query: tuple[torch.Tensor, list],
    gallery: tuple[torch.Tensor, list],
    save_dir: str,
    num_queries: int,
    topk: int,
    size: tuple[int, int],
    dist_metric: str = "euclidean",
    normalize_feature: bool = False,
) -> str:
    """torchreid's ranked-results pictures for `num_queries` queries spread over the query set.

    Only those queries' distances are computed, so this costs nothing next to the evaluation
    (re-ranking, which needs every distance, is not applied here).
    ``query`` / ``gallery``: features and torchreid's item lists (path, pid, camid, ...).
    """
    import torchreid

    (qf, q_items), (gf, g_items) = query, gallery
    picked = np.linspace(0, len(q_items) - 1, min(num_queries, len(q_items))).round().astype(int)
    distmat = distance_matrix(qf[picked], gf, dist_metric, normalize_feature)  # as the evaluation ranked them
    os.makedirs(save_dir, exist_ok=True)
    torchreid.utils.visualize_ranked_results(
        distmat,
        ([q_items[i] for i in picked], g_items),
        "image",
        width=size[1],
        height=size[0],
        save_dir=save_dir,
        topk=min(topk, len(g_items)),
    )
    return osp.abspath(save_dir)
