"""Shared pieces of the benchmark scripts: a realistic random re-ID split, a timer and a peak-memory probe."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from types import SimpleNamespace

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


def timed_call(work: Callable):
    """(seconds `work()` took, what it returned)."""
    start = time.perf_counter()
    out = work()
    return time.perf_counter() - start, out


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def stage3_datamanager(num_ids: int, num_domains: int) -> SimpleNamespace:
    """Stands in for a data manager in a stage-3 benchmark: stage 3 reads only the identities' domains
    (and the engine the loader's length)."""

    class Loader(SimpleNamespace):
        def __len__(self) -> int:
            return 1

    items = [(None, pid, 0, pid % num_domains) for pid in range(num_ids)]
    return SimpleNamespace(
        train_loader=Loader(dataset=SimpleNamespace(train=items)), test_loader={}, num_train_pids=num_ids
    )
