"""The training list of a multi-source run: ``(path, pid, camid, dsetid)`` items whose ``dsetid`` is
the source domain, each domain's pid range, Market-1501's distractors as one more identity, and the
list's fingerprint."""

from __future__ import annotations

import hashlib
import os.path as osp

import torchreid


def pid_ranges(items: list, num_domains: int) -> list[tuple[int, int]]:
    """The [start, stop) of the pids of each domain; refuses a domain whose pids are not contiguous."""
    pids = [set() for _ in range(num_domains)]
    for _, pid, _, dsetid in items:
        pids[dsetid].add(pid)
    ranges = [(min(p), max(p) + 1) for p in pids]
    for dsetid, ((start, stop), p) in enumerate(zip(ranges, pids)):
        if len(p) != stop - start:
            raise RuntimeError(f"pids of domain {dsetid} are not contiguous: {sorted(p)[:10]}...")
    return ranges


def add_market1501_distractors(items: list, market_dsetid: int, root: str, **dataset_kwargs) -> int:
    """Adds Market-1501's gallery distractors (pid 0, "0000_*.jpg") to the training `items` (in place)
    as one more identity, as the CLIP-FGDI authors train (1,502 classes with combineall); torchreid
    drops them as junk. The new identity closes Market-1501's pid range; the pids of the sources
    after it move up by one. Returns the number of images added."""
    gallery = torchreid.data.datasets.init_image_dataset(
        "market1501", root=root, mode="gallery", verbose=False, **dataset_kwargs
    )
    market = [item for item in items if item[3] == market_dsetid]
    camera_offset = min(item[2] for item in market) - min(item[2] for item in gallery.train)  # torchreid's __add__
    added = [(path, camid + camera_offset) for path, pid, camid, *_ in gallery.gallery if pid == 0]
    new_pid = 1 + max(item[1] for item in market)
    items[:] = [(path, pid + (pid >= new_pid), camid, dsetid) for path, pid, camid, dsetid in items] + [
        (path, new_pid, camid, market_dsetid) for path, camid in added
    ]
    print(f"=> market1501.train_distractors: {len(added)} distractor images train as identity {new_pid}")
    return len(added)


def fingerprint(items: list, root: str, contents: dict[str, str]) -> str:
    """sha256 of the training list (paths under `root`, the image's `contents` digest by path, pid,
    camid, dsetid): checkpoints record it, so a run is never resumed on other images, other pixels
    under the same names, or other labels that happen to have the same settings."""
    root = osp.abspath(root)
    digest = hashlib.sha256()
    for path, pid, camid, dsetid in sorted(items):
        digest.update(f"{osp.relpath(path, root)}\t{contents[path]}\t{pid}\t{camid}\t{dsetid}\n".encode())
    return digest.hexdigest()
