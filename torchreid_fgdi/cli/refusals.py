"""How a command ends when the package refuses to go on: one ``error:`` line, not a traceback.

A refusal the package diagnosed itself (an `FGDIError`, or a path the user named that does not
exist) is the whole story, so it prints as ``error: <message>`` on stderr and the command exits
2 for a config or usage error, 1 otherwise. ``TORCHREID_FGDI_DEBUG=1`` lets it through with its
traceback. Any other exception is a bug and keeps its traceback.

A stop signal (SIGINT, SIGTERM, SIGHUP) is not a bug either: while a command runs it raises
`Stopped` where the command stands, so the command unwinds (its run folder's lock is released,
and writes are atomic, so nothing is half-written). The command ends with one ``error: stopped
by SIGTERM...`` line and the shell's status for a signal, 128 + its number (130, 143, 129).

Under torchrun a rank other than 0 prints its own refusal as ``[rankN]: error: ...``; when a rank
fails, rank 0 says in one line that another process ended first, instead of the traceback of
the collective it was waiting in.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator

from ..engine import distributed
from ..errors import ConfigError, FGDIError

DEBUG_VARIABLE = "TORCHREID_FGDI_DEBUG"
DEBUG_HINT = f"{DEBUG_VARIABLE}=1 shows the traceback"
# FileNotFoundError and NotADirectoryError: a path typed on the command line or in a config; the
# message names it. Plain ValueError / RuntimeError keep their traceback: bugs raise them too.
REFUSALS = (FGDIError, FileNotFoundError, NotADirectoryError)
USAGE_STATUS = 2  # argparse's, for a bad command line; a bad config is one too
FAILURE_STATUS = 1


LOST_PEER = (
    "another process of this torchrun job ended first, so rank 0 stopped too: that process's error is "
    "the line marked [rankN]: (torchrun's summary names its exit status)"
)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
SIGNAL_STATUS_BASE = 128  # a shell reports a process ended by signal N as 128 + N


class Stopped(BaseException):
    """A stop signal arrived. A `BaseException` like `KeyboardInterrupt`, so no ``except Exception``
    holds it up; `detail` says what was stopped and how to continue it."""

    def __init__(self, signum: int, detail: str = ""):
        super().__init__(signum, detail)
        self.signum, self.detail = signum, detail

    def __str__(self) -> str:
        name = signal.Signals(self.signum).name
        return f"stopped by {name}" + (f": {self.detail}" if self.detail else "")


def _stop(signum: int, frame: object) -> None:
    for other in STOP_SIGNALS:  # a second signal must not interrupt the unwinding the first one started
        signal.signal(other, signal.SIG_IGN)
    raise Stopped(signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Inside the block a stop signal raises `Stopped`; outside it, the signals do what they did before.
    Only the main thread can take signals, so elsewhere the block changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _stop) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def debugging() -> bool:
    return os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")


def refusal_text(err: BaseException) -> str:
    """``error: <message>``, the debug hint on the same line for a one-line message, below it otherwise."""
    message = str(err)
    return f"error: {message}" + ("\n" if "\n" in message else " ") + f"({DEBUG_HINT})"


def run_command(main: Callable[[list[str] | None], object], argv: list[str] | None = None) -> int:
    """`main(argv)`'s exit status: 0, or a refusal or a stop printed to stderr and its status.
    Under torchrun, rank 0 alone prints the command's lines (`distributed.one_voice`); another
    rank prints only its own refusal or traceback, each line prefixed with its rank."""
    with distributed.one_voice():
        return _run_command(main, argv)


def _run_command(main: Callable[[list[str] | None], object], argv: list[str] | None) -> int:
    try:
        with stop_on_signals():
            main(argv)
    except (*REFUSALS, Stopped) as err:
        if debugging():
            raise
        sys.stdout.flush()  # what the command printed comes first in a log of both streams
        print(refusal_text(err), file=sys.stderr)
        if isinstance(err, Stopped):
            return SIGNAL_STATUS_BASE + err.signum
        return USAGE_STATUS if isinstance(err, ConfigError) else FAILURE_STATUS
    except RuntimeError as err:
        if debugging() or not distributed.lost_peer(err):
            raise
        sys.stdout.flush()
        if distributed.speaks():  # the failed rank has said why; the others end without a word
            print(f"error: {LOST_PEER}", file=sys.stderr)
        return FAILURE_STATUS
    return 0


def console_script(worker: Callable[[list[str] | None], object]) -> Callable[[list[str] | None], int]:
    """A command's console script (``main``): `worker(argv)`, a refusal printed as one ``error:`` line,
    and the exit status for `sys.exit`."""

    def main(argv: list[str] | None = None) -> int:
        return run_command(worker, argv)

    main.__doc__ = f"`{worker.__name__}` as a console script: its exit status, a refusal as one ``error:`` line."
    return main
