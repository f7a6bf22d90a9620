"""The sha256 of a file's bytes: downloads are checked against it, and the training images'
contents go into a run's data fingerprint by it."""

from __future__ import annotations

import hashlib


def sha256sum(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
