"""How a command ends when the package refuses to go on: one ``error:`` line, not a traceback.

A refusal the package diagnosed itself (an `FGDIError`, or a path the user named that does not
exist) is the whole story, so it prints as ``error: <message>`` on stderr and the command exits
2 for a config or usage error, 1 otherwise. ``TORCHREID_FGDI_DEBUG=1`` lets it through with its
traceback. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from ..errors import ConfigError, FGDIError

DEBUG_VARIABLE = "TORCHREID_FGDI_DEBUG"
DEBUG_HINT = f"{DEBUG_VARIABLE}=1 shows the traceback"
# FileNotFoundError and NotADirectoryError: a path typed on the command line or in a config; the
# message names it. Plain ValueError / RuntimeError keep their traceback: bugs raise them too.
REFUSALS = (FGDIError, FileNotFoundError, NotADirectoryError)
USAGE_STATUS = 2  # argparse's, for a bad command line; a bad config is one too
FAILURE_STATUS = 1


def debugging() -> bool:
    return os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")


def refusal_text(err: BaseException) -> str:
    """``error: <message>``, the debug hint on the same line for a one-line message, below it otherwise."""
    message = str(err)
    return f"error: {message}" + ("\n" if "\n" in message else " ") + f"({DEBUG_HINT})"


def run_command(main: Callable[[list[str] | None], object], argv: list[str] | None = None) -> int:
    """`main(argv)`'s exit status: 0, or a refusal printed to stderr and its status."""
    try:
        main(argv)
    except REFUSALS as err:
        if debugging():
            raise
        sys.stdout.flush()  # what the command printed comes first in a log of both streams
        print(refusal_text(err), file=sys.stderr)
        return USAGE_STATUS if isinstance(err, ConfigError) else FAILURE_STATUS
    return 0


def console_script(worker: Callable[[list[str] | None], object]) -> Callable[[list[str] | None], int]:
    """A command's console script (``main``): `worker(argv)`, a refusal printed as one ``error:`` line,
    and the exit status for `sys.exit`."""

    def main(argv: list[str] | None = None) -> int:
        return run_command(worker, argv)

    main.__doc__ = f"`{worker.__name__}` as a console script: its exit status, a refusal as one ``error:`` line."
    return main
