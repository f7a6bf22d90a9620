"""What the prompt and text-guided stages compute once and then read every step.

Under ``torchrun`` image features are extracted in shards and gathered, and prompt features are
encoded on rank 0 and broadcast, so every rank reads the same values.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from . import distributed, progress
from .precision import autocast

_TEXT_CHUNK = 128


@torch.no_grad()
def image_features(
    model: torch.nn.Module, loader: torch.utils.data.DataLoader, device: torch.device, precision: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Projected image features (CLS of xproj) of every image of `loader` (un-augmented), with
    their pids and dsetids, in the loader's order."""
    model.eval()
    shard = list(range(distributed.rank(), len(loader.dataset), distributed.world_size()))
    if distributed.world_size() > 1:
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(loader.dataset, shard),
            batch_size=loader.batch_size,
            num_workers=loader.num_workers,
            pin_memory=loader.pin_memory,
        )
    feats, pids, dsetids = [], [], []
    for data in progress.track(loader, "image features"):
        with autocast(precision, device):
            _, _, xproj = model.image_encoder(data["img"].to(device))
        feats.append(xproj.float().cpu())
        pids.append(data["pid"])
        dsetids.append(data["dsetid"])
    rows = {"feats": torch.cat(feats), "pids": torch.cat(pids), "dsetids": torch.cat(dsetids)}
    rows = distributed.gather_in_order(rows, shard)
    return rows["feats"].to(device), rows["pids"].to(device), rows["dsetids"].to(device)


def row_dsetids(train_items: Iterable[tuple], rows: int) -> torch.Tensor:
    """The source domain of each of `rows` classifier rows (rows past the identities, see
    ``fgdi.num_classes``: 0)."""
    dsetids = torch.zeros(rows, dtype=torch.long)
    for _, pid, _, dsetid in train_items:
        dsetids[pid] = dsetid
    return dsetids


@torch.no_grad()
def prompt_features(model: torch.nn.Module, dsetids: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Identity-prompt and domain-prompt text features of every classifier row (`dsetids`: each
    row's domain), in float32."""
    model.eval()
    pids = torch.arange(len(dsetids), device=device)
    if not distributed.is_main():
        dim = model.text_encoder.text_projection.shape[1]
        empty = torch.empty(len(pids), dim, device=device)
        return distributed.broadcast_tensors((empty, empty.clone()))
    dsetids = dsetids.to(device)
    invariant = torch.cat([model.text_features(c) for c in pids.split(_TEXT_CHUNK)])
    relevant = torch.cat([model.text_features(c, dsetids[c]) for c in pids.split(_TEXT_CHUNK)])
    return distributed.broadcast_tensors((invariant.float(), relevant.float()))
