"""``torchreid-fgdi-export --weights CKPT --format onnx torchscript``: the image encoder for deployment.

The exported graph is what `inference.FeatureExtractor` computes after its transform: the eval
feature of a batch of transformed images, L2-normalised (input ``images``, N x 3 x H x W float32;
output ``features``, N x D). The batch size is free. Each export is checked against PyTorch on a
random batch (onnxruntime for ONNX) before it is written.
"""

from __future__ import annotations

import functools
import os.path as osp
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from . import atomic
from .inference import load_trained
from .parsers import command_parser

FORMATS = ("onnx", "torchscript")
TOLERANCE = 1e-4


class NormalizedFeatures(torch.nn.Module):
    """The model's eval feature, L2-normalised."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model(images).float(), dim=1)


def _max_difference(want: torch.Tensor, got) -> float:
    return float((want - torch.as_tensor(got)).abs().max())


def export_torchscript(module: torch.nn.Module, example: torch.Tensor, path: str, probe: torch.Tensor) -> float:
    """Traces `module` into `path`; the largest difference of the saved file to PyTorch on `probe`."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated, still widely deployed
        torch.jit.trace(module, example, check_trace=False).save(path)
        return _max_difference(module(probe), torch.jit.load(path)(probe))


def export_onnx(module: torch.nn.Module, example: torch.Tensor, path: str, probe: torch.Tensor) -> float:
    """Exports `module` to `path` with a free batch size; the largest difference onnxruntime gives on `probe`."""
    import onnxruntime

    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(
        module,
        (example,),
        dynamo=True,
        input_names=["images"],
        output_names=["features"],
        dynamic_shapes={"images": {0: batch}},
    )
    program.save(path)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        return _max_difference(module(probe), session.run(["features"], {"images": probe.numpy()})[0])


EXPORTERS = {"onnx": (".onnx", export_onnx), "torchscript": (".torchscript.pt", export_torchscript)}


def _write_checked(tmp: str, fmt: str, module: torch.nn.Module, example: torch.Tensor, probe: torch.Tensor) -> None:
    difference = EXPORTERS[fmt][1](module, example, tmp, probe)
    if not difference <= TOLERANCE:  # NaN compares false either way
        raise RuntimeError(f"the {fmt} export differs from PyTorch by {difference:.2e} (> {TOLERANCE}); not written")
    print(f"=> {fmt}: max |difference| to PyTorch {difference:.1e}")


def export(model_path: str, out_dir: str, formats: Sequence[str] = FORMATS, config_file: str = "") -> dict[str, str]:
    """Writes ``<out_dir>/<checkpoint name>.onnx`` / ``.torchscript.pt``; {format: path}.

    An export that differs from PyTorch by more than `TOLERANCE` raises and is not written (a
    file of an earlier export stays as it was).
    """
    model, cfg = load_trained(model_path, config_file)
    module = NormalizedFeatures(model).eval()
    example = torch.randn(2, 3, cfg.data.height, cfg.data.width)
    probe = torch.randn(3, 3, cfg.data.height, cfg.data.width)  # another batch size than the example's
    stem = osp.join(out_dir, osp.splitext(osp.basename(model_path))[0])
    written = {}
    for fmt in formats:
        if fmt not in EXPORTERS:
            raise ValueError(f"unknown export format {fmt!r}: choose from {', '.join(FORMATS)}")
        write = functools.partial(_write_checked, fmt=fmt, module=module, example=example, probe=probe)
        written[fmt] = atomic.write_atomically(stem + EXPORTERS[fmt][0], write)
        print(f"=> {fmt}: {written[fmt]}")
    return written


def main(argv: list[str] | None = None) -> dict[str, str]:
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
    parser.add_argument("--weights", required=True, help="a trained checkpoint, e.g. log/.../checkpoints/stage3.pth")
    parser.add_argument(
        "--config-file", default="", help="the training config, for a checkpoint that records none (torchreid's)"
    )
    parser.add_argument(
        "--format",
        nargs="+",
        default=list(FORMATS),
        choices=FORMATS,
        help="formats to write (onnx needs the export extra)",
    )
    parser.add_argument("--out", default="export", help="folder for <checkpoint name>.onnx / .torchscript.pt")
    args = parser.parse_args(argv)
    return export(args.weights, args.out, args.format, args.config_file)


if __name__ == "__main__":
    main()
