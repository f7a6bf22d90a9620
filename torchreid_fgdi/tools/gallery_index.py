"""A gallery folder's features kept on disk, so searching it again costs only the queries.

The index file holds each image's path (relative to the folder), size, modification time and
feature, and the fingerprint of the extractor that computed them (`FeatureExtractor.fingerprint`:
weights, config, input size). Each use embeds only the images that are new or whose size or
modification time changed, and drops those that are gone. An index that cannot be read, or was
made for another folder or another extractor, is rebuilt with a message, never used: stale
features would rank silently wrong. Writes are atomic, and a long build writes what it has every
`SAVE_EVERY` images, so an interrupted build resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import os
import os.path as osp
from dataclasses import dataclass, field

import torch

from ..data.images import unreadable_images
from ..utils import atomic
from ..utils.cache import cache_root
from .features import FeatureExtractor

FORMAT = 1
SAVE_EVERY = 8192  # images embedded between two writes of the index during a build
_KEYS = ("format", "fingerprint", "folder", "paths", "sizes", "mtimes", "features")


def default_path(folder: str) -> str:
    """``<cache>/gallery-index/<hash of the folder's resolved path>.pt``: one index per folder."""
    key = hashlib.sha256(osp.realpath(folder).encode()).hexdigest()[:16]
    return osp.join(cache_root(), "gallery-index", f"{key}.pt")


@dataclass
class GalleryFeatures:
    """The features of a gallery, row i for ``paths[i]``, and what the update did."""

    paths: list[str]
    features: torch.Tensor
    reused: int = 0
    embedded: int = 0
    removed: int = 0
    skipped: dict[str, str] = field(default_factory=dict)  # unreadable images left out: path -> why


def _stats(paths: list[str]) -> list[tuple[int, int]]:
    stats = [os.stat(path) for path in paths]
    return [(s.st_size, s.st_mtime_ns) for s in stats]


def _problem(saved: object, folder: str, fingerprint: str) -> str | None:
    """Why `saved` (what torch.load gave) cannot be used for `folder` with this extractor, if it cannot."""
    if not isinstance(saved, dict) or not set(_KEYS) <= set(saved):
        return "it is not a gallery index"
    if saved["format"] != FORMAT:
        return f"it has format {saved['format']}, this version reads {FORMAT}"
    if saved["folder"] != osp.realpath(folder):
        return f"it indexes another folder ({saved['folder']})"
    if saved["fingerprint"] != fingerprint:
        return "it was built with other weights, another model or another input size"
    rows = len(saved["paths"])
    features = saved["features"]
    if not (len(saved["sizes"]) == len(saved["mtimes"]) == rows and features.dim() == 2 and len(features) == rows):
        return "its paths, file stats and features do not line up"
    return None


def _read(index_path: str, folder: str, fingerprint: str) -> dict[str, tuple[int, int, torch.Tensor]]:
    """{relative path: (size, mtime_ns, feature)} of a usable index; empty, with a message, otherwise."""
    if not osp.exists(index_path):
        return {}
    try:
        saved = torch.load(index_path, map_location="cpu", weights_only=True)
        problem = _problem(saved, folder, fingerprint)
    except Exception as err:  # a truncated or foreign file fails in pickle, zip or torch, each its own way
        problem = f"it cannot be read ({type(err).__name__}: {err})"
    if problem:
        print(f"=> Gallery index {index_path}: {problem}; rebuilding it")
        return {}
    stats = zip(saved["sizes"].tolist(), saved["mtimes"].tolist(), saved["features"])
    return {path: (size, mtime, feature) for path, (size, mtime, feature) in zip(saved["paths"], stats)}


def _write(index_path: str, folder: str, fingerprint: str, rows: dict[str, tuple[int, int, torch.Tensor]]) -> None:
    paths = sorted(rows)
    atomic.save(
        {
            "format": FORMAT,
            "fingerprint": fingerprint,
            "folder": osp.realpath(folder),
            "paths": paths,
            "sizes": torch.tensor([rows[p][0] for p in paths], dtype=torch.int64),
            "mtimes": torch.tensor([rows[p][1] for p in paths], dtype=torch.int64),
            "features": torch.stack([rows[p][2] for p in paths]) if paths else torch.empty(0, 0),
        },
        index_path,
    )


def gallery_features(
    extractor: FeatureExtractor,
    folder: str,
    paths: list[str],
    index_path: str,
    skip_unreadable: bool = False,
) -> GalleryFeatures:
    """Features of `paths` (images under `folder`) from the index at `index_path`, brought up to date.

    Only new and changed images are read (and, with `skip_unreadable`, checked: unreadable ones
    are left out and listed in ``skipped``); the index is rewritten when anything changed.
    """
    relative = [osp.relpath(path, folder) for path in paths]
    stats = dict(zip(relative, _stats(paths)))
    saved = _read(index_path, folder, extractor.fingerprint)
    rows = {rel: saved[rel] for rel in relative if rel in saved and saved[rel][:2] == stats[rel]}
    removed = len(set(saved) - set(relative))
    todo = [path for path, rel in zip(paths, relative) if rel not in rows]
    skipped = unreadable_images(todo) if skip_unreadable else {}
    todo = [path for path in todo if path not in skipped]
    reused = len(rows)
    for start in range(0, len(todo), SAVE_EVERY):
        chunk = todo[start : start + SAVE_EVERY]
        for path, feature in zip(chunk, extractor(chunk)):
            rel = osp.relpath(path, folder)
            rows[rel] = (*stats[rel], feature)
        _write(index_path, folder, extractor.fingerprint, rows)
    if removed and not todo:
        _write(index_path, folder, extractor.fingerprint, rows)
    kept = [(path, rel) for path, rel in zip(paths, relative) if rel in rows]
    return GalleryFeatures(
        paths=[path for path, _ in kept],
        features=torch.stack([rows[rel][2] for _, rel in kept]) if kept else torch.empty(0, 0),
        reused=reused,
        embedded=len(todo),
        removed=removed,
        skipped=skipped,
    )
