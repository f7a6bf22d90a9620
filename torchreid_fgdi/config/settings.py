"""A config read once into what a run reads: `RunSettings`.

A yacs node is mutable, untyped and knows nothing of the builders it feeds. `RunSettings.from_config`
reads it once, and every part of a run takes its part of the settings: the data manager, torchreid's
`build_model`, `build_optimizer` and `build_lr_scheduler`, the engine and `Engine.run`. Nothing goes
back to the node afterwards, so a key has one reader, here.
"""

from __future__ import annotations

import dataclasses
import os.path as osp
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from yacs.config import CfgNode as CN

from ..engine.settings import FGDISettings, LossSettings, TestSettings
from ..engine.stages import STAGE_NAMES
from ..errors import ConfigError
from ..models import VARIANTS

EVALUATION_DIR = "evaluation"  # test.evaluate results go here, never over the training run's own


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """Everything a run reads from its config, typed and frozen (the mappings are read-only copies).

    `data`, `optimizer`, `scheduler` and `run` are keyword arguments of `DomainImageDataManager`,
    torchreid's `build_optimizer` and `build_lr_scheduler`, and `Engine.run`; `fgdi`, `test` and
    `loss` are what the engines take; `config_text` is ``cfg.dump()``, which checkpoints record.
    """

    model_name: str
    load_weights: str  # model.load_weights: a checkpoint to start from ("" for none)
    seed: int
    data: Mapping[str, Any]
    model: Mapping[str, Any]  # build_model arguments beyond num_classes and num_domains: see model_kwargs
    fgdi_model: bool  # model.name is a CLIP-FGDI variant
    class_rows: int  # fgdi.num_classes of an FGDI model; 0: one per training identity
    optimizer: Mapping[str, Any]
    scheduler: Mapping[str, Any]
    run: Mapping[str, Any]  # its save_dir is the run's output folder (see output_dir)
    fgdi: FGDISettings
    test: TestSettings
    loss: LossSettings
    config_text: str

    @classmethod
    def from_config(cls, cfg: CN) -> RunSettings:
        fgdi_model = cfg.model.name in VARIANTS
        return cls(
            model_name=cfg.model.name,
            load_weights=cfg.model.load_weights,
            seed=cfg.train.seed,
            data=_read_only(_data(cfg)),
            model=_read_only(_fgdi_model(cfg) if fgdi_model else _torchreid_model(cfg)),
            fgdi_model=fgdi_model,
            class_rows=cfg.fgdi.num_classes if fgdi_model else 0,
            optimizer=_read_only(_optimizer(cfg)),
            scheduler=_read_only(_scheduler(cfg)),
            run=_read_only(_run(cfg)),
            fgdi=FGDISettings.from_node(cfg.fgdi, STAGE_NAMES),
            test=TestSettings(
                evaluator=cfg.test.evaluator,
                rerank_memory_gib=cfg.test.rerank_memory_gib,
                plots=cfg.test.plots,
                plot_queries=cfg.test.plot_queries,
            ),
            loss=LossSettings(
                name=cfg.loss.name,
                label_smooth=cfg.loss.softmax.label_smooth,
                margin=cfg.loss.triplet.margin,
                weight_t=cfg.loss.triplet.weight_t,
                weight_x=cfg.loss.triplet.weight_x,
            ),
            config_text=cfg.dump(),
        )

    def model_kwargs(self, num_domains: int) -> dict:
        """`torchreid.models.build_model` arguments beyond name and num_classes; an FGDI model's
        come from ``fgdi`` and take the number of training domains."""
        return {**self.model, "num_domains": num_domains} if self.fgdi_model else dict(self.model)

    def num_classes(self, num_train_pids: int) -> int:
        """Classifier (and identity-prompt) rows: the training identities, or ``fgdi.num_classes``.

        The CLIP-FGDI authors size them by per-dataset counts they hard-code for the combined
        datasets, also in Protocol-2 where only training splits are read, so some rows are never a
        target (they still take part in the label-smoothed cross-entropy and, in stage 3, the i2t
        logits).
        """
        if self.class_rows and self.class_rows < num_train_pids:
            raise ConfigError(
                f"fgdi.num_classes {self.class_rows} is fewer than the {num_train_pids} training identities: "
                "set it to 0 (one row per identity) or to at least that number"
            )
        return self.class_rows or num_train_pids


def output_dir(cfg: CN) -> str:
    """Where the run writes: ``data.save_dir``, or its ``evaluation/`` folder for ``test.evaluate``."""
    return osp.join(cfg.data.save_dir, EVALUATION_DIR) if cfg.test.evaluate else cfg.data.save_dir


def _read_only(kwargs: dict) -> Mapping[str, Any]:
    """`kwargs` as a read-only mapping, its lists copied (a frozen yacs node still shares its lists)."""
    return MappingProxyType({key: list(value) if isinstance(value, list) else value for key, value in kwargs.items()})


def _data(cfg: CN) -> dict:
    return {
        "root": cfg.data.root,
        "sources": cfg.data.sources,
        "targets": cfg.data.targets,
        "height": cfg.data.height,
        "width": cfg.data.width,
        "transforms": cfg.data.transforms,
        "k_tfm": cfg.data.k_tfm,
        "norm_mean": cfg.data.norm_mean,
        "norm_std": cfg.data.norm_std,
        "use_gpu": cfg.use_gpu,
        "split_id": cfg.data.split_id,
        "test_splits": cfg.data.test_splits,
        "skip_unreadable_images": cfg.data.skip_unreadable_images,
        "combineall": cfg.data.combineall,
        "load_train_targets": cfg.data.load_train_targets,
        "batch_size_train": cfg.train.batch_size,
        "batch_size_test": cfg.test.batch_size,
        "workers": cfg.data.workers,
        "num_instances": cfg.sampler.num_instances,
        "num_cams": cfg.sampler.num_cams,
        "num_datasets": cfg.sampler.num_datasets,
        "train_sampler": cfg.sampler.train_sampler,
        "train_sampler_t": cfg.sampler.train_sampler_t,
        "cuhk03_labeled": cfg.cuhk03.labeled,
        "cuhk03_classic_split": cfg.cuhk03.classic_split,
        "market1501_500k": cfg.market1501.use_500k_distractors,
        "market1501_distractors": cfg.market1501.train_distractors,
    }


def _torchreid_model(cfg: CN) -> dict:
    return {"loss": cfg.loss.name, "pretrained": cfg.model.pretrained, "use_gpu": cfg.use_gpu}


def _fgdi_model(cfg: CN) -> dict:
    return {
        "pretrained": cfg.fgdi.clip_weights or cfg.model.pretrained,
        "use_gpu": cfg.use_gpu,
        "image_size": (cfg.data.height, cfg.data.width),
        "stride": cfg.fgdi.stride or None,
        "neck_feat": cfg.fgdi.neck_feat,
        "grl_scale": cfg.fgdi.grl_scale,
        "quick_gelu": cfg.fgdi.quick_gelu,
        "num_cameras": cfg.fgdi.num_cameras,
        "cache_dir": cfg.fgdi.clip_cache_dir or None,
    }


def _optimizer(cfg: CN) -> dict:
    return {
        "optim": cfg.train.optim,
        "lr": cfg.train.lr,
        "weight_decay": cfg.train.weight_decay,
        "momentum": cfg.sgd.momentum,
        "sgd_dampening": cfg.sgd.dampening,
        "sgd_nesterov": cfg.sgd.nesterov,
        "rmsprop_alpha": cfg.rmsprop.alpha,
        "adam_beta1": cfg.adam.beta1,
        "adam_beta2": cfg.adam.beta2,
        "staged_lr": cfg.train.staged_lr,
        "new_layers": cfg.train.new_layers,
        "base_lr_mult": cfg.train.base_lr_mult,
    }


def _scheduler(cfg: CN) -> dict:
    return {
        "lr_scheduler": cfg.train.lr_scheduler,
        "stepsize": cfg.train.stepsize,
        "gamma": cfg.train.gamma,
        "max_epoch": cfg.train.max_epoch,
    }


def _run(cfg: CN) -> dict:
    return {
        "save_dir": output_dir(cfg),
        "max_epoch": cfg.train.max_epoch,
        "start_epoch": cfg.train.start_epoch,
        "fixbase_epoch": cfg.train.fixbase_epoch,
        "open_layers": cfg.train.open_layers,
        "start_eval": cfg.test.start_eval,
        "eval_freq": cfg.test.eval_freq,
        "test_only": cfg.test.evaluate,
        "print_freq": cfg.train.print_freq,
        "dist_metric": cfg.test.dist_metric,
        "normalize_feature": cfg.test.normalize_feature,
        "visrank": cfg.test.visrank,
        "visrank_topk": cfg.test.visrank_topk,
        "use_metric_cuhk03": cfg.cuhk03.use_metric_cuhk03,
        "ranks": cfg.test.ranks,
        "rerank": cfg.test.rerank,
    }
