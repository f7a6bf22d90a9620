"""Fixes for torchreid-pip 0.2.5 under current numpy / torch, applied once on import.

Each fix names the breakage it repairs; each has a test in tests/test_compat.py that fails
without it. Nothing else in this package patches torchreid.
"""

from __future__ import annotations

import functools
import glob
import importlib
import os
import stat
import sys
import time
import types

import numpy as np
import torch

_SUBMODULES = ("data", "engine", "losses", "metrics", "models", "optim", "utils")
_TORCHREID = {}  # torchreid's own functions that a patch wraps


def alias_submodules() -> None:
    """Make upstream-style imports (`import torchreid.data`, `from torchreid.utils import X`) work.

    torchreid-pip keeps the code under `torchreid.reid.*` and only re-exports the subpackages
    as attributes, so torchreid's own documented imports raise ModuleNotFoundError.
    """
    import torchreid

    if not hasattr(torchreid, "reid"):
        return
    for name in _SUBMODULES:
        sys.modules.setdefault(f"torchreid.{name}", importlib.import_module(f"torchreid.reid.{name}"))


def allow_numpy_scalars_in_checkpoints() -> None:
    """Let torchreid load the checkpoints it writes itself.

    `save_checkpoint` stores `rank1` as a numpy scalar and `load_checkpoint` calls `torch.load`
    with torch>=2.6's default `weights_only=True`, which refuses numpy scalars, so
    `load_checkpoint`, `load_pretrained_weights`, `resume_from_checkpoint` and
    `FeatureExtractor(model_path=...)` fail on every checkpoint torchreid saved. Numpy scalars
    and dtypes are plain data, so allowing them keeps the safe loader.
    """
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    dtypes = [type(np.dtype(t)) for t in (np.float64, np.float32, np.int64, np.int32, np.bool_)]
    torch.serialization.add_safe_globals([multiarray.scalar, np.dtype, *dtypes])


def image_dataset_registry() -> dict:
    """torchreid's name -> class table of image datasets.

    torchreid offers `register_image_dataset` (which raises on a second call) but no way to
    look a name up, so idempotent registration has to read the table.
    """
    from torchreid.reid.data import datasets

    return vars(datasets)["__image_datasets"]


def model_registry() -> dict:
    """torchreid's name -> builder table behind `build_model` and `show_avai_models`.

    torchreid has no `register_model`; a plugin model is a new entry in this table.
    """
    from torchreid.reid import models

    return vars(models)["__model_factory"]


def build_model_forwards_extra_kwargs() -> None:
    """Let `torchreid.models.build_model(name, num_classes, ..., **kwargs)` pass model arguments on.

    torchreid's `build_model` takes a fixed argument list, so a model that needs more than the
    number of identities (FGDI needs the number of source domains, the input size, the CLIP
    weights) cannot be built through it. The replacement keeps the signature and behaviour and
    forwards any extra keyword argument to the model's builder.
    """
    from torchreid.reid import models

    original = models.build_model
    if getattr(original, "forwards_extra_kwargs", False):
        return

    @functools.wraps(original)
    def build_model(name, num_classes, loss="softmax", pretrained=True, use_gpu=True, **kwargs):
        if not kwargs:
            return original(name, num_classes, loss=loss, pretrained=pretrained, use_gpu=use_gpu)
        factories = model_registry()
        if name not in factories:
            raise KeyError(f"Unknown model: {name}. Must be one of {list(factories)}")
        return factories[name](num_classes=num_classes, loss=loss, pretrained=pretrained, use_gpu=use_gpu, **kwargs)

    build_model.forwards_extra_kwargs = True
    models.build_model = build_model


def usable_ranks(q_pids, q_camids, g_pids, g_camids, max_rank: int) -> int:
    """`max_rank` capped at the smallest gallery left to a query once its identity's images from
    its own camera are dropped (see `evaluate_rank`)."""
    same = (q_pids[:, None] == g_pids[None, :]) & (q_camids[:, None] == g_camids[None, :])
    return max(1, min(max_rank, int((len(g_pids) - same.sum(1)).min())))


def evaluate_rank(
    distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50, use_metric_cuhk03=False, use_cython=True
):
    """torchreid's `evaluate_rank`, also on galleries with fewer than `max_rank` usable images.

    torchreid's Python Market-1501 metric cuts each query's CMC at `max_rank` after dropping the
    gallery images of the query's own identity and camera; when fewer than `max_rank` remain, the
    curves differ in length and stacking them raises ``ValueError: ... inhomogeneous shape``.
    Ranks are then capped at the smallest usable gallery, so the CMC is shorter but exact.
    Applied to torchreid's own engines too (`rank_metric_on_small_galleries`).
    """
    from torchreid.reid import metrics

    if not use_metric_cuhk03:
        max_rank = usable_ranks(q_pids, q_camids, g_pids, g_camids, max_rank)
    return _TORCHREID.get("evaluate_rank", metrics.evaluate_rank)(
        distmat, q_pids, g_pids, q_camids, g_camids, max_rank, use_metric_cuhk03, use_cython
    )


def evaluate_rank_for_torchreid_engines(
    distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50, use_metric_cuhk03=False, use_cython=True
):
    """`evaluate_rank` with the CMC padded with NaN up to `max_rank`: torchreid's engines print fixed
    ranks (1, 5, 10, 20), which a gallery smaller than that does not define; NaN, not a made-up value."""
    cmc, mAP = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, use_metric_cuhk03, use_cython)
    return np.concatenate([cmc, np.full(max(0, max_rank - len(cmc)), np.nan, dtype=cmc.dtype)]), mAP


def rank_metric_on_small_galleries() -> None:
    from torchreid.reid import metrics

    _TORCHREID.setdefault("evaluate_rank", metrics.evaluate_rank)
    metrics.evaluate_rank = evaluate_rank_for_torchreid_engines


_READ_ATTEMPTS = 3


class UnreadableImageError(OSError):
    """An image file that PIL cannot decode (corrupt, truncated, empty or not an image)."""


def read_image(path: str):
    """torchreid's `read_image`, but a file that cannot be decoded fails with its path.

    torchreid retries forever on any IOError ("Will redo. Don't worry. Just chill."), so one
    corrupt or truncated file hangs training inside a DataLoader worker. A few retries cover a
    flaky network file system; then the error names the file. Grayscale, RGBA, CMYK and palette
    images are converted to RGB, as torchreid does, after turning the image as its EXIF orientation
    says (as the CLIP-FGDI authors read images; torchreid does not).
    """
    from PIL import Image, ImageOps

    if not os.path.exists(path):
        raise FileNotFoundError(f'image "{path}" does not exist')
    if not stat.S_ISREG(os.stat(path).st_mode):  # opening a named pipe would wait forever
        raise UnreadableImageError(f'"{path}" is not a regular file (a named pipe, device or folder): remove it')
    for attempt in range(_READ_ATTEMPTS):
        try:
            with Image.open(path) as img:
                return ImageOps.exif_transpose(img).convert("RGB")
        except Image.DecompressionBombError as err:
            raise UnreadableImageError(f'image "{path}" is implausibly large ({err}): replace or remove it') from err
        except OSError as err:
            if attempt == _READ_ATTEMPTS - 1:
                raise UnreadableImageError(f'cannot decode image "{path}" ({err}): replace or remove the file') from err
            time.sleep(0.1)


def read_images_without_endless_retries() -> None:
    """Makes torchreid's datasets read images with `read_image` above."""
    from torchreid.reid.data.datasets import dataset
    from torchreid.reid.utils import tools

    dataset.read_image = tools.read_image = read_image


def save_checkpoint(state: dict, save_dir: str, is_best: bool = False, remove_module_from_keys: bool = False) -> None:
    """torchreid's `save_checkpoint`, written atomically.

    torchreid writes ``model.pth.tar-<epoch>`` in place, so a run killed during a save leaves a
    truncated newest checkpoint, the one a resume picks. Same files, same printout.
    """
    from . import atomic

    if remove_module_from_keys:
        state["state_dict"] = {k.removeprefix("module."): v for k, v in state["state_dict"].items()}
    fpath = os.path.join(save_dir, f"model.pth.tar-{state['epoch']}")
    atomic.save(state, fpath)
    print(f'Checkpoint saved to "{fpath}"')
    if is_best:
        atomic.save(state, os.path.join(save_dir, "model-best.pth.tar"))


def save_checkpoints_atomically() -> None:
    from torchreid.reid import utils
    from torchreid.reid.engine import engine
    from torchreid.reid.utils import torchtools

    utils.save_checkpoint = torchtools.save_checkpoint = engine.save_checkpoint = save_checkpoint


def glob_with_literal_folders(pattern: str) -> list[str]:
    """`glob.glob` for torchreid's ``osp.join(folder, '*.jpg')`` patterns, the folder taken literally.

    torchreid globs a dataset's folder path as a pattern, so a data root such as ``run[1]`` matches
    nothing ("no images") or, worse, a sibling ``run1/`` whose images are then read silently. The
    trailing components that start with ``*`` are the pattern; everything before is a path.
    """
    parts = pattern.split(os.sep)
    start = len(parts)
    while start > 0 and parts[start - 1].startswith("*"):
        start -= 1
    return glob.glob(os.path.join(glob.escape(os.sep.join(parts[:start])), *parts[start:]))


def dataset_folders_are_paths() -> None:
    """Makes torchreid's image datasets read their folders with `glob_with_literal_folders`."""
    from torchreid.reid.data.datasets import image

    shim = types.SimpleNamespace(glob=glob_with_literal_folders, escape=glob.escape)
    for module in vars(image).values():
        if isinstance(module, types.ModuleType) and getattr(module, "glob", None) is glob:
            module.glob = shim


_SAMPLERS: dict = {}  # name -> class, samplers a plugin adds to torchreid's


def register_sampler(name: str, sampler_class) -> None:
    """Makes torchreid's data managers accept `name` as ``train_sampler``.

    torchreid's `build_train_sampler` asserts the name is in a fixed list and builds its five
    samplers with an if-chain, so no other sampler can be used by name. A registered class is
    built as ``sampler_class(data_source, batch_size, num_instances)``.
    """
    from torchreid.reid.data import sampler

    _SAMPLERS[name] = sampler_class
    if name not in sampler.AVAI_SAMPLERS:
        sampler.AVAI_SAMPLERS.append(name)


def build_train_sampler(
    data_source, train_sampler, batch_size=32, num_instances=4, num_cams=1, num_datasets=1, **kwargs
):
    """torchreid's `build_train_sampler`, which also builds the samplers `register_sampler` added."""
    if train_sampler in _SAMPLERS:
        return _SAMPLERS[train_sampler](data_source, batch_size, num_instances)
    return _TORCHREID["build_train_sampler"](
        data_source, train_sampler, batch_size=batch_size, num_instances=num_instances,
        num_cams=num_cams, num_datasets=num_datasets, **kwargs,
    )  # fmt: skip


def samplers_by_name() -> None:
    from torchreid.reid.data import datamanager, sampler

    _TORCHREID.setdefault("build_train_sampler", sampler.build_train_sampler)
    sampler.build_train_sampler = datamanager.build_train_sampler = build_train_sampler


def load_pretrained_weights(model, weight_path: str) -> None:
    """torchreid's `load_pretrained_weights`, but a model that can fit a checkpoint of another input
    size to itself (`FGDI.fit_checkpoint`: the ViT position embedding) does so first.

    torchreid keeps only the weights whose shapes match, so the position embedding of a checkpoint
    trained at 256x128 is silently dropped when torchreid's `FeatureExtractor` builds the model at
    its default size; the features then come from the untrained embedding. Same messages as torchreid.
    """
    from .checkpoint_file import read_checkpoint

    fit = getattr(model, "fit_checkpoint", None)
    if fit is None:
        return _TORCHREID["load_pretrained_weights"](model, weight_path)
    checkpoint = read_checkpoint(weight_path)
    state = fit(checkpoint.get("state_dict", checkpoint), checkpoint.get("config"))
    own = model.state_dict()
    kept = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict({**own, **kept})
    discarded = sorted(set(state) - set(kept))
    print(f'Successfully loaded pretrained weights from "{weight_path}"')
    if discarded:
        print(f"** The following layers are discarded due to unmatched keys or layer size: {discarded}")
    return None


def pretrained_weights_fit_the_model() -> None:
    from torchreid.reid import utils
    from torchreid.reid.utils import feature_extractor, torchtools

    _TORCHREID.setdefault("load_pretrained_weights", torchtools.load_pretrained_weights)
    utils.load_pretrained_weights = torchtools.load_pretrained_weights = load_pretrained_weights
    feature_extractor.load_pretrained_weights = load_pretrained_weights


def apply() -> None:
    alias_submodules()
    allow_numpy_scalars_in_checkpoints()
    build_model_forwards_extra_kwargs()
    read_images_without_endless_retries()
    save_checkpoints_atomically()
    dataset_folders_are_paths()
    pretrained_weights_fit_the_model()
    samplers_by_name()
    rank_metric_on_small_galleries()
