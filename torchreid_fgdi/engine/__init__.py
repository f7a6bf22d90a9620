"""Engines: torchreid `Engine` subclasses; FGDI's three stages, and torchreid's own for baselines
(chosen by the config's `loss.name`)."""

from __future__ import annotations

import torch
import torchreid

from ..errors import ConfigError
from .baselines import ImageSoftmaxEngine, ImageTripletEngine
from .fgdi import ImageFGDIEngine
from .settings import FGDISettings, LossSettings, TestSettings
from .testing import MultiTargetTestMixin

ENGINES = {"softmax": ImageSoftmaxEngine, "triplet": ImageTripletEngine}


def build_engine(
    datamanager: torchreid.data.ImageDataManager,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    loss: LossSettings,
    test: TestSettings,
    config_text: str = "",
) -> torchreid.engine.Engine:
    """torchreid's engine of `loss.name` with that loss's settings and the `test` settings; its
    checkpoints record `config_text` (the run's ``cfg.dump()``) and the data manager's fingerprint."""
    if loss.name not in ENGINES:
        raise ConfigError(f"unknown loss.name {loss.name!r}: choose one of {sorted(ENGINES)}")
    kwargs = {"label_smooth": loss.label_smooth}
    if loss.name == "triplet":
        kwargs.update(margin=loss.margin, weight_t=loss.weight_t, weight_x=loss.weight_x)
    return ENGINES[loss.name](
        datamanager,
        model,
        optimizer=optimizer,
        scheduler=scheduler,
        use_gpu=datamanager.use_gpu,
        test=test,
        config_text=config_text,
        **kwargs,
    )


__all__ = [
    "ENGINES",
    "FGDISettings",
    "ImageFGDIEngine",
    "ImageSoftmaxEngine",
    "ImageTripletEngine",
    "LossSettings",
    "MultiTargetTestMixin",
    "TestSettings",
    "build_engine",
]
