"""``torchreid-fgdi-export --weights CKPT [--format onnx torchscript]``: the command line of `tools.export`.

ONNX needs the ``export`` extra; without it ``--format onnx`` refuses in one line naming it.
"""

from __future__ import annotations

import sys

from ..tools import export as exporting
from ..utils import atomic
from .parsers import add_checkpoint_arguments, command_parser
from .refusals import console_script


def export(argv: list[str] | None = None) -> dict[str, str]:
    """Exports in each format asked for; returns the written files by format."""
    parser = command_parser(
        "torchreid-fgdi-export",
        "Writes a trained checkpoint's image encoder as ONNX and / or TorchScript (input: transformed\n"
        "images; output: L2-normalised features), each checked against PyTorch before it is kept.",
        [
            "torchreid-fgdi-export --weights log/synthetic/fgdi_tiny/checkpoints/stage3.pth",
            "torchreid-fgdi-export --weights log/synthetic/fgdi_tiny/checkpoints/stage3.pth "
            "--format onnx --out export/",
        ],
    )
    add_checkpoint_arguments(parser)
    parser.add_argument(
        "--format",
        nargs="+",
        default=list(exporting.FORMATS),
        choices=exporting.FORMATS,
        help="formats to write (onnx needs the export extra)",
    )
    parser.add_argument("--out", default="export", help="folder for <checkpoint name>.onnx / .torchscript.pt")
    args = parser.parse_args(argv)
    atomic.check_output_folder(args.out, "--out")
    return exporting.export(args.weights, args.out, args.format, args.config_file)


main = console_script(export)


if __name__ == "__main__":
    sys.exit(main())
