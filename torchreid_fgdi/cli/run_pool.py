"""Several training runs at once, each in its own process with a share of the CPU's cores.

Small models on a CPU use two cores poorly: a tiny CLIP-FGDI run is only 1.5x faster on two
threads than on one, an OSNet-AIN x0.25 run 1.2x. Two one-thread runs side by side therefore
finish a seeded benchmark sooner than the same runs one after another. A run's numbers depend on
its thread count at the level of float rounding, so ``--jobs`` is part of how a table was made.

The synthetic benchmark's pretrained CLIP is made first, in one of the processes, while the
others take the runs that do not need it.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

import torch

from ..errors import ConfigError
from ..synthetic import pretrain
from . import train as training


def usable_cores() -> int:
    """The cores this process may run on (a container's or taskset's limit, not the machine's)."""
    return len(os.sched_getaffinity(0))


def check_jobs(jobs: int) -> None:
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs}: give 1 (one run at a time) or more")
    if jobs > 1 and torch.cuda.is_available():
        raise ConfigError(
            f"--jobs {jobs} shares the CPU's cores between runs; on a GPU, runs go one at a time (drop --jobs)"
        )


def _start_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def _quietly(task: Callable, *args):
    """`task(*args)` with its console output dropped: each run writes its own log file."""
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        return task(*args)


def _train(argv: list[str]) -> tuple[dict, float]:
    start = time.monotonic()
    return _quietly(training.train, argv), time.monotonic() - start


def _pretrain() -> str:
    return _quietly(pretrain.pretrained_checkpoint)


def run_all(argvs: Sequence[list[str]], names: Sequence[str], needs_clip: Sequence[bool], jobs: int) -> list[dict]:
    """`training.train(argv)` for every argv, `jobs` at a time; the results in the order given.

    `names` label the progress lines; `needs_clip[i]` says whether run i loads the synthetic
    benchmark's pretrained CLIP, which is then made before those runs start. The first failure
    stops the rest and is raised.
    """
    threads = max(1, usable_cores() // jobs)
    make_clip = any(needs_clip) and not pretrain.is_cached()
    order = sorted(range(len(argvs)), key=lambda i: needs_clip[i] and make_clip)  # stable: the rest keep their order
    print(
        f"=> {len(argvs)} runs, {jobs} at a time with {threads} torch thread(s) each; "
        "each run's console output goes to the train.log in its data.save_dir"
    )
    context = multiprocessing.get_context("spawn")  # no fork of a process that has started torch's threads
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_start_worker, initargs=(threads,)) as pool:
        clip: Future | None = None
        if make_clip:
            print(f"=> pretraining the tiny CLIP ({pretrain.TAG}) first, beside the runs that do not need it")
            clip = pool.submit(_pretrain)
        futures = {pool.submit(_train, argvs[i]): i for i in order}
        pending = set(futures) | ({clip} if clip else set())
        done_count = 0
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                if future.exception() is not None:
                    for other in pending:
                        other.cancel()
                    what = "pretraining the tiny CLIP" if future is clip else names[futures[future]]
                    raise RuntimeError(
                        f"{what} failed: {future.exception()} (the run's output is in the train.log in its "
                        "data.save_dir; the runs already going finish first)"
                    ) from future.exception()
                if future is clip:
                    print(f"=> pretrained CLIP ready: {future.result()}")
                    continue
                done_count += 1
                results, seconds = future.result()
                scores = ", ".join(f"{target} {100 * res['mAP']:.1f}" for target, res in results.items())
                print(f"=> [{done_count}/{len(argvs)}] {names[futures[future]]} in {seconds:.0f} s; mAP {scores}")
    by_index = {i: future.result()[0] for future, i in futures.items()}
    return [by_index[i] for i in range(len(argvs))]
