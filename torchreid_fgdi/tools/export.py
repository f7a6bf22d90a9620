"""The image encoder for deployment, as ONNX and / or TorchScript: what ``torchreid-fgdi-export`` runs.

The exported graph is what `inference.FeatureExtractor` computes after its transform: the eval
feature of a batch of transformed images, L2-normalised (input ``images``, N x 3 x H x W float32;
output ``features``, N x D). The batch size is free; height and width are fixed at the trained size
(features are only defined there: the transform resizes every image to it, and a ViT's resampling
of its position embedding for other sizes does not survive the export). Each file carries what a
deployment needs beside it (`metadata`: input size, preprocessing, feature dimension, model name)
in ONNX's ``metadata_props`` or TorchScript's extra file ``metadata.json``. Weights whose features
overflow float32 (Inf, or a norm too large to normalise) are refused before anything is written,
and each export is checked against PyTorch on a random batch (onnxruntime for ONNX) before it is
written. ONNX needs the ``export`` extra (onnx, onnxscript, onnxruntime); without it, asking for
ONNX refuses before any work.
"""

from __future__ import annotations

import functools
import json
import os.path as osp
import warnings
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from .. import __version__
from ..errors import NonFiniteFeaturesError
from ..utils import atomic, extras
from .features import load_trained, not_unit_rows, preprocessing

FORMATS = ("onnx", "torchscript")
TOLERANCE = 1e-4
INPUT, OUTPUT = "images", "features"
TORCHSCRIPT_METADATA = "metadata.json"  # the extra file of a TorchScript export holding `metadata`
ONNX_MODULES = ("onnx", "onnxscript", "onnxruntime")  # torch.onnx.export's, and the check's


class NormalizedFeatures(torch.nn.Module):
    """The model's eval feature, L2-normalised."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model(images).float(), dim=1)


def metadata(cfg: CN, model_path: str, feature_dim: int) -> dict[str, str]:
    """Everything a deployment needs beside the graph, as strings: model, input and preprocessing
    (`inference.preprocessing`), the one free axis, and the output."""
    return {
        "model_name": cfg.model.name,
        "checkpoint": osp.basename(model_path),
        "torchreid_fgdi_version": __version__,
        "input_name": INPUT,
        "input_layout": "NCHW float32 RGB",
        **preprocessing(cfg),
        "dynamic_axes": "batch",  # height and width are fixed at input_height x input_width
        "output_name": OUTPUT,
        "feature_dim": str(feature_dim),
        "feature_norm": "L2 (cosine similarity is the dot product)",
    }


def _max_difference(want: torch.Tensor, got) -> float:
    return float((want - torch.as_tensor(got)).abs().max())


def export_torchscript(
    module: torch.nn.Module, example: torch.Tensor, path: str, probe: torch.Tensor, meta: Mapping[str, str]
) -> float:
    """Traces `module` into `path`, `meta` as its extra file; the largest difference of the saved file
    to PyTorch on `probe`."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated, still widely deployed
        traced = torch.jit.trace(module, example, check_trace=False)
        traced.save(path, _extra_files={TORCHSCRIPT_METADATA: json.dumps(dict(meta), indent=1)})
        return _max_difference(module(probe), torch.jit.load(path)(probe))


def export_onnx(
    module: torch.nn.Module, example: torch.Tensor, path: str, probe: torch.Tensor, meta: Mapping[str, str]
) -> float:
    """Exports `module` to `path` with a free batch size and `meta` as its metadata_props; the largest
    difference onnxruntime gives on `probe`."""
    import onnxruntime

    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(
        module,
        (example,),
        dynamo=True,
        input_names=[INPUT],
        output_names=[OUTPUT],
        dynamic_shapes={INPUT: {0: batch}},
        verbose=False,  # its step-by-step progress lines
    )
    program.model.metadata_props.update(meta)
    program.save(path)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        return _max_difference(module(probe), session.run([OUTPUT], {INPUT: probe.numpy()})[0])


EXPORTERS = {"onnx": (".onnx", export_onnx), "torchscript": (".torchscript.pt", export_torchscript)}


def _write_checked(
    tmp: str,
    fmt: str,
    module: torch.nn.Module,
    example: torch.Tensor,
    probe: torch.Tensor,
    meta: Mapping[str, str] | None = None,
) -> None:
    difference = EXPORTERS[fmt][1](module, example, tmp, probe, meta or {})
    if not difference <= TOLERANCE:  # NaN compares false either way
        raise RuntimeError(f"the {fmt} export differs from PyTorch by {difference:.2e} (> {TOLERANCE}); not written")
    print(f"=> {fmt}: max |difference| to PyTorch {difference:.1e}")


def _largest_weight(model: torch.nn.Module) -> tuple[float, str]:
    """The largest absolute weight and its name: what made the features overflow."""
    return max((float(v.abs().max()), k) for k, v in model.state_dict().items() if v.is_floating_point() and v.numel())


def _check_outputs(module: NormalizedFeatures, batch: torch.Tensor, model_path: str) -> None:
    """Refuses weights that are finite but not sane: features that overflow float32 export as NaN
    (or normalise to zeros), and the export's check against PyTorch could only report a NaN."""
    with torch.no_grad():
        features = module.model(batch).float()
    bad = not_unit_rows(F.normalize(features, dim=1))  # a NaN or Inf row normalises to NaN, counted too
    if bad:
        value, name = _largest_weight(module.model)
        raise NonFiniteFeaturesError(
            f"{model_path}: the model's features overflow float32 ({bad} of a random batch of {len(batch)} are "
            f"not finite or normalise to zeros; its largest weight is {value:.1e}, in {name}): the weights are not "
            "sane (a diverged run?); use an earlier checkpoint. Nothing was exported"
        )


def export(model_path: str, out_dir: str, formats: Sequence[str] = FORMATS, config_file: str = "") -> dict[str, str]:
    """Writes ``<out_dir>/<checkpoint name>.onnx`` / ``.torchscript.pt``; {format: path}.

    An export that differs from PyTorch by more than `TOLERANCE` raises and is not written (a
    file of an earlier export stays as it was).
    """
    for fmt in formats:
        if fmt not in EXPORTERS:
            raise ValueError(f"unknown export format {fmt!r}: choose from {', '.join(FORMATS)}")
    if "onnx" in formats:
        extras.require(
            "export", ONNX_MODULES, "the ONNX export (--format onnx)", "--format torchscript needs none of it"
        )
    model, cfg = load_trained(model_path, config_file)
    module = NormalizedFeatures(model).eval()
    example = torch.randn(2, 3, cfg.data.height, cfg.data.width)
    probe = torch.randn(3, 3, cfg.data.height, cfg.data.width)  # another batch size than the example's
    _check_outputs(module, torch.cat([example, probe]), model_path)
    with torch.no_grad():
        meta = metadata(cfg, model_path, module(example).shape[1])
    stem = osp.join(out_dir, osp.splitext(osp.basename(model_path))[0])
    written = {}
    for fmt in formats:
        write = functools.partial(_write_checked, fmt=fmt, module=module, example=example, probe=probe, meta=meta)
        written[fmt] = atomic.write_atomically(stem + EXPORTERS[fmt][0], write)
        print(f"=> {fmt}: {written[fmt]}")
    return written
