"""Engines: torchreid `Engine` subclasses; FGDI's three stages, and torchreid's own for baselines
(chosen by the config's `loss.name`)."""

from __future__ import annotations

import torch
import torchreid
from yacs.config import CfgNode as CN

from ..errors import ConfigError
from .baselines import ImageSoftmaxEngine, ImageTripletEngine
from .fgdi import ImageFGDIEngine
from .testing import MultiTargetTestMixin

ENGINES = {"softmax": ImageSoftmaxEngine, "triplet": ImageTripletEngine}


def build_engine(
    cfg: CN,
    datamanager: torchreid.data.ImageDataManager,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    data_fingerprint: str | None = None,
) -> torchreid.engine.Engine:
    """The baseline engine of `cfg.loss.name`, with that loss's and the test's settings from the
    config; its checkpoints record the config and `data_fingerprint`."""
    if cfg.loss.name not in ENGINES:
        raise ConfigError(f"unknown loss.name {cfg.loss.name!r}: choose one of {sorted(ENGINES)}")
    kwargs = {"label_smooth": cfg.loss.softmax.label_smooth}
    if cfg.loss.name == "triplet":
        kwargs.update(
            margin=cfg.loss.triplet.margin,
            weight_t=cfg.loss.triplet.weight_t,
            weight_x=cfg.loss.triplet.weight_x,
        )
    return ENGINES[cfg.loss.name](
        datamanager,
        model,
        optimizer=optimizer,
        scheduler=scheduler,
        use_gpu=datamanager.use_gpu,
        evaluator=cfg.test.evaluator,
        rerank_memory_gib=cfg.test.rerank_memory_gib,
        plots=cfg.test.plots,
        plot_queries=cfg.test.plot_queries,
        config_text=cfg.dump(),
        data_fingerprint=data_fingerprint,
        **kwargs,
    )


__all__ = [
    "ENGINES",
    "ImageFGDIEngine",
    "ImageSoftmaxEngine",
    "ImageTripletEngine",
    "MultiTargetTestMixin",
    "build_engine",
]
