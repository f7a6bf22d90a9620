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
from ..engine.stages import ALL_STAGE_NAMES
from ..errors import ConfigError
from ..models import VARIANTS
from .checks import get

EVALUATION_DIR = "evaluation"  # test.evaluate results go here, never over the training run's own

# What each builder takes, and from which key: one row per argument.
DATA = {  # DomainImageDataManager argument: config key
    "root": "data.root",
    "sources": "data.sources",
    "targets": "data.targets",
    "height": "data.height",
    "width": "data.width",
    "transforms": "data.transforms",
    "k_tfm": "data.k_tfm",
    "norm_mean": "data.norm_mean",
    "norm_std": "data.norm_std",
    "use_gpu": "use_gpu",
    "split_id": "data.split_id",
    "test_splits": "data.test_splits",
    "skip_unreadable_images": "data.skip_unreadable_images",
    "combineall": "data.combineall",
    "load_train_targets": "data.load_train_targets",
    "batch_size_train": "train.batch_size",
    "batch_size_test": "test.batch_size",
    "workers": "data.workers",
    "num_instances": "sampler.num_instances",
    "num_cams": "sampler.num_cams",
    "num_datasets": "sampler.num_datasets",
    "train_sampler": "sampler.train_sampler",
    "train_sampler_t": "sampler.train_sampler_t",
    "cuhk03_labeled": "cuhk03.labeled",
    "cuhk03_classic_split": "cuhk03.classic_split",
    "market1501_500k": "market1501.use_500k_distractors",
    "market1501_distractors": "market1501.train_distractors",
    "seed": "train.seed",  # the sampler's draws; the run's generators: torchreid.utils.set_random_seed(seed)
}

OPTIMIZER = {  # torchreid.optim.build_optimizer argument: config key
    "optim": "train.optim",
    "lr": "train.lr",
    "weight_decay": "train.weight_decay",
    "momentum": "sgd.momentum",
    "sgd_dampening": "sgd.dampening",
    "sgd_nesterov": "sgd.nesterov",
    "rmsprop_alpha": "rmsprop.alpha",
    "adam_beta1": "adam.beta1",
    "adam_beta2": "adam.beta2",
    "staged_lr": "train.staged_lr",
    "new_layers": "train.new_layers",
    "base_lr_mult": "train.base_lr_mult",
}

SCHEDULER = {  # torchreid.optim.build_lr_scheduler argument: config key
    "lr_scheduler": "train.lr_scheduler",
    "stepsize": "train.stepsize",
    "gamma": "train.gamma",
    "max_epoch": "train.max_epoch",
}

RUN = {  # torchreid Engine.run argument: config key (save_dir: see output_dir)
    "max_epoch": "train.max_epoch",
    "start_epoch": "train.start_epoch",
    "fixbase_epoch": "train.fixbase_epoch",
    "open_layers": "train.open_layers",
    "start_eval": "test.start_eval",
    "eval_freq": "test.eval_freq",
    "test_only": "test.evaluate",
    "print_freq": "train.print_freq",
    "dist_metric": "test.dist_metric",
    "normalize_feature": "test.normalize_feature",
    "visrank": "test.visrank",
    "visrank_topk": "test.visrank_topk",
    "use_metric_cuhk03": "cuhk03.use_metric_cuhk03",
    "ranks": "test.ranks",
    "rerank": "test.rerank",
}

TEST = {  # engine.settings.TestSettings field: config key
    "evaluator": "test.evaluator",
    "rerank_memory_gib": "test.rerank_memory_gib",
    "plots": "test.plots",
    "plot_queries": "test.plot_queries",
}

LOSS = {  # engine.settings.LossSettings field: config key
    "name": "loss.name",
    "label_smooth": "loss.softmax.label_smooth",
    "margin": "loss.triplet.margin",
    "weight_t": "loss.triplet.weight_t",
    "weight_x": "loss.triplet.weight_x",
}


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
    fgdi_model: bool  # model.name is a variant of the stage-table engine (CLIP-FGDI or CLIP-ReID)
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
            data=_read_only(_values(cfg, DATA)),
            model=_read_only(_fgdi_model(cfg) if fgdi_model else _torchreid_model(cfg)),
            fgdi_model=fgdi_model,
            class_rows=cfg.fgdi.num_classes if fgdi_model else 0,
            optimizer=_read_only(_values(cfg, OPTIMIZER)),
            scheduler=_read_only(_values(cfg, SCHEDULER)),
            run=_read_only({"save_dir": output_dir(cfg), **_values(cfg, RUN)}),
            fgdi=FGDISettings.from_node(cfg.fgdi, ALL_STAGE_NAMES),
            test=TestSettings(**_values(cfg, TEST)),
            loss=LossSettings(**_values(cfg, LOSS)),
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


def _values(cfg: CN, table: Mapping[str, str]) -> dict:
    return {name: get(cfg, key) for name, key in table.items()}


def _read_only(kwargs: dict) -> Mapping[str, Any]:
    """`kwargs` as a read-only mapping, its lists copied (a frozen yacs node still shares its lists)."""
    return MappingProxyType({key: list(value) if isinstance(value, list) else value for key, value in kwargs.items()})


def _torchreid_model(cfg: CN) -> dict:
    return {"loss": cfg.loss.name, "pretrained": cfg.model.pretrained, "use_gpu": cfg.use_gpu}


def clip_weights(cfg: CN) -> bool | str:
    """The CLIP weights an FGDI model of `cfg` starts from: ``fgdi.clip_weights``, else ``model.pretrained``."""
    return cfg.fgdi.clip_weights or cfg.model.pretrained


def _fgdi_model(cfg: CN) -> dict:
    return {
        "pretrained": clip_weights(cfg),
        "use_gpu": cfg.use_gpu,
        "image_size": (cfg.data.height, cfg.data.width),
        "stride": cfg.fgdi.stride or None,
        "neck_feat": cfg.fgdi.neck_feat,
        "grl_scale": cfg.fgdi.grl_scale,
        "quick_gelu": cfg.fgdi.quick_gelu,
        "num_cameras": cfg.fgdi.num_cameras,
        "cache_dir": cfg.fgdi.clip_cache_dir or None,
    }
