"""What a run leaves to look at beside its results: the loss curves and the domain-mixing plot."""

from __future__ import annotations

import os.path as osp
from collections.abc import Callable, Iterable

import numpy as np
import torch
import torchreid

from ..evaluation import plots
from ..utils import atomic
from .run_log import latest, read_metrics


def domain_features(
    datamanager: torchreid.data.ImageDataManager,
    extract: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
    per_domain: int = 150,
) -> dict:
    """Test features (`extract`) of up to `per_domain` images of every source (training images)
    and every unseen target (query images): {"features": N x D, "domains": the N images' domain
    names, "unseen": the unseen targets' names}, what `save_domain_features` keeps."""
    dm, subsets = datamanager, []
    train = dm.train_loader_test.dataset
    for d, name in enumerate(dm.sources):
        subsets.append((name, train, [i for i, item in enumerate(dm.train_items) if item[3] == d]))
    for name in dm.targets:
        if name not in dm.sources:
            query = dm.test_loader[name]["query"].dataset
            subsets.append((name, query, list(range(len(query)))))
    feats, labels = [], []
    for name, dataset, rows in subsets:
        rows = [rows[i] for i in np.linspace(0, len(rows) - 1, min(per_domain, len(rows))).round().astype(int)]
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, rows), batch_size=dm.batch_size_test)
        with torch.no_grad():
            feats += [extract(batch["img"].to(device)).cpu() for batch in loader]
        labels += [name] * len(rows)
    unseen = [name for name in dm.targets if name not in dm.sources]
    return {"features": torch.cat(feats), "domains": labels, "unseen": unseen}


def save_domain_features(saved: dict, save_dir: str, title: str) -> str:
    """Kept in save_dir/features so domains.png can be redrawn (`write_plots`) without the model."""
    return atomic.save(saved, domain_features_path(save_dir, title))


def write_plots(save_dir: str, stage_names: Iterable[str], titles: Iterable[str]) -> list[str]:
    """save_dir/plots: losses.png (per stage) and domains.png (a PCA panel per title whose domain
    features were saved, e.g. before / after the text-guided stage), next to the CMC curves and
    ranked queries the test wrote."""
    folder = osp.join(save_dir, "plots")
    rows = read_metrics(save_dir)
    written = [plots.plot_losses({s: latest(rows, s) for s in stage_names}, osp.join(folder, "losses.png"))]
    panels, unseen = {}, set()
    for title in titles:
        path = domain_features_path(save_dir, title)
        if osp.isfile(path):
            saved = torch.load(path, weights_only=True)
            panels[title] = (saved["features"], saved["domains"])
            unseen.update(saved["unseen"])
    written.append(plots.plot_domains(panels, osp.join(folder, "domains.png"), sorted(unseen)))
    return [path for path in written if path]


def domain_features_path(save_dir: str, title: str) -> str:
    """save_dir/features/domains_<title>.pt: {"features": N x D, "domains": N names, "unseen": names}."""
    return osp.join(save_dir, "features", "domains_" + title.replace(" ", "_") + ".pt")
