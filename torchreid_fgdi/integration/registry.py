"""torchreid's tables of image datasets, models, samplers and transforms, and `register_all`, which puts
everything the plugin adds into them, once per process."""

from __future__ import annotations

from collections.abc import Callable

import torchreid
from torchreid.reid import models
from torchreid.reid.data import datasets

from ..data import PUBLIC_DATASETS, SAMPLERS
from ..data.transforms import PIPELINES
from ..models import MODEL_FACTORIES
from ..models.clip_weights import register_made_weights
from ..synthetic import SYNTHETIC_DATASETS, pretrain

IMAGE_DATASETS = {**SYNTHETIC_DATASETS, **PUBLIC_DATASETS}  # every dataset the plugin registers, by name

_SAMPLERS: dict[str, type] = {}  # name -> class, samplers a plugin adds to torchreid's
# Called with the name of each newly registered sampler (`compat` lists it in torchreid's AVAI_SAMPLERS).
on_register_sampler: list[Callable[[str], None]] = []
_PIPELINES: dict[str, Callable] = {}  # name -> builder of whole (train, test) pipelines a plugin adds to torchreid's


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


def sampler_registry() -> dict[str, type]:
    """name -> class of the samplers added to torchreid's (`compat.build_train_sampler` builds them)."""
    return _SAMPLERS


def register_sampler(name: str, sampler_class: type) -> None:
    """Makes torchreid's data managers accept `name` as ``train_sampler`` (while `compat`'s fixes are
    applied): torchreid's `build_train_sampler` builds it as ``sampler_class(data_source, batch_size,
    num_instances)``."""
    _SAMPLERS[name] = sampler_class
    for listener in on_register_sampler:
        listener(name)


def transform_registry() -> dict[str, Callable]:
    """name -> builder of the whole pipelines added to torchreid's transforms (`compat.build_transforms`
    builds them)."""
    return _PIPELINES


def register_transforms(name: str, builder: Callable) -> None:
    """Makes torchreid's data managers build ``transforms=[name]`` (while `compat`'s fixes are applied)
    as ``builder(height, width)``, a (train, test) pair of whole pipelines."""
    _PIPELINES[name] = builder


def register_all() -> None:
    """Idempotent: a second call (or a re-import) changes nothing."""
    table = image_dataset_registry()
    for name, cls in IMAGE_DATASETS.items():
        if table.get(name) is not cls:
            table.pop(name, None)
            torchreid.data.register_image_dataset(name, cls)
    factories = model_registry()
    for name, factory in MODEL_FACTORIES.items():
        factories[name] = factory
    for name, sampler in SAMPLERS.items():
        register_sampler(name, sampler)
    for name, builder in PIPELINES.items():
        register_transforms(name, builder)
    register_made_weights(pretrain.TAG, pretrain.pretrained_checkpoint, pretrain.ready_checkpoint)
