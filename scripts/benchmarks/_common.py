"""Shared pieces of the benchmark scripts: a realistic random re-ID split and a peak-memory probe."""

from __future__ import annotations

import resource

import numpy as np


def reid_split(num_query: int, num_gallery: int, num_ids: int, num_cams: int, seed: int = 0):
    """pids / camids shaped like a re-ID test split: every query identity has gallery images in other
    cameras, plus distractor identities that only the gallery holds."""
    rng = np.random.default_rng(seed)
    q_pids = rng.integers(0, num_ids, num_query)
    g_pids = np.concatenate(
        [rng.integers(0, num_ids, num_gallery // 2), rng.integers(num_ids, 3 * num_ids, num_gallery - num_gallery // 2)]
    )
    return q_pids, g_pids, rng.integers(0, num_cams, num_query), rng.integers(0, num_cams, num_gallery)


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
