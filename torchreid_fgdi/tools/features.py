"""Features of new images from a trained checkpoint, with torchreid's `FeatureExtractor` interface.

torchreid's extractor needs the model name and input size typed again, normalises with ImageNet
statistics whatever the model was trained with, and returns unnormalised features. This one
rebuilds the model, input size and test transform from the config that our checkpoints carry
(or a config file for other checkpoints; or, for an FGDI state dict saved without a config, the
model its weights record and torchreid's test transform) and returns L2-normalised features, ready
for cosine ranking.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
from collections.abc import Mapping
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F
import torchreid
from PIL import Image
from yacs.config import CfgNode as CN

from .. import __version__
from ..config import RunSettings, get_default_config, load_config, load_config_text
from ..config.recipe import check_recipe
from ..data.images import read_image
from ..data.transforms import CLIP_FGDI, PerImageNorm
from ..errors import CheckpointError, ConfigError, NonFiniteFeaturesError
from ..evaluation import check_finite_features
from ..integration.compat import build_transforms
from ..models import VARIANTS, load_fgdi_checkpoint
from ..models.checkpoints import another_variant, load_torchreid_checkpoint, read_record, read_state_dict
from ..models.variants import variant_quick_gelu
from ..utils.checkpoint import NO_CONFIG_FIX, read_checkpoint, recorded_config_text

UNIT_TOLERANCE = 1e-3  # how far from 1 the L2 norm of a normalised feature may be


def not_unit_rows(features: torch.Tensor) -> int:
    """How many rows of `features` are not finite vectors of L2 norm 1 (within `UNIT_TOLERANCE`): a
    NaN, an Inf or a huge value (its square overflows) makes the norm NaN or Inf, a zero row 0."""
    norms = features.float().norm(dim=1)
    return int((~((norms - 1).abs() <= UNIT_TOLERANCE)).sum())  # NaN compares false


def unit_features(features: torch.Tensor, where: str) -> torch.Tensor:
    """`features` L2-normalised, refusing rows that are not finite or normalise to zeros: a row too
    large for float32 has an infinite norm, and F.normalize turns it silently into zeros."""
    unit = F.normalize(check_finite_features(features, where), dim=1)
    bad = not_unit_rows(unit)
    if bad:
        raise NonFiniteFeaturesError(
            f"the model gives features that normalise to zeros (all zero, or too large for float32) for {bad} of "
            f"{len(unit)} images of {where}: its weights are not sane (a diverged run?); no result was written"
        )
    return unit


def checkpoint_model_kwargs(cfg: CN, state: dict | None = None) -> dict:
    """`build_model` arguments for an FGDI model whose every weight comes from a checkpoint: no CLIP
    weights are loaded, but the activation is the one the CLIP it was trained from had. The sizes
    the weights determine (domains, cameras) are read off `state` when given."""
    state = state or {}
    num_domains = state["promptlearner.dmctx"].shape[0] if "promptlearner.dmctx" in state else len(cfg.data.sources)
    kwargs = RunSettings.from_config(cfg).model_kwargs(num_domains)
    if "cv_embed" in state:
        kwargs["num_cameras"] = state["cv_embed"].shape[0]
    kwargs["quick_gelu"] = variant_quick_gelu(cfg.model.name, kwargs["pretrained"], kwargs["quick_gelu"])
    return {**kwargs, "pretrained": False}


def _given_config(config_file: str, checkpoint: dict, model_path: str) -> CN:
    """`config_file`'s config, checked against the one the checkpoint records, if it records one (a
    checkpoint without is what `config_file` is for), for the keys that decide its features
    (`check_recipe`; extraction here is fp32, whatever ``fgdi.test_precision`` says)."""
    cfg = load_config(config_file)
    if checkpoint.get("config"):
        fix = f" (or leave out {config_file}: the checkpoint's own config is used then)"
        check_recipe(cfg, model_path, checkpoint, ignore=("fgdi.test_precision",), fix=fix)
    return cfg


def _recorded_model_config(record: Mapping, model_path: str) -> CN:
    """The config of an FGDI state dict saved without one (torchreid's way): the model its weights
    record (`FGDI.get_extra_state`) at the input size it was trained at, and torchreid's test
    transform (resize, ImageNet mean and std), which the log says."""
    cfg = get_default_config()
    height, width = record["trained_size"] or record["image_size"]
    cfg.model.name = record["variant"]
    cfg.data.height, cfg.data.width = height, width
    cfg.fgdi.stride = record["stride"] or 0
    cfg.fgdi.quick_gelu = record["quick_gelu"]
    cfg.fgdi.neck_feat = record["neck_feat"]
    cfg.freeze()
    print(
        f"=> {model_path} records no config: its model as its weights record it ({cfg.model.name} at "
        f"{height}x{width}) with torchreid's test transform (resize, ImageNet mean and std); if it was trained "
        f"with another, {NO_CONFIG_FIX}"
    )
    return cfg


def _check_record(model: torch.nn.Module, cfg: CN, record: Mapping, model_path: str) -> None:
    """Refuses a config given for a state dict saved without one that builds or feeds the model
    otherwise than its weights record: the features would not be the saved model's."""
    built = {**model.record, "size": f"{cfg.data.height}x{cfg.data.width}"}
    saved = {**record, "size": "x".join(map(str, record["trained_size"] or record["image_size"]))}
    keys = {"size": "data.height x data.width", "stride": "fgdi.stride", "quick_gelu": "fgdi.quick_gelu"}
    keys["neck_feat"] = "fgdi.neck_feat"
    changes = [f"{key} {saved[name]} -> {built[name]}" for name, key in keys.items() if saved[name] != built[name]]
    if changes:
        raise CheckpointError(
            f"{model_path}: its weights record another model than the config gives ({', '.join(changes)}): set "
            "these keys as the weights record them, or leave out the config file (the weights' record is used then)"
        )


def load_trained(model_path: str, config_file: str = "") -> tuple[torch.nn.Module, CN]:
    """The trained model (eval mode) and its config: `config_file` if given (refused where it gives the
    checkpoint another recipe than it records: `_given_config`, `_check_record`), else the one the
    checkpoint records, else the model its FGDI weights record (`_recorded_model_config`).
    Classes, domains, cameras and the position-embedding grid are read off the weights (a model
    trained through torchreid's own `scripts/main.py` keeps the grid of the size it was built at,
    whatever its data size; state dicts saved since FGDI models record themselves say it). The
    checkpoint is loaded from disk once, for both its config and its weights."""
    checkpoint = read_checkpoint(model_path)
    state = read_state_dict(checkpoint, model_path)
    record = read_record(state)
    record = record if record and record["variant"] in VARIANTS else None
    if config_file:
        cfg = _given_config(config_file, checkpoint, model_path)
    elif record and not checkpoint.get("config"):
        cfg = _recorded_model_config(record, model_path)
    else:
        cfg = load_config_text(recorded_config_text(checkpoint, model_path))
    classes = next((v.shape[0] for k, v in state.items() if k.endswith("classifier.weight")), 1)
    if record and record["variant"] != cfg.model.name:
        theirs, ours = record["variant"], f"{cfg.model.name} (the config's model.name)"
        fix = f"set model.name {theirs}, or leave out the config file (the weights' own record is used then)"
        raise another_variant(theirs, ours, "as its state dict records", fix)
    if cfg.model.name in VARIANTS:
        model = torchreid.models.build_model(cfg.model.name, classes, **checkpoint_model_kwargs(cfg, state))
        grid = None if record else _trained_grid(model, cfg, state, model_path)
        load_fgdi_checkpoint(model, state, ckpt_grid=grid)
        if record and config_file and not checkpoint.get("config"):
            _check_record(model, cfg, record, model_path)
    else:
        model = torchreid.models.build_model(cfg.model.name, classes, loss=cfg.loss.name, pretrained=False)
        load_torchreid_checkpoint(model, state, where=model_path)
    return model.eval(), cfg


def _trained_grid(model: torch.nn.Module, cfg: CN, state: dict, model_path: str) -> tuple[int, int] | None:
    """The patch grid of the checkpoint's ViT position embedding: that of the data size, of the
    variant's default size (where torchreid's `build_model` without ``image_size`` puts it), or a
    square one (the authors'). None of them: the config is not the one the weights were trained with."""
    key = "image_encoder.visual.positional_embedding"
    if key not in state or not hasattr(model.image_encoder, "grid_for"):
        return None
    sizes = [(cfg.data.height, cfg.data.width), VARIANTS[cfg.model.name]["image_size"]]
    patches = state[key].shape[0] - 1
    grids = [model.image_encoder.grid_for(size) for size in sizes] + [(math.isqrt(patches),) * 2]
    grid = next((g for g in grids if g[0] * g[1] == patches), None)
    if grid is None:
        raise CheckpointError(
            f"{model_path}: its position embedding holds {patches} patches, which fit {cfg.model.name} neither at "
            f"data.height x data.width {cfg.data.height}x{cfg.data.width} nor at its default size, nor as a square "
            "grid: the weights were trained with another config; pass --config-file <the training config> "
            "(its model.name, data.height and data.width)"
        )
    return grid


def test_transform(cfg: CN):
    """The transform the run tested with (the authors' pipeline or torchreid's resize + mean/std),
    built by the one builder torchreid's data managers call (`compat.build_transforms`, which
    knows the pipelines registered by name): what a config's ``data.transforms`` means is decided there.

    The builder prints both of its pipelines step by step; at inference that is noise, so its
    print-out is swallowed."""
    with contextlib.redirect_stdout(io.StringIO()):
        return build_transforms(
            cfg.data.height,
            cfg.data.width,
            transforms=list(cfg.data.transforms),
            norm_mean=cfg.data.norm_mean,
            norm_std=cfg.data.norm_std,
        )[1]


def preprocessing(cfg: CN) -> dict[str, str]:
    """`test_transform` in words a deployment can follow without this package: resize an RGB image
    to ``input_height`` x ``input_width`` with PIL's `resize` filter, scale pixels to [0, 1], then
    normalise: ``mean_std`` subtracts `norm_mean` and divides by `norm_std` per channel;
    ``per_image`` subtracts each channel's mean over the image and divides by
    sqrt(its variance + `norm_eps`) (`PerImageNorm`)."""
    common = {"input_height": str(cfg.data.height), "input_width": str(cfg.data.width), "pixel_scale": "1/255"}
    if CLIP_FGDI in cfg.data.transforms:
        return {**common, "resize": "bicubic", "normalization": "per_image", "norm_eps": repr(PerImageNorm.eps)}
    return {
        **common,
        "resize": "bilinear",
        "normalization": "mean_std",
        "norm_mean": json.dumps(list(cfg.data.norm_mean)),
        "norm_std": json.dumps(list(cfg.data.norm_std)),
    }


class FeatureExtractor:
    """``extractor(images) -> (N, D)`` L2-normalised features.

    Args:
        model_path: a checkpoint (``checkpoints/stage3.pth``, or any torchreid / authors' file
            together with `config_file`).
        config_file: the training config, for checkpoints that do not record theirs.
        device: ``'cpu'``, ``'cuda'``, ...; CUDA if available when ``None``.
        batch_size: images per forward pass.

    ``images``: one or a list of image paths, PIL images or H x W x 3 uint8 arrays, or an
    already transformed ``(N, 3, H, W)`` tensor.

    Examples::

        from torchreid_fgdi.tools.features import FeatureExtractor
        extractor = FeatureExtractor("log/fgdi/checkpoints/stage3.pth")
        features = extractor(["a.jpg", "b.jpg"])
        similarity = features @ features.T
    """

    def __init__(self, model_path: str, config_file: str = "", device: str | None = None, batch_size: int = 64):
        model, self.cfg = load_trained(model_path, config_file)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {device!r}: CUDA is not available on this machine; use cpu")
        self.model = model.to(self.device)
        self.transform = test_transform(self.cfg)
        self.batch_size = batch_size

    @cached_property
    def fingerprint(self) -> str:
        """A hash of everything these features depend on: the package version, the config (model,
        input size, transform) and every weight and buffer. Equal fingerprints, equal features."""
        digest = hashlib.sha256(f"{__version__}\n{self.cfg.dump()}".encode())
        for name, value in sorted(self.model.state_dict().items()):
            value = value.detach().cpu().contiguous()
            digest.update(f"{name} {value.dtype} {tuple(value.shape)}".encode())
            digest.update(value.reshape(-1).view(torch.uint8).numpy())
        return digest.hexdigest()

    def _tensor(self, image) -> torch.Tensor:
        if isinstance(image, str):
            image = read_image(image)
        elif isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(f"arrays must be H x W x 3 uint8 RGB images, got {image.shape} {image.dtype}")
            image = Image.fromarray(image)
        elif isinstance(image, Image.Image):
            image = image.convert("RGB")
        else:
            raise TypeError(f"expected an image path, a PIL image or an array, got {type(image).__name__}")
        return self.transform(image)

    @torch.no_grad()
    def __call__(self, images) -> torch.Tensor:
        if isinstance(images, torch.Tensor):
            batch = images if images.dim() == 4 else images.unsqueeze(0)
        else:
            if isinstance(images, (str, np.ndarray, Image.Image)):
                images = [images]
            images = list(images)
            starts = range(0, len(images), self.batch_size)
            batch = (torch.stack([self._tensor(i) for i in images[s : s + self.batch_size]]) for s in starts)
        chunks = batch.split(self.batch_size) if isinstance(batch, torch.Tensor) else batch
        features = [self.model(chunk.to(self.device)).float().cpu() for chunk in chunks]
        if not features:
            raise ValueError("no images given")
        return unit_features(torch.cat(features), "the given images")
