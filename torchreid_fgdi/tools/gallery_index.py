"""A gallery folder's features kept on disk, so searching it again costs only the queries.

The index file holds each image's path (relative to the folder), size, modification and inode
change times, and feature, the fingerprint of the extractor that computed them
(`FeatureExtractor.fingerprint`: weights, config, input size) and a checksum of all of it. Each
use embeds only the images that are new or whose size or times changed (``cp -p`` and
`os.utime` can set a replaced file's modification time back, not its change time), and drops
those that are gone. An index that cannot be read, was made for another folder or another
extractor, or whose rows are not finite unit vectors or fail the checksum (torch.load does not
check the zip's CRCs: one flipped bit loads, and a feature of 1e34 ranks first) is rebuilt with a
message, never used: stale or damaged features would rank silently wrong. Writes are atomic, and
a long build writes what it has every `SAVE_EVERY` images, so an interrupted build resumes where
it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import os.path as osp
from dataclasses import dataclass, field

import torch

from ..data.images import unreadable_images
from ..errors import ConfigError
from ..utils import atomic
from ..utils.cache import cache_root
from .features import FeatureExtractor, not_unit_rows

FORMAT = 2  # 1: no change times, no checksum
SAVE_EVERY = 8192  # images embedded between two writes of the index during a build
STAT_FIELDS = ("st_size", "st_mtime_ns", "st_ctime_ns")  # a file whose any of these differ is embedded again
_ZIP_START = b"PK\x03\x04"  # how torch.save's files (zip archives) begin
_KEYS = ("format", "fingerprint", "folder", "paths", "stats", "features", "checksum")


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
    changed: int = 0  # of the embedded, those the index held with other file stats
    removed: int = 0
    skipped: dict[str, str] = field(default_factory=dict)  # unreadable images left out: path -> why


def _stats(paths: list[str]) -> list[tuple[int, ...]]:
    return [tuple(getattr(stat, name) for name in STAT_FIELDS) for stat in map(os.stat, paths)]


def _checksum(saved: dict) -> str:
    """sha256 of everything the index holds, paths and features together: a row moved, a bit flipped
    or a feature paired with another path changes it."""
    digest = hashlib.sha256(json.dumps([saved[k] for k in ("format", "fingerprint", "folder", "paths")]).encode())
    for key in ("stats", "features"):
        digest.update(f"{key} {saved[key].dtype} {tuple(saved[key].shape)}".encode())
        digest.update(saved[key].contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _problem(saved: object, folder: str, fingerprint: str) -> str | None:
    """Why `saved` (what torch.load gave) cannot be used for `folder` with this extractor, if it cannot."""
    if not isinstance(saved, dict) or "format" not in saved:
        return "it is not a gallery index"
    if saved["format"] != FORMAT:
        return f"it has format {saved['format']}, this version reads {FORMAT}"
    if not set(_KEYS) <= set(saved):
        return f"it lacks {', '.join(sorted(set(_KEYS) - set(saved)))}"
    if saved["folder"] != osp.realpath(folder):
        return f"it indexes another folder ({saved['folder']})"
    if saved["fingerprint"] != fingerprint:
        return "it was built with other weights, another model or another input size"
    return _content_problem(saved)


def _content_problem(saved: dict) -> str | None:
    """Why the rows of an index of the right folder and extractor cannot be trusted, if they cannot."""
    rows, stats, features = len(saved["paths"]), saved["stats"], saved["features"]
    if not (stats.shape == (rows, len(STAT_FIELDS)) and features.dim() == 2 and len(features) == rows):
        return "its paths, file stats and features do not line up"
    bad = not_unit_rows(features)
    if bad:
        return f"{bad} of its {rows} features are not finite unit vectors (a damaged file)"
    if saved["checksum"] != _checksum(saved):
        return "its checksum does not match what it holds (a damaged or edited file)"
    return None


def check_writable(index_path: str, flag: str) -> None:
    """Refuses, before any work, an index path the search could not write, or whose file is not a
    gallery index: a rebuild would write over it (a checkpoint or an image given as ``--index`` by
    mistake). Only the file's first bytes and its record of what it holds (memory-mapped) are read,
    not its features. An empty file, or one that starts as torch's archives do but does not load (a
    damaged or truncated index), is rebuilt."""
    atomic.check_output_file(index_path, flag)
    if not osp.isfile(index_path) or not osp.getsize(index_path):
        return
    with open(index_path, "rb") as handle:
        archive = handle.read(len(_ZIP_START)) == _ZIP_START
    if not archive:
        held = "not a file torch wrote"
    else:
        try:
            saved = torch.load(index_path, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # a damaged index fails in pickle, zip or torch, each its own way
            return
        if isinstance(saved, dict) and {"format", "fingerprint"} <= set(saved):
            return
        keys = f" of {', '.join(map(str, list(saved)[:4]))}" if isinstance(saved, dict) else ""
        held = f"it holds a {type(saved).__name__}{keys}"
    raise ConfigError(
        f"{flag} {index_path} is not a gallery index ({held}); a search would write its index over it: "
        f"pass another {flag} path, or remove the file"
    )


def _read(index_path: str, folder: str, fingerprint: str) -> dict[str, tuple[tuple[int, ...], torch.Tensor]]:
    """{relative path: (file stats, feature)} of a usable index; empty, with a message, otherwise."""
    if not osp.exists(index_path):
        return {}
    try:
        saved = torch.load(index_path, map_location="cpu", weights_only=True)
        problem = _problem(saved, folder, fingerprint)
    except Exception as err:  # a truncated or foreign file fails in pickle, zip or torch, each its own way
        first_line = str(err).strip().partition("\n")[0][:200]  # torch's unpickling errors run to many lines
        problem = f"it cannot be read ({type(err).__name__}: {first_line})"
    if problem:
        print(f"=> Gallery index {index_path}: {problem}; rebuilding it")
        return {}
    stats = map(tuple, saved["stats"].tolist())
    return {path: (stat, feature) for path, stat, feature in zip(saved["paths"], stats, saved["features"])}


def _write(
    index_path: str, folder: str, fingerprint: str, rows: dict[str, tuple[tuple[int, ...], torch.Tensor]]
) -> None:
    paths = sorted(rows)
    saved = {
        "format": FORMAT,
        "fingerprint": fingerprint,
        "folder": osp.realpath(folder),
        "paths": paths,
        "stats": torch.tensor([rows[p][0] for p in paths], dtype=torch.int64).reshape(len(paths), len(STAT_FIELDS)),
        "features": torch.stack([rows[p][1] for p in paths]) if paths else torch.empty(0, 0),
    }
    atomic.save({**saved, "checksum": _checksum(saved)}, index_path)


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
    rows = {rel: saved[rel] for rel in relative if rel in saved and saved[rel][0] == stats[rel]}
    removed = len(set(saved) - set(relative))
    todo = [path for path, rel in zip(paths, relative) if rel not in rows]
    skipped = unreadable_images(todo) if skip_unreadable else {}
    todo = [path for path in todo if path not in skipped]
    changed = sum(osp.relpath(path, folder) in saved for path in todo)
    reused = len(rows)
    for start in range(0, len(todo), SAVE_EVERY):
        chunk = todo[start : start + SAVE_EVERY]
        for path, feature in zip(chunk, extractor(chunk)):
            rel = osp.relpath(path, folder)
            rows[rel] = (stats[rel], feature)
        _write(index_path, folder, extractor.fingerprint, rows)
    if removed and not todo:
        _write(index_path, folder, extractor.fingerprint, rows)
    kept = [(path, rel) for path, rel in zip(paths, relative) if rel in rows]
    return GalleryFeatures(
        paths=[path for path, _ in kept],
        features=torch.stack([rows[rel][1] for _, rel in kept]) if kept else torch.empty(0, 0),
        reused=reused,
        embedded=len(todo),
        changed=changed,
        removed=removed,
        skipped=skipped,
    )
