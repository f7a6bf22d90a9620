"""Checks that reject a bad config before any data is read or any model is built.

yacs alone names a wrong type without saying where it came from, accepts any model or dataset
name, and lets inconsistent settings through to fail hours later (or never: a batch size that
is not a multiple of K silently drops images). Every error here names the key, the source
(file or command line), what is allowed and how to fix it.
"""

from __future__ import annotations

import ast
import difflib
import math
from collections.abc import Iterable

import torch
from torchreid.reid.optim.lr_scheduler import AVAI_SCH
from torchreid.reid.optim.optimizer import AVAI_OPTIMS
from yacs.config import CfgNode as CN

from ..data.random_splits import MIN_TEST_SPLITS
from ..data.samplers import IDENTITY_SAMPLERS, TRAIN_SAMPLERS, check_pk_batch
from ..data.transforms import TRANSFORMS
from ..engine.losses import GUIDE_DIRECTIONS
from ..engine.precision import PRECISIONS, resolve_precision
from ..engine.stages import EPOCH_KEYS
from ..errors import ConfigError
from ..evaluation.ranking import EVALUATORS
from ..integration import registry
from ..models.fgdi import LOSSES, NECK_FEATS
from .defaults import get_default_config

# Each list belongs to the module that acts on the key; only the keys no module of ours reads are listed here.
CHOICES = {
    "data.type": ("image",),
    "loss.name": LOSSES,
    "test.dist_metric": ("euclidean", "cosine"),
    "test.evaluator": EVALUATORS,
    "train.optim": tuple(AVAI_OPTIMS),
    "train.lr_scheduler": tuple(AVAI_SCH),
    "sampler.train_sampler": TRAIN_SAMPLERS,
    "sampler.train_sampler_t": TRAIN_SAMPLERS,
    "fgdi.precision": PRECISIONS,
    "fgdi.test_precision": PRECISIONS,
    "fgdi.guide_direction": GUIDE_DIRECTIONS,
    "fgdi.neck_feat": NECK_FEATS,
    "fgdi.quick_gelu": (None, True, False),
}
# Closed intervals [low, high] (None: unbounded) for values whose meaning has limits.
RANGES = {
    "fgdi.beta": (0.0, 1.0),
    "fgdi.label_smooth": (0.0, 0.99),
    "fgdi.grl_scale": (0.0, None),
    "fgdi.prompt.omega": (0.0, None),
    "fgdi.id_weight": (0.0, None),
    "fgdi.triplet_weight": (0.0, None),
    "train.seed": (0, 2**32 - 1),
    "data.height": (16, None),
    "data.width": (16, None),
    "test.ranks": (1, 50),
    "test.visrank_topk": (1, None),
    "data.test_splits": (MIN_TEST_SPLITS, None),
}
NON_EMPTY = ("data.sources", "data.targets", "data.save_dir", "data.root", "test.ranks")
NON_NEGATIVE = (
    "train.max_epoch",
    "train.start_epoch",
    "train.fixbase_epoch",
    "data.workers",
    *EPOCH_KEYS,
    "fgdi.image.warmup_epochs",
    "fgdi.prompt.warmup_epochs",
    "fgdi.num_cameras",
    "test.plot_queries",
    "fgdi.stride",
)
POSITIVE = (
    "train.batch_size",
    "train.lr",
    "test.batch_size",
    "test.rerank_memory_gib",
    "sampler.num_instances",
    "data.height",
    "data.width",
    "fgdi.checkpoint_every",
    "fgdi.image.lr",
    "fgdi.prompt.batch_size",
    "fgdi.prompt.lr",
    "fgdi.prompt.classifier_lr",
    "fgdi.prompt.temperature",
)


def flat_items(node: dict, prefix: str = "") -> dict:
    """{'a.b.c': value} for a nested dict (or CfgNode)."""
    items = {}
    for name, value in node.items():
        key = prefix + name
        items.update(flat_items(value, key + ".") if isinstance(value, dict) else {key: value})
    return items


def get(cfg: CN, key: str):
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


# torchreid's names for keys this plugin calls otherwise: accepted, and read as ours.
ALIASES = {"cuhk03.labeled_images": "cuhk03.labeled"}
# fast-reid's names for what a torchreid user types here.
FASTREID_KEYS = {
    "MODEL.WEIGHTS": "model.load_weights",
    "MODEL.DEVICE": "use_gpu",
    "OUTPUT_DIR": "data.save_dir",
    "SOLVER.BASE_LR": "train.lr (fgdi: fgdi.image.lr)",
    "SOLVER.MAX_EPOCH": "train.max_epoch (fgdi: fgdi.stage1_epochs ... fgdi.stage3_epochs)",
    "SOLVER.IMS_PER_BATCH": "train.batch_size",
    "DATASETS.NAMES": "data.sources",
    "DATASETS.TESTS": "data.targets",
    "TEST.IMS_PER_BATCH": "test.batch_size",
}


def check_keys(cfg: CN, keys: Iterable[str], where: str) -> None:
    """Rejects keys the defaults do not have, naming the closest valid ones (or fast-reid's equivalent)."""
    valid = list(flat_items(cfg))
    for key in keys:
        if key in FASTREID_KEYS:
            raise ConfigError(f"{key} in {where} is fast-reid's key; here it is {FASTREID_KEYS[key]}")
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; valid keys: {', '.join(valid)}"
            raise ConfigError(f"unknown config key {key!r} in {where}{hint}")


def decode(text: object) -> object:
    """A value as yacs reads it: a string that is a Python literal becomes that literal (so
    ``3e-4``, which YAML leaves a string, is a number); other strings stay strings."""
    if not isinstance(text, str):
        return text
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _kind(default) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        type(default), type(default).__name__
    )


def _coerce_scalar(value, default):
    if isinstance(default, bool) and isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if isinstance(default, bool) or isinstance(value, bool):
        return value if type(value) is type(default) else None
    if isinstance(default, float) and isinstance(value, int):
        return float(value)
    return value if type(value) is type(default) else None


def coerce(key: str, value: object, default: object, where: str) -> object:
    """`value` in the type of `default` (an int where a float is expected is widened, a single
    string where a list of strings is expected becomes a one-element list)."""
    if default is None:
        if isinstance(value, str) and value.lower() in ("true", "false", "none"):
            return {"true": True, "false": False, "none": None}[value.lower()]
        return value
    fail = ConfigError(
        f"config key {key} in {where} must be {_kind(default)} like its default {default!r}, got {value!r}"
    )
    if isinstance(default, (list, tuple)):
        if isinstance(value, str) and all(isinstance(d, str) for d in default):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key} in {where} must be a list like its default {default!r}, got {value!r}")
        if not default:
            return list(value)
        items = [_coerce_scalar(v, default[0]) for v in value]
        if any(item is None for item in items):
            raise ConfigError(
                f"config key {key} in {where} must be a list of {type(default[0]).__name__} "
                f"like its default {default!r}, got {value!r}"
            )
        return items
    coerced = _coerce_scalar(value, default)
    if coerced is None:
        raise fail
    return coerced


def typed_overrides(cfg: CN, items: dict, where: str) -> CN:
    """`items` ({'a.b': value}) checked against the defaults in `cfg`, as a nested CfgNode to merge."""
    items = {ALIASES.get(key, key): value for key, value in items.items()}
    check_keys(cfg, items, where)
    nested = CN(new_allowed=True)
    for key, value in items.items():
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, CN(new_allowed=True))
        node[leaf] = coerce(key, decode(value), get(cfg, key), where)
    return nested


def _name_error(kind: str, name: str, available, key: str) -> ConfigError:
    close = difflib.get_close_matches(name, available, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return ConfigError(f"unknown {kind} {name!r} in {key}.{hint} Available: {', '.join(sorted(available))}")


def check_config(cfg: CN) -> None:
    """Names, choices, ranges and the P x K batch, each against what the run will need."""
    models = registry.model_registry()
    if cfg.model.name not in models:
        raise _name_error("model", cfg.model.name, list(models), "model.name")
    datasets = registry.image_dataset_registry()
    for key in ("data.sources", "data.targets"):
        for name in get(cfg, key):
            if name not in datasets:
                raise _name_error("dataset", name, list(datasets), key)
    for key, allowed in CHOICES.items():
        if get(cfg, key) not in allowed:
            raise ConfigError(f"{key} must be one of {', '.join(map(str, allowed))}; got {get(cfg, key)!r}")
    for key in NON_NEGATIVE:
        if get(cfg, key) < 0:
            raise ConfigError(f"{key} must be >= 0, got {get(cfg, key)}")
    for key in POSITIVE:
        if get(cfg, key) <= 0:
            raise ConfigError(f"{key} must be > 0, got {get(cfg, key)}")
    for key, value in flat_items(cfg).items():
        numbers = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
            raise ConfigError(f"{key} must be a finite number, got {value!r}")
    for key, (low, high) in RANGES.items():
        for value in get(cfg, key) if isinstance(get(cfg, key), (list, tuple)) else [get(cfg, key)]:
            if value < low or (high is not None and value > high):
                bounds = f"between {low} and {high}" if high is not None else f">= {low}"
                raise ConfigError(f"{key} must be {bounds}, got {get(cfg, key)!r}")
    for key in NON_EMPTY:
        if not get(cfg, key):
            raise ConfigError(f"{key} must not be empty")
    if len(set(cfg.test.ranks)) != len(cfg.test.ranks):
        raise ConfigError(f"test.ranks lists a rank twice: {list(cfg.test.ranks)}")
    for key in ("data.sources", "data.targets"):
        repeated = sorted({n for n in get(cfg, key) if list(get(cfg, key)).count(n) > 1})
        if repeated:
            raise ConfigError(
                f"{key} names {', '.join(repeated)} more than once: each source is one domain, so a repeated "
                "source would train every person in it as two identities of two domains; list each dataset once"
            )
    overlap = [name for name in cfg.data.targets if name in cfg.data.sources]
    if cfg.data.load_train_targets and overlap:
        raise ConfigError(
            f"data.load_train_targets True with {', '.join(overlap)} in both data.sources and data.targets: "
            "their images would be both training and test data; remove them from data.targets (or from "
            "data.sources), or set data.load_train_targets False"
        )
    unknown = [t for t in cfg.data.transforms if t not in TRANSFORMS]
    if unknown:
        raise ConfigError(_name_error("transform", unknown[0], TRANSFORMS, "data.transforms").args[0])
    device = torch.device("cuda" if cfg.use_gpu and torch.cuda.is_available() else "cpu")
    for key in ("fgdi.precision", "fgdi.test_precision"):
        resolve_precision(get(cfg, key), device, key)
    if cfg.test.evaluate and not cfg.model.load_weights and not cfg.test.allow_untrained:
        raise ConfigError(
            "test.evaluate True without model.load_weights would evaluate untrained weights (random, or only "
            "pretrained): set model.load_weights to a trained checkpoint, or test.allow_untrained True to "
            "evaluate the initial weights on purpose"
        )
    if cfg.sampler.train_sampler in IDENTITY_SAMPLERS:
        check_pk_batch(cfg.train.batch_size, cfg.sampler.num_instances)


# torchreid settings the three-stage engine does not read, and what governs the same thing there.
FGDI_GOVERNS = {
    "train.max_epoch": ", ".join(EPOCH_KEYS),
    "train.open_layers": "the stage table: each stage trains its own parameters",
    "train.lr": "fgdi.image.lr (stages 1 and 3), fgdi.prompt.lr (stage 2)",
    "train.optim": "Adam, as the authors (fgdi.image.*, fgdi.prompt.*)",
    "train.weight_decay": "fgdi.image.weight_decay, fgdi.prompt.weight_decay",
    "train.lr_scheduler": "fgdi.image.milestones / gamma / warmup_* and the stage-2 cosine (fgdi.prompt.*)",
    "train.stepsize": "fgdi.image.milestones",
    "train.gamma": "fgdi.image.gamma",
    "train.fixbase_epoch": "the stages decide what trains",
    "train.start_epoch": "model.resume",
    "loss.name": "the engine's losses (ID + triplet, then the text terms): fgdi.id_weight, triplet_weight, beta",
    "loss.softmax.label_smooth": "fgdi.label_smooth",
    "loss.triplet.margin": "the soft-margin triplet (no margin)",
    "loss.triplet.weight_t": "fgdi.triplet_weight",
    "loss.triplet.weight_x": "fgdi.id_weight",
}


def ignored_by_fgdi(cfg: CN) -> dict[str, str]:
    """{key: what governs it instead} for the torchreid settings `cfg` changes that an FGDI run ignores."""
    defaults = get_default_config()
    return {key: what for key, what in FGDI_GOVERNS.items() if get(cfg, key) != get(defaults, key)}
