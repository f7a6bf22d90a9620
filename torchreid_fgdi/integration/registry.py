"""Puts everything the plugin adds into torchreid's registries, once per process."""

from __future__ import annotations

import torchreid

from ..data import IMAGE_DATASETS
from ..data.datamanager import SAMPLERS
from ..models import MODEL_FACTORIES
from . import compat


def register_all() -> None:
    """Idempotent: a second call (or a re-import) changes nothing."""
    datasets = compat.image_dataset_registry()
    for name, cls in IMAGE_DATASETS.items():
        if datasets.get(name) is not cls:
            datasets.pop(name, None)
            torchreid.data.register_image_dataset(name, cls)
    models = compat.model_registry()
    for name, factory in MODEL_FACTORIES.items():
        models[name] = factory
    for name, sampler in SAMPLERS.items():
        compat.register_sampler(name, sampler)
