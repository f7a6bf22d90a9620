"""PNG figures of a run: loss curves per stage, CMC per target, a few ranked queries, domain mixing.

matplotlib's object API (no pyplot) draws off-screen, so it runs on servers and in workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from . import rank_pictures
from .distances import distance_matrix

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_NOT_LOSSES = ("lr", "acc", "domain_acc")


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(fig, path: str) -> str:
    from ..utils import atomic

    return atomic.write_atomically(path, lambda tmp: fig.savefig(tmp, format="png"))


def _whole_number_axis(ax, last: int) -> None:
    """x ticks on whole numbers (epochs, ranks) from 1 to `last`: every one up to 9, then 1, 5, 10, ...;
    half a step of margin, so the first and last points are not drawn on the frame."""
    ax.set_xticks([1, *range(5, last + 1, 5)] if last >= 10 else range(1, last + 1))
    ax.set_xlim(0.5, last + 0.5)


def _legend_outside(fig: Figure, axes: Sequence, **kwargs) -> None:
    """One legend for every panel, right of them: curves can fill any corner of an axes, so a legend
    inside one covers some run's data."""
    entries = {label: handle for ax in axes for handle, label in zip(*ax.get_legend_handles_labels())}
    fig.legend(entries.values(), entries.keys(), loc="outside right upper", fontsize=8, **kwargs)


def losses_figure(stages: dict[str, list[dict]]) -> Figure:
    """One panel per stage: every loss term's epoch average against the stage's epochs. A term keeps
    its colour in every panel, so the one legend serves all of them."""
    fig = _figure(4 * len(stages) + 1.6, 3.2)
    axes = fig.subplots(1, len(stages), squeeze=False)[0]
    terms = [t for rows in stages.values() for t in rows[0] if t not in ("group", "step", *_NOT_LOSSES)]
    colours = {term: f"C{i}" for i, term in enumerate(dict.fromkeys(terms))}
    for ax, (stage, rows) in zip(axes, stages.items()):
        steps = [row["step"] for row in rows]
        for term in [k for k in rows[0] if k in colours]:
            values = [row.get(term, np.nan) for row in rows]
            ax.plot(steps, values, marker=".", label=term, color=colours[term], clip_on=False)
        _whole_number_axis(ax, max(steps))
        ax.set(title=stage, xlabel="epoch of the stage", ylabel="loss" if ax is axes[0] else None)
        ax.grid(alpha=0.3)
    _legend_outside(fig, axes)
    return fig


def plot_losses(stages: dict[str, list[dict]], path: str) -> str | None:
    stages = {name: rows for name, rows in stages.items() if rows}
    return _save(losses_figure(stages), path) if stages else None


def cmc_figure(results: dict[str, dict], sources: Sequence[str], max_rank: int = 20) -> Figure:
    """CMC curves (ranks 1..max_rank) of every target, mAP in the legend, unseen targets dashed.

    The legend sits outside the axes: good models' curves fill the top, weak ones the bottom.
    """
    fig = _figure(6.4, 3.6)
    ax = fig.subplots()
    length = 1
    for name, res in results.items():
        cmc = np.asarray(res["cmc"])[:max_rank] * 100
        length = max(length, len(cmc))
        unseen = name not in sources
        label = f"{name}{' (unseen)' if unseen else ''}, mAP {res['mAP']:.1%}"
        ax.plot(np.arange(1, len(cmc) + 1), cmc, "--" if unseen else "-", marker=".", label=label, clip_on=False)
    _whole_number_axis(ax, length)
    ax.set(xlabel="rank", ylabel="matching rate (%)", ylim=(0, 100), title="CMC")
    ax.grid(alpha=0.3)
    _legend_outside(fig, [ax])
    return fig


def plot_cmc(results: dict[str, dict], path: str, sources: Sequence[str], max_rank: int = 20) -> str | None:
    return _save(cmc_figure(results, sources, max_rank), path) if results else None


def pca_2d(panels: Sequence[torch.Tensor]) -> list[np.ndarray]:
    """Every panel's L2-normalised features on the first two principal components of all panels together.

    One basis (and shared axes) keeps the panels comparable, so a change in how the domains mix is
    not hidden by each panel's own rotation and scale. Each panel is centred on its own mean first:
    a shift of the whole cloud between panels says nothing about mixing and would take PC 1.
    """
    centred = [torch.nn.functional.normalize(f.double(), dim=1) for f in panels]
    centred = [x - x.mean(0) for x in centred]
    _, _, v = torch.linalg.svd(torch.cat(centred), full_matrices=False)
    return [(x @ v[:2].T).numpy() for x in centred]


def domains_figure(panels: dict[str, tuple[torch.Tensor, list[str]]], unseen: Sequence[str] = ()) -> Figure:
    """One PCA scatter per panel (e.g. before / after the text-guided stage), coloured by domain,
    unseen domains as triangles; one legend for all panels."""
    fig = _figure(3.8 * len(panels) + 1.6, 3.8)
    axes = fig.subplots(1, len(panels), squeeze=False, sharex=True, sharey=True)[0]
    domains = list(dict.fromkeys(d for _, names in panels.values() for d in names))
    colours = {d: f"C{i}" for i, d in enumerate(domains)}
    for ax, (title, (_, names)), points in zip(axes, panels.items(), pca_2d([f for f, _ in panels.values()])):
        for domain in domains:
            mask = np.array([d == domain for d in names])
            if mask.any():
                marker, label = ("^", f"{domain} (unseen)") if domain in unseen else ("o", domain)
                kwargs = {"s": 14 if domain in unseen else 8, "alpha": 0.7, "c": colours[domain]}
                ax.scatter(points[mask, 0], points[mask, 1], marker=marker, label=label, **kwargs)
        ax.set(title=title, xlabel="PC 1", ylabel="PC 2" if ax is axes[0] else None)
    _legend_outside(fig, axes, markerscale=1.5)
    return fig


def plot_domains(
    panels: dict[str, tuple[torch.Tensor, list[str]]], path: str, unseen: Sequence[str] = ()
) -> str | None:
    return _save(domains_figure(panels, unseen), path) if panels else None


def visrank_queries(
    query: tuple[torch.Tensor, list],
    gallery: tuple[torch.Tensor, list],
    save_dir: str,
    num_queries: int,
    topk: int,
    size: tuple[int, int],
    dist_metric: str = "euclidean",
    normalize_feature: bool = False,
) -> list[str]:
    """Ranked-results pictures (`rank_pictures`) for `num_queries` queries spread over the query set.

    Only those queries' distances are computed, so this costs nothing next to the evaluation
    (re-ranking, which needs every distance, is not applied here).
    ``query`` / ``gallery``: features and torchreid's item lists (path, pid, camid, ...);
    ``size``: (height, width), the data manager's.
    """
    (qf, q_items), (gf, g_items) = query, gallery
    picked = np.linspace(0, len(q_items) - 1, min(num_queries, len(q_items))).round().astype(int)
    distmat = distance_matrix(qf[picked], gf, dist_metric, normalize_feature)  # as the evaluation ranked them
    return rank_pictures.save_ranked_queries(
        distmat, [q_items[i] for i in picked], g_items, save_dir, topk, *size, distance=f"{dist_metric} distance"
    )
