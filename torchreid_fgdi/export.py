"""`python -m torchreid_fgdi.export --weights CKPT --format onnx torchscript`: the image encoder for deployment.

The exported graph is what `inference.FeatureExtractor` computes after its transform: the eval
feature of a batch of transformed images, L2-normalised (input ``images``, N x 3 x H x W float32;
output ``features``, N x D). The batch size is free. Each export is checked against PyTorch on a
random batch (onnxruntime for ONNX) before it is written.
"""

from __future__ import annotations

import argparse
import os
import os.path as osp
import warnings

import torch
import torch.nn.functional as F

from . import atomic
from .inference import build_from_checkpoint, checkpoint_config

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


def export_torchscript(module: torch.nn.Module, example: torch.Tensor, path: str) -> float:
    """Traces `module`, saves it and returns the largest difference to PyTorch on a second batch."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated, still widely deployed
        traced = torch.jit.trace(module, example, check_trace=False)
    probe = torch.randn(example.shape[0] + 1, *example.shape[1:])
    with torch.no_grad():
        difference = _max_difference(module(probe), traced(probe))
    atomic.write_atomically(path, lambda tmp: traced.save(tmp))
    return difference


def export_onnx(module: torch.nn.Module, example: torch.Tensor, path: str) -> float:
    """Exports `module` with a free batch size and returns the largest difference onnxruntime gives."""
    import onnxruntime

    def write(tmp: str) -> None:
        batch = torch.export.Dim("batch", min=1)
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            input_names=["images"],
            output_names=["features"],
            dynamic_shapes={"images": {0: batch}},
        )
        program.save(tmp)

    atomic.write_atomically(path, write)
    probe = torch.randn(example.shape[0] + 1, *example.shape[1:])
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        return _max_difference(module(probe), session.run(["features"], {"images": probe.numpy()})[0])


def export(model_path: str, out_dir: str, formats=FORMATS, config_file: str = "") -> dict[str, str]:
    """Writes ``<out_dir>/<checkpoint name>.onnx`` / ``.torchscript.pt``; {format: path}.

    Raises if an export differs from PyTorch by more than `TOLERANCE` (the file is then removed).
    """
    cfg = checkpoint_config(model_path, config_file)
    module = NormalizedFeatures(build_from_checkpoint(model_path, cfg)).eval()
    example = torch.randn(2, 3, cfg.data.height, cfg.data.width)
    stem = osp.join(out_dir, osp.splitext(osp.basename(model_path))[0])
    written = {}
    for fmt in formats:
        if fmt not in FORMATS:
            raise ValueError(f"unknown export format {fmt!r}: choose from {', '.join(FORMATS)}")
        path = stem + (".onnx" if fmt == "onnx" else ".torchscript.pt")
        difference = (export_onnx if fmt == "onnx" else export_torchscript)(module, example, path)
        if difference > TOLERANCE:
            os.remove(path)
            raise RuntimeError(f"the {fmt} export differs from PyTorch by {difference:.2e} (> {TOLERANCE}); not kept")
        print(f"=> {fmt}: {path} (max |difference| to PyTorch {difference:.1e})")
        written[fmt] = path
    return written


def main(argv=None) -> dict[str, str]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, help="a checkpoint, e.g. log/.../checkpoints/stage3.pth")
    parser.add_argument("--config-file", default="", help="the training config, if the checkpoint has none")
    parser.add_argument("--format", nargs="+", default=list(FORMATS), choices=FORMATS)
    parser.add_argument("--out", default="export", help="output folder")
    args = parser.parse_args(argv)
    return export(args.weights, args.out, args.format, args.config_file)


if __name__ == "__main__":
    main()
