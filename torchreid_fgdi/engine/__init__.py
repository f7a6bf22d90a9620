"""Engines: torchreid `Engine` subclasses; FGDI's three stages, and torchreid's own for baselines
(chosen by the config's `loss.name`)."""

from __future__ import annotations

from .baselines import ImageSoftmaxEngine, ImageTripletEngine
from .fgdi import ImageFGDIEngine
from .testing import MultiTargetTestMixin

ENGINES = {"softmax": ImageSoftmaxEngine, "triplet": ImageTripletEngine}


def build_engine(cfg, datamanager, model, optimizer, scheduler):
    """The engine of `cfg.loss.name`, with that loss's settings from the config."""
    if cfg.loss.name not in ENGINES:
        raise ValueError(f"unknown loss.name {cfg.loss.name!r}: choose one of {sorted(ENGINES)}")
    kwargs = {"label_smooth": cfg.loss.softmax.label_smooth}
    if cfg.loss.name == "triplet":
        kwargs.update(
            margin=cfg.loss.triplet.margin,
            weight_t=cfg.loss.triplet.weight_t,
            weight_x=cfg.loss.triplet.weight_x,
        )
    return ENGINES[cfg.loss.name](
        datamanager, model, optimizer=optimizer, scheduler=scheduler, use_gpu=datamanager.use_gpu, **kwargs
    )


__all__ = [
    "ENGINES",
    "ImageFGDIEngine",
    "ImageSoftmaxEngine",
    "ImageTripletEngine",
    "MultiTargetTestMixin",
    "build_engine",
]
