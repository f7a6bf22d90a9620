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
import re
import sys
import types
import warnings
from collections.abc import Callable, Iterator

import numpy as np
import torch

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
from torchreid.reid.data import sampler
from torchreid.reid.data import transforms as torchreid_transforms
from torchreid.reid.data.datasets import image
from torchreid.reid.utils import tools, torchtools

from ..data.folders import glob_with_literal_folders
from ..data.images import read_image
from ..data.transforms import print_pipelines, whole_pipeline
from ..evaluation.torchreid_rank import for_torchreid_engines
from ..utils.checkpoint import read_checkpoint, save_torchreid_checkpoint
from . import registry

_SUBMODULES = ("data", "engine", "losses", "metrics", "models", "optim", "utils")

_undo: list[Callable[[], None]] | None = None  # how to put back what apply() changed; None: not applied
_originals: dict[str, Callable] = {}  # torchreid's functions a replacement calls, by name, as apply() found them


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
    factories = registry.model_registry()
    if name not in factories:
        raise KeyError(f"Unknown model: {name}. Must be one of {list(factories)}")
    return factories[name](num_classes=num_classes, loss=loss, pretrained=pretrained, use_gpu=use_gpu, **kwargs)


def save_checkpoint(state: dict, save_dir: str, is_best: bool = False, remove_module_from_keys: bool = False) -> None:
    """torchreid's `save_checkpoint`, written atomically (`utils.checkpoint.save_torchreid_checkpoint`)."""
    save_torchreid_checkpoint(state, save_dir, is_best=is_best, remove_module_from_keys=remove_module_from_keys)


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


def _list_registered_samplers() -> None:
    """torchreid's list of sampler names (`AVAI_SAMPLERS`) names every registered sampler, those
    registered later too, while the fixes are applied."""
    for name in registry.sampler_registry():
        _list_sampler(name)
    registry.on_register_sampler.append(_list_sampler)
    _undo.append(functools.partial(_stop_listing, registry.on_register_sampler))


def _list_sampler(name: str) -> None:
    if name not in sampler.AVAI_SAMPLERS:
        sampler.AVAI_SAMPLERS.append(name)
        _undo.append(functools.partial(sampler.AVAI_SAMPLERS.remove, name))


def _stop_listing(listeners: list) -> None:
    if _list_sampler in listeners:  # absent if `registry` was reloaded since
        listeners.remove(_list_sampler)


def build_train_sampler(
    data_source: list[tuple],
    train_sampler: str,
    batch_size: int = 32,
    num_instances: int = 4,
    num_cams: int = 1,
    num_datasets: int = 1,
    **kwargs,
) -> torch.utils.data.Sampler:
    """torchreid's `build_train_sampler`, which also builds the samplers `registry.register_sampler` added.

    torchreid's own asserts the name is in a fixed list and builds its five samplers with an if-chain,
    so no other sampler can be used by name. A registered class is built as
    ``sampler_class(data_source, batch_size, num_instances)``.
    """
    sampler_class = registry.sampler_registry().get(train_sampler)
    if sampler_class is not None:
        return sampler_class(data_source, batch_size, num_instances)
    return _originals["build_train_sampler"](
        data_source, train_sampler, batch_size=batch_size, num_instances=num_instances,
        num_cams=num_cams, num_datasets=num_datasets, **kwargs,
    )  # fmt: skip


def build_transforms(height: int, width: int, transforms: str | list[str] | None = "random_flip", **kwargs) -> tuple:
    """torchreid's `build_transforms`, which also builds the pipelines `registry.register_transforms` added.

    torchreid's matches names with an if-chain and drops any other silently: ``clip_fgdi`` gave
    resize, to-tensor and ImageNet normalisation, and printed that list, under a config naming the
    authors' pipeline. A registered name is built as ``builder(height, width)`` and its transforms
    are printed where torchreid prints its own.
    """
    pipelines = registry.transform_registry()
    name = whole_pipeline(transforms, pipelines)
    if name is None:
        return _originals["build_transforms"](height, width, transforms=transforms, **kwargs)
    train, test = pipelines[name](height, width)
    print_pipelines(name, train, test)
    return train, test


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
        _replace(torchreid_transforms.build_transforms, build_transforms)
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
