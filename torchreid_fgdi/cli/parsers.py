"""The one way a command builds its argument parser, so every ``--help`` reads alike.

Each option's help ends with its default, and an ``examples:`` section of command lines that
work as typed follows the options.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

EXAMPLES_HEADING = "examples:"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description and examples keep their line breaks; an option's default follows its help
    (as with argparse's ArgumentDefaultsHelpFormatter), a list written as it is typed, and no
    default shown where there is none to show (off, empty) or the help already names it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        nothing = default is None or default is False or default in ("", [], argparse.SUPPRESS)
        if nothing or not action.option_strings or "default" in text:
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


def command_parser(prog: str, description: str, examples: Sequence[str]) -> argparse.ArgumentParser:
    """A command's parser: `description` under the usage line, then the options, then `examples`
    (command lines, each optionally followed by ``# what it does``)."""
    epilog = "\n".join([EXAMPLES_HEADING, *(f"  {example}" for example in examples)])
    return argparse.ArgumentParser(prog=prog, description=description, epilog=epilog, formatter_class=HelpFormatter)


def add_checkpoint_arguments(parser: argparse.ArgumentParser) -> None:
    """--weights and --config-file, as every command that loads a trained model reads them."""
    parser.add_argument("--weights", required=True, help="a trained checkpoint, e.g. log/.../checkpoints/stage3.pth")
    parser.add_argument(
        "--config-file",
        default="",
        help="the training config (a file, or an installed config by name: synthetic/fgdi_tiny), for a checkpoint "
        "that records none (torchreid's models', the authors', fgdi state dicts older than the record of their model; "
        "an fgdi state dict saved since is read by that record); one given for a checkpoint "
        "that records its own must agree with it on the keys that decide features, unless it sets "
        "test.allow_recipe_change True",
    )
