"""Several training runs at once, each in its own process with a share of the CPU's cores.

Small models on a CPU use two cores poorly: a tiny CLIP-FGDI run is only 1.5x faster on two
threads than on one, an OSNet-AIN x0.25 run 1.2x. Two one-thread runs side by side therefore
finish a seeded benchmark sooner than the same runs one after another. A run's numbers depend on
its thread count at the level of float rounding, so ``--jobs`` is part of how a table was made.

The synthetic benchmark's pretrained CLIP is made first, in one of the processes, while the
others take the runs that do not need it.

The parent decides when runs stop. The runs ignore SIGINT and SIGHUP (a Ctrl-C in a terminal
reaches the whole process group), and a stop signal to the parent (`refusals.Stopped`), a run
that is refused, fails or is killed, each terminates the other runs and waits for them: no run
is left training. A parent killed with SIGKILL cannot do that, so on Linux the kernel sends its
runs SIGTERM (`_die_with`). A stopped run's folder keeps its last checkpoint (checkpoints are written
atomically), so the same command with ``model.resume auto`` continues it.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection, wait
from typing import NamedTuple

import torch

from ..errors import ConfigError, RunFailedError
from ..synthetic import pretrain
from ..synthetic.probe import format_accuracy
from . import train as training
from .refusals import REFUSALS, STOP_SIGNALS, Stopped

PARENT_SIGNALS = {signal.SIGINT, signal.SIGHUP}  # the runs leave these to the parent
PR_SET_PDEATHSIG = 1  # Linux's prctl option: a signal to this process when its parent dies
STOP_GRACE = 30  # seconds a run has to end after SIGTERM before it is killed
CLIP = -1  # the index of the pretraining job among the runs'


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


def _quietly(task: Callable, *args):
    """`task(*args)` with its console output dropped: each run writes its own log file."""
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        return task(*args)


def _train(argv: list[str]) -> tuple[dict, float]:
    start = time.monotonic()
    return _quietly(training.train, argv), time.monotonic() - start


def _pretrain() -> str:
    return _quietly(pretrain.pretrained_checkpoint)


def _die_with(parent: int) -> None:
    """SIGTERM to this run when the benchmark dies, even of SIGKILL, which it cannot pass on: no run
    trains on with no one to stop it. Linux only (elsewhere nothing changes). The kernel sends it
    when the parent's thread that started this process ends: `run_all`'s, which reaps every run
    before it returns."""
    try:
        prctl = getattr(ctypes.CDLL(None), "prctl", None)  # the C library's, where this process has one
    except (OSError, TypeError):
        return
    if prctl is None or prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        return
    if os.getppid() != parent:  # it died while this process started: the signal would never come
        os.kill(os.getpid(), signal.SIGTERM)  # held until this run unblocks the stop signals


def _child(report: Connection, parent: int, start_method: str, threads: int, task: Callable, *args) -> None:
    """A run's process: `task(*args)`, and what came of it sent to the parent as (kind, value):
    ``done`` and the result, ``refused`` and the message, or ``failed`` and the traceback.

    Its processes (data loaders) start as they would in a run on its own, not as spawned ones,
    which also registers their semaphores with the parent, which warns of every one a killed run leaves."""
    _die_with(parent)
    for sig in PARENT_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # held by the parent while it started this process
    multiprocessing.set_start_method(start_method, force=True)
    torch.set_num_threads(threads)
    try:
        outcome = ("done", task(*args))
    except REFUSALS as err:
        outcome = ("refused", str(err))
    except Exception:
        outcome = ("failed", traceback.format_exc())
    report.send(outcome)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Stop signals wait while a run starts: the parent is not stopped half-way through starting a
    process it would not know of, and the process, which inherits the blocked signals, takes no
    Ctrl-C while it imports torch, before it can ignore the signal. (Blocking them in this thread
    is not enough: torch's threads take them too, and Python runs the handler here.)"""
    arrived: list[int] = []
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        handlers = {sig: signal.signal(sig, lambda signum, frame: arrived.append(signum)) for sig in STOP_SIGNALS}
    before = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        if arrived:
            signal.raise_signal(arrived[0])  # now to the handler it was meant for


class _Running(NamedTuple):
    index: int
    process: multiprocessing.process.BaseProcess
    report: Connection


class _Runs:
    """The runs' names and folders, and the one-line accounts of how they ended."""

    def __init__(self, names: Sequence[str], folders: Sequence[str]):
        self.names, self.folders = names, folders

    def name(self, index: int) -> str:
        if index == CLIP:
            return f"pretraining the tiny CLIP ({pretrain.TAG})"
        return f"{self.names[index]} (in {self.folders[index]})"

    def stopped(self, indexes: Sequence[int], finished: int, waiting: int) -> str:
        """Which jobs were stopped, how many runs finished or never started, and how to continue."""
        account = f"{finished} run(s) finished, {waiting} not started"
        if not indexes:
            return account
        account = f"{account}, stopped: {', '.join(self.name(i) for i in indexes)}"
        if all(i == CLIP for i in indexes):
            return account
        return (
            f"{account}. Each run's folder keeps its last checkpoint: the same command with model.resume auto "
            "continues the runs that did not finish (and only tests the finished ones again)"
        )


def _one_by_one(argvs: Sequence[list[str]], runs: _Runs) -> list[dict]:
    """Every run in this process, in order, with its output on the console."""
    outcomes = []
    for i, argv in enumerate(argvs):
        try:
            outcomes.append(training.train(argv))
        except Stopped as stop:
            raise Stopped(stop.signum, runs.stopped([i], i, len(argvs) - i - 1)) from stop
    return outcomes


def _start(context, running: list[_Running], index: int, threads: int, task: Callable, *args) -> None:
    """Starts job `index` in a process of its own, added to `running`."""
    receive, send = context.Pipe(duplex=False)
    own = multiprocessing.get_start_method()
    process = context.Process(target=_child, args=(send, os.getpid(), own, threads, task, *args), name=f"run {index}")
    with _signals_held():
        process.start()
        running.append(_Running(index, process, receive))
    send.close()  # the child holds the only writing end: its exit is the end of the pipe


def _ended(child: _Running) -> tuple[str, object]:
    """(kind, value) the child reported, or ``killed`` / ``exited`` and its status if it died first."""
    try:
        outcome = child.report.recv()
    except EOFError:
        outcome = None
    child.process.join()
    child.report.close()
    if outcome is not None:
        return outcome
    status = child.process.exitcode
    return ("killed", signal.Signals(-status).name) if status < 0 else ("exited", status)


def _terminate(children: Sequence[_Running]) -> None:
    """SIGTERM to every run still going, then SIGKILL to any that outlives `STOP_GRACE`; all reaped."""
    for child in children:
        child.process.terminate()
    deadline = time.monotonic() + STOP_GRACE
    for child in children:
        child.process.join(max(0.0, deadline - time.monotonic()))
        if child.process.is_alive():
            child.process.kill()
            child.process.join()
        child.report.close()


def _failure(child: _Running, kind: str, value: object, runs: _Runs, others: str) -> Exception:
    what = runs.name(child.index)
    if kind == "failed":  # a bug: its traceback
        return RuntimeError(f"{what} failed; {others}. The run's traceback:\n{value}")
    if kind == "refused":
        return RunFailedError(f"{what} refused: {value}; {others}")
    how = f"was killed by {value}" if kind == "killed" else f"exited with status {value} before reporting"
    if value == "SIGKILL":
        how += " (as the kernel kills a process when memory runs out)"
    return RunFailedError(f"{what} {how}; {others}")


def run_all(
    argvs: Sequence[list[str]],
    names: Sequence[str],
    folders: Sequence[str],
    needs_clip: Sequence[bool],
    jobs: int,
) -> list[dict]:
    """`training.train(argv)` for every argv, `jobs` at a time; the results in the order given.

    `names` and `folders` (each run's ``data.save_dir``) name the runs in progress lines and
    errors; `needs_clip[i]` says whether run i loads the synthetic benchmark's pretrained CLIP,
    which is then made before those runs start. With `jobs` 1 the runs go one by one in this
    process. The first run refused, failed or killed stops the others, and is raised with their names.
    """
    runs = _Runs(names, folders)
    if jobs == 1:
        return _one_by_one(argvs, runs)
    threads = max(1, usable_cores() // jobs)
    clip_problem = pretrain.cache_problem() if any(needs_clip) else ""
    make_clip = bool(clip_problem)
    print(
        f"=> {len(argvs)} runs, {jobs} at a time with {threads} torch thread(s) each; "
        "each run's console output goes to the train.log in its data.save_dir"
    )
    context = multiprocessing.get_context("spawn")  # no fork of a process that has started torch's threads
    waiting = sorted(range(len(argvs)), key=lambda i: needs_clip[i] and make_clip)  # stable: the rest keep their order
    running: list[_Running] = []
    results: dict[int, dict] = {}
    # multiprocessing's resource tracker unblocks SIGINT and SIGTERM once it has started: before the
    # first run then, not while `_signals_held` holds them for it
    resource_tracker.ensure_running()
    try:
        if make_clip:
            print(
                f"=> pretraining the tiny CLIP ({pretrain.TAG}) first ({clip_problem}), "
                "beside the runs that do not need it"
            )
            _start(context, running, CLIP, threads, _pretrain)
        while waiting or running:
            clip_pending = any(child.index == CLIP for child in running)
            while waiting and len(running) < jobs and not (clip_pending and needs_clip[waiting[0]] and make_clip):
                index = waiting.pop(0)
                _start(context, running, index, threads, _train, argvs[index])
            ready = wait([child.report for child in running])
            for child in [c for c in running if c.report in ready]:
                running.remove(child)
                kind, value = _ended(child)
                if kind != "done":
                    others = runs.stopped([c.index for c in running], len(results), len(waiting))
                    raise _failure(child, kind, value, runs, others)
                _report(child.index, value, runs, len(results) + 1, len(argvs), results)
    except Stopped as stop:
        raise Stopped(stop.signum, runs.stopped([c.index for c in running], len(results), len(waiting))) from stop
    finally:
        _terminate(running)
    return [results[i] for i in range(len(argvs))]


def _report(index: int, value: object, runs: _Runs, count: int, total: int, results: dict[int, dict]) -> None:
    """Prints how a finished job went and keeps a run's results."""
    if index == CLIP:
        # its console went nowhere: say where its log is
        print(f"=> pretrained CLIP ready: {value} (open_clip's log of the pretraining: {pretrain.log_path(value)})")
        print(format_accuracy(pretrain.recorded_probe(value)))  # the probe its quiet console did not show
        return
    outcome, seconds = value
    results[index] = outcome
    scores = ", ".join(f"{target} {100 * res['mAP']:.1f}" for target, res in outcome.items())
    print(f"=> [{count}/{total}] {runs.names[index]} in {seconds:.0f} s; mAP {scores}")
