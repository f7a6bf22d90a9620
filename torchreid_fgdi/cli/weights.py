"""``torchreid-fgdi-weights``: list the released weights `hub.REGISTRY` knows, or download one.

A name also works as ``fgdi.clip_weights`` (or ``pretrained=`` of the model builders).
"""

from __future__ import annotations

import sys

from ..errors import ChecksumError
from ..models import hub
from .parsers import command_parser
from .refusals import console_script


def _cache_state(name: str) -> str:
    """'cached', 'not cached', or 'wrong file' for a file at the path whose sha256 is not the published
    one (a file put there by hand that every read of it would refuse)."""
    try:
        return "cached" if hub.local_weights(name) else "not cached"
    except ChecksumError:
        return "wrong file"


def listing() -> str:
    """What can be downloaded, each with its cache state, after what cannot (yet)."""
    trained = [name for name, entry in hub.REGISTRY.items() if entry.trained]
    if trained:
        head = f"trained CLIP-FGDI weights: {', '.join(trained)}; the others are CLIP backbones fgdi models start from"
    else:
        head = (
            "No trained CLIP-FGDI weights are released yet (their authors announce them as coming soon): "
            "train your own with torchreid-fgdi.\nWhat can be downloaded are the CLIP backbones fgdi models start from:"
        )
    rows = []
    for name, entry in hub.REGISTRY.items():
        cached = _cache_state(name)
        rows.append(
            f"{name:<22} {cached:<11} {entry.description}\n{'':<34} {entry.url}\n{'':<31} -> {hub.weights_path(name)}"
        )
    tail = (
        "--download NAME fetches one from its URL to its path (->), or put the file there by hand; "
        "model.pretrained True of the fgdi variants reads it from there (a wrong file, not the published one, "
        "is refused: move it away)"
    )
    return "\n".join([head, *rows, tail])


def weights(argv: list[str] | None = None) -> str:
    """Downloads the weights ``--download`` names and returns their path, or prints and returns the listing."""
    parser = command_parser(
        "torchreid-fgdi-weights",
        "Lists the weights this package can download, with their cache state, or downloads one\n"
        "(checked against its published sha256) into torch's cache and prints its path.",
        ["torchreid-fgdi-weights", "torchreid-fgdi-weights --download clip-vit-b16-openai"],
    )
    parser.add_argument(
        "--download",
        metavar="NAME",
        help="fetch NAME (one of those listed without options) into torch's cache and print its path",
    )
    args = parser.parse_args(argv)
    shown = hub.get_weights(args.download) if args.download else listing()
    print(shown)
    return shown


main = console_script(weights)


if __name__ == "__main__":
    sys.exit(main())
