"""Fixes for torchreid-pip 0.2.5 under current numpy / torch: `apply()` installs them, `revert()`
puts back every object they replaced.

`import torchreid_fgdi` calls `apply()`, the one place this package changes torchreid or torch;
``with compat.reverted():`` runs code against torchreid as published. A fix that replaces one of
torchreid's functions rebinds every name torchreid exports it under (``torchreid.utils.read_image``
as well as ``torchreid.reid.utils.tools.read_image``). The README lists the fixes.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import importlib
import os
import re
import stat
import sys
import time
import types
import warnings
from collections.abc import Callable, Iterator

import numpy as np
import torch
from PIL import Image, ImageOps

# torchreid warns when first imported that its Cython rank metric is unavailable, though every engine
# here ranks with `evaluation.fast_rank`: that one warning is ignored, during this import only.
with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore",
        message=re.escape("Cython evaluation (very fast so highly recommended) is unavailable"),
        category=UserWarning,
        module=re.escape("torchreid.reid.metrics.rank"),
    )
    from torchreid.reid import metrics, models
from torchreid.reid.data import datasets, sampler
from torchreid.reid.data.datasets import image
from torchreid.reid.utils import tools, torchtools

from ..errors import UnreadableImageError
from ..evaluation.torchreid_rank import for_torchreid_engines
from ..utils.checkpoint import read_checkpoint, save_torchreid_checkpoint

_SUBMODULES = ("data", "engine", "losses", "metrics", "models", "optim", "utils")
_READ_ATTEMPTS = 3

_undo: list[Callable[[], None]] | None = None  # how to put back what apply() changed; None: not applied
_originals: dict[str, Callable] = {}  # torchreid's functions a replacement calls, by name, as apply() found them
_SAMPLERS: dict[str, type] = {}  # name -> class, samplers a plugin adds to torchreid's


def _torchreid_modules() -> list[types.ModuleType]:
    """Every loaded torchreid module, once (the aliases `_alias_submodules` adds are the same objects)."""
    modules = {
        id(module): module
        for name, module in list(sys.modules.items())
        if (name == "torchreid" or name.startswith("torchreid.")) and isinstance(module, types.ModuleType)
    }
    return list(modules.values())


def _set(owner: object, name: str, value: object) -> None:
    old = getattr(owner, name)
    setattr(owner, name, value)
    _undo.append(lambda: setattr(owner, name, old))


def _replace(original: Callable, replacement: Callable) -> None:
    """Binds `replacement` to every name in torchreid that holds `original`: the module defining it
    and each module that re-exports or imported it."""
    _originals[original.__name__] = original
    for module in _torchreid_modules():
        for name, value in list(vars(module).items()):
            if value is original:
                _set(module, name, replacement)


def image_dataset_registry() -> dict:
    """torchreid's name -> class table of image datasets.

    torchreid offers `register_image_dataset` (which raises on a second call) but no way to
    look a name up, so idempotent registration has to read the table.
    """
    return vars(datasets)["__image_datasets"]


def model_registry() -> dict:
    """torchreid's name -> builder table behind `build_model` and `show_avai_models`.

    torchreid has no `register_model`; a plugin model is a new entry in this table.
    """
    return vars(models)["__model_factory"]


def _alias_submodules() -> None:
    """Makes upstream-style imports (`import torchreid.data`, `from torchreid.utils import X`) work.

    torchreid-pip keeps the code under `torchreid.reid.*` and only re-exports the subpackages
    as attributes, so torchreid's own documented imports raise ModuleNotFoundError.
    """
    for name in _SUBMODULES:
        alias = f"torchreid.{name}"
        if alias not in sys.modules:
            sys.modules[alias] = importlib.import_module(f"torchreid.reid.{name}")
            _undo.append(functools.partial(sys.modules.pop, alias, None))


def _allow_numpy_scalars_in_checkpoints() -> None:
    """Lets torchreid load the checkpoints it writes itself.

    `save_checkpoint` stores `rank1` as a numpy scalar and `load_checkpoint` calls `torch.load`
    with torch>=2.6's default `weights_only=True`, which refuses numpy scalars, so
    `load_checkpoint`, `load_pretrained_weights`, `resume_from_checkpoint` and
    `FeatureExtractor(model_path=...)` fail on every checkpoint torchreid saved. Numpy scalars
    and dtypes are plain data, so allowing them keeps the safe loader.
    """
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    dtypes = [type(np.dtype(t)) for t in (np.float64, np.float32, np.int64, np.int32, np.bool_)]
    before = torch.serialization.get_safe_globals()
    added = [g for g in (multiarray.scalar, np.dtype, *dtypes) if g not in before]
    torch.serialization.add_safe_globals(added)

    def undo() -> None:
        kept = [g for g in torch.serialization.get_safe_globals() if g not in added]
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(kept)

    _undo.append(undo)


def build_model(
    name: str, num_classes: int, loss: str = "softmax", pretrained: bool | str = True, use_gpu: bool = True, **kwargs
):
    """torchreid's `build_model`, which also passes model arguments beyond its fixed list on.

    torchreid's `build_model` takes a fixed argument list, so a model that needs more than the
    number of identities (FGDI needs the number of source domains, the input size, the CLIP
    weights) cannot be built through it. This keeps the signature and behaviour and forwards any
    extra keyword argument to the model's builder.
    """
    if not kwargs:
        return _originals["build_model"](name, num_classes, loss=loss, pretrained=pretrained, use_gpu=use_gpu)
    factories = model_registry()
    if name not in factories:
        raise KeyError(f"Unknown model: {name}. Must be one of {list(factories)}")
    return factories[name](num_classes=num_classes, loss=loss, pretrained=pretrained, use_gpu=use_gpu, **kwargs)


def read_image(path: str) -> Image.Image:
    """torchreid's `read_image`, but a file that cannot be decoded fails with its path.

    torchreid retries forever on any IOError ("Will redo. Don't worry. Just chill."), so one
    corrupt or truncated file hangs training inside a DataLoader worker. A few retries cover a
    flaky network file system; then the error names the file. Grayscale, RGBA, CMYK and palette
    images are converted to RGB, as torchreid does, after turning the image as its EXIF orientation
    says (as the CLIP-FGDI authors read images; torchreid does not).
    """
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


def save_checkpoint(state: dict, save_dir: str, is_best: bool = False, remove_module_from_keys: bool = False) -> None:
    """torchreid's `save_checkpoint`, written atomically (`utils.checkpoint.save_torchreid_checkpoint`)."""
    save_torchreid_checkpoint(state, save_dir, is_best=is_best, remove_module_from_keys=remove_module_from_keys)


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


def _dataset_folders_are_paths() -> None:
    """torchreid's image datasets glob with `glob_with_literal_folders`."""
    shim = types.SimpleNamespace(glob=glob_with_literal_folders, escape=glob.escape)
    for module in vars(image).values():
        if isinstance(module, types.ModuleType) and getattr(module, "glob", None) is glob:
            _set(module, "glob", shim)


def load_pretrained_weights(model: torch.nn.Module, weight_path: str) -> None:
    """torchreid's `load_pretrained_weights`, but a model that can fit a checkpoint of another input
    size to itself (`FGDI.fit_checkpoint`: the ViT position embedding) does so first.

    torchreid keeps only the weights whose shapes match, so the position embedding of a checkpoint
    trained at 256x128 is silently dropped when torchreid's `FeatureExtractor` builds the model at
    its default size; the features then come from the untrained embedding. Same messages as torchreid.
    """
    fit = getattr(model, "fit_checkpoint", None)
    if fit is None:
        return _originals["load_pretrained_weights"](model, weight_path)
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


def register_sampler(name: str, sampler_class: type) -> None:
    """Makes torchreid's data managers accept `name` as ``train_sampler`` (while the fixes are applied).

    torchreid's `build_train_sampler` asserts the name is in a fixed list and builds its five
    samplers with an if-chain, so no other sampler can be used by name. A registered class is
    built as ``sampler_class(data_source, batch_size, num_instances)``.
    """
    _SAMPLERS[name] = sampler_class
    if _undo is not None:
        _list_registered_samplers()


def _list_registered_samplers() -> None:
    for name in _SAMPLERS:
        if name not in sampler.AVAI_SAMPLERS:
            sampler.AVAI_SAMPLERS.append(name)
            _undo.append(functools.partial(sampler.AVAI_SAMPLERS.remove, name))


def build_train_sampler(
    data_source: list[tuple],
    train_sampler: str,
    batch_size: int = 32,
    num_instances: int = 4,
    num_cams: int = 1,
    num_datasets: int = 1,
    **kwargs,
) -> torch.utils.data.Sampler:
    """torchreid's `build_train_sampler`, which also builds the samplers `register_sampler` added."""
    if train_sampler in _SAMPLERS:
        return _SAMPLERS[train_sampler](data_source, batch_size, num_instances)
    return _originals["build_train_sampler"](
        data_source, train_sampler, batch_size=batch_size, num_instances=num_instances,
        num_cams=num_cams, num_datasets=num_datasets, **kwargs,
    )  # fmt: skip


def apply() -> None:
    """Installs every fix (`import torchreid_fgdi` does); a second call changes nothing."""
    global _undo
    if _undo is not None:
        return
    _undo = []
    try:
        _alias_submodules()
        _allow_numpy_scalars_in_checkpoints()
        _replace(models.build_model, build_model)
        _replace(tools.read_image, read_image)
        _replace(torchtools.save_checkpoint, save_checkpoint)
        _replace(torchtools.load_pretrained_weights, load_pretrained_weights)
        _replace(sampler.build_train_sampler, build_train_sampler)
        _list_registered_samplers()
        _replace(metrics.evaluate_rank, for_torchreid_engines(metrics.evaluate_rank))
        _dataset_folders_are_paths()
    except BaseException:
        revert()  # all or nothing: a half-applied set would make apply() a no-op from then on
        raise


def revert() -> None:
    """Puts back every object `apply()` replaced, newest first; the datasets and models registered
    in torchreid's tables stay (they are torchreid's own extension points)."""
    global _undo
    undo, _undo = _undo or [], None
    for step in reversed(undo):
        step()


@contextlib.contextmanager
def reverted() -> Iterator[None]:
    """torchreid and torch as published inside the ``with`` block; the fixes as before after it."""
    applied = _undo is not None
    revert()
    try:
        yield
    finally:
        if applied:
            apply()
