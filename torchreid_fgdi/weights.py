"""Downloads checked against a sha256, written whole or not at all.

A download is fetched with gdown (Google Drive links and plain URLs) into a temporary file
beside its destination, and renamed into place only when its size and sha256 match; a wrong or
truncated file is deleted and named in the error, and an existing file is never overwritten.
Offline, the error says which file to fetch by hand and where to put it.
"""

from __future__ import annotations

import hashlib
import os
import os.path as osp

from . import atomic
from .models.clip_weights import WeightsUnavailableError, host_reachable


class ChecksumError(ValueError):
    """A file whose sha256 (or size) is not the one published for it."""


def sha256sum(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(path: str, sha256: str, size: int | None, what: str) -> None:
    if size is not None and os.path.getsize(path) != size:
        raise ChecksumError(f"{what} has {os.path.getsize(path)} bytes, expected {size}")
    got = sha256sum(path)
    if got != sha256.lower():
        raise ChecksumError(f"{what} has sha256 {got}, expected {sha256.lower()}")


def download(url: str, path: str, sha256: str, size: int | None = None, quiet: bool = False) -> str:
    """`path`, downloaded from `url` unless already there; both checked against `sha256`."""
    if osp.isfile(path):
        try:
            _verify(path, sha256, size, path)
        except ChecksumError as err:
            raise ChecksumError(f"{err}: a different or damaged file; move it away to download again") from err
        return path
    by_hand = f"download {url} by hand and put it at {osp.abspath(path)} (sha256 {sha256})"
    if not host_reachable(url):
        raise WeightsUnavailableError(f"cannot reach {url} from here (offline?): {by_hand}")

    def fetch(tmp: str) -> None:
        import gdown

        try:
            got = gdown.download(url, tmp, quiet=quiet)
        except Exception as err:  # gdown raises requests', urllib3's and its own errors
            raise WeightsUnavailableError(f"downloading {url} failed ({err}): {by_hand}") from err
        if got is None or not osp.isfile(tmp):
            raise WeightsUnavailableError(f"downloading {url} gave no file: {by_hand}")
        try:
            _verify(tmp, sha256, size, f"the download of {url}")
        except ChecksumError as err:
            raise ChecksumError(f"{err}; it was deleted, nothing was written to {path}. Retry, or {by_hand}") from err

    return atomic.write_atomically(path, fetch)
