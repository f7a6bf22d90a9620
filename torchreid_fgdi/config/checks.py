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
from collections.abc import Callable, Iterable
from typing import NamedTuple

import torch
from torchreid.reid.optim.lr_scheduler import AVAI_SCH
from torchreid.reid.optim.optimizer import AVAI_OPTIMS
from yacs.config import CfgNode as CN

from ..data.random_splits import MIN_TEST_SPLITS
from ..data.samplers import IDENTITY_SAMPLERS, TRAIN_SAMPLERS, check_pk_batch
from ..data.transforms import CLIP_FGDI, TRANSFORMS
from ..engine import stages
from ..engine.losses import GUIDE_DIRECTIONS
from ..engine.precision import PRECISIONS, resolve_precision
from ..engine.stages import ALL_EPOCH_KEYS, EPOCH_KEYS, TABLES, epoch_keys, model_table
from ..errors import ConfigError
from ..evaluation.ranking import EVALUATORS
from ..integration import registry
from ..models import VARIANTS
from ..models.fgdi import LOSSES, NECK_FEATS
from ..models.variants import variant_method
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


class Range(NamedTuple):
    """The values a number may take: [low, high], an end left out when `open_low` / `open_high`,
    unbounded where None. A bound may name another key, read from the same config."""

    low: float | str | None = None
    high: float | str | None = None
    open_low: bool = False
    open_high: bool = False

    def admits(self, value: float, cfg: CN) -> bool:
        low, high = (get(cfg, b) if isinstance(b, str) else b for b in (self.low, self.high))
        above = low is None or (value > low if self.open_low else value >= low)
        below = high is None or (value < high if self.open_high else value <= high)
        return above and below

    def describe(self, cfg: CN) -> str:
        """``between 0.0 and 1.0``, ``>= 1``, ``> 0.0 and <= 1.0``, ``between 0.0 and fgdi.prompt.lr (0.00035)``."""
        low, high = (f"{b} ({get(cfg, b)})" if isinstance(b, str) else b for b in (self.low, self.high))
        if low is not None and high is not None and not (self.open_low or self.open_high):
            return f"between {low} and {high}"
        sides = [f"{'>' if self.open_low else '>='} {low}"] if low is not None else []
        sides += [f"{'<' if self.open_high else '<='} {high}"] if high is not None else []
        return " and ".join(sides)


COUNT = Range(1)  # sizes, batch sizes, frequencies
AT_LEAST_0 = Range(0)  # epochs, workers, counts where 0 means none
WEIGHT = Range(0.0, 100.0)  # loss weights and scales: 0 turns a term off
LEARNING_RATE = Range(0.0, 1.0, open_low=True)
RATE_FLOOR = Range(0.0, 1.0)  # a schedule's start or end rate: 0 is allowed
FRACTION = Range(0.0, 1.0)  # probabilities, mixing weights
DECAY = Range(0.0, 1.0, open_high=True)  # momentum, running-average factors: 1 would never update
FACTOR = Range(0.0, 1.0, open_low=True)  # a rate's multiplier (gamma, warm-up start): 0 would stop training
WEIGHT_DECAY = Range(0.0, 1.0)
# pixels: re-ID crops are a few hundred; data.width 100000 ran for minutes without a line of log
IMAGE_SIDE = Range(16, 4096)
# Every numeric key and the values it may take (a list: each of its elements); tests check that no
# numeric default is missing. The paper's and the shipped configs' values all lie inside.
RANGES = {
    "data.workers": AT_LEAST_0,
    "data.split_id": AT_LEAST_0,
    "data.test_splits": Range(MIN_TEST_SPLITS),
    "data.height": IMAGE_SIDE,
    "data.width": IMAGE_SIDE,
    "data.k_tfm": COUNT,
    "data.norm_mean": FRACTION,  # of pixel values in [0, 1]
    "data.norm_std": Range(0.01, 1.0),  # dividing by a smaller one would blow the inputs up
    "video.seq_len": COUNT,
    "sampler.num_instances": COUNT,
    "sampler.num_cams": COUNT,
    "sampler.num_datasets": COUNT,
    "train.lr": LEARNING_RATE,
    "train.weight_decay": WEIGHT_DECAY,
    "train.max_epoch": AT_LEAST_0,
    "train.start_epoch": AT_LEAST_0,
    "train.batch_size": COUNT,
    "train.fixbase_epoch": AT_LEAST_0,
    "train.base_lr_mult": WEIGHT,
    "train.stepsize": COUNT,
    "train.gamma": FACTOR,
    "train.print_freq": COUNT,
    "train.seed": Range(0, 2**32 - 1),
    "sgd.momentum": DECAY,
    "sgd.dampening": FRACTION,
    "rmsprop.alpha": DECAY,
    "adam.beta1": DECAY,
    "adam.beta2": DECAY,
    "loss.triplet.margin": Range(0.0, 10.0),
    "loss.triplet.weight_t": WEIGHT,
    "loss.triplet.weight_x": WEIGHT,
    "test.batch_size": COUNT,
    "test.ranks": Range(1, 50),
    "test.eval_freq": Range(-1),  # -1 (or 0): only after the last epoch
    "test.start_eval": AT_LEAST_0,
    "test.rerank_memory_gib": Range(0, open_low=True),
    "test.visrank_topk": COUNT,
    "test.plot_queries": AT_LEAST_0,
    "fgdi.stride": AT_LEAST_0,  # 0: the patch size
    "fgdi.grl_scale": Range(0.0, 10.0),
    "fgdi.num_cameras": AT_LEAST_0,
    "fgdi.num_classes": AT_LEAST_0,
    **{key: AT_LEAST_0 for key in ALL_EPOCH_KEYS},
    "fgdi.label_smooth": Range(0.0, 0.99),
    "fgdi.id_weight": WEIGHT,
    "fgdi.triplet_weight": WEIGHT,
    "fgdi.beta": FRACTION,
    "fgdi.checkpoint_every": COUNT,
    "fgdi.image.lr": LEARNING_RATE,
    "fgdi.image.bias_lr_factor": WEIGHT,
    "fgdi.image.weight_decay": WEIGHT_DECAY,
    "fgdi.image.milestones": COUNT,
    "fgdi.image.gamma": FACTOR,
    "fgdi.image.warmup_factor": FACTOR,
    "fgdi.image.warmup_epochs": AT_LEAST_0,
    "fgdi.prompt.batch_size": COUNT,
    "fgdi.prompt.lr": LEARNING_RATE,
    "fgdi.prompt.classifier_lr": LEARNING_RATE,
    "fgdi.prompt.weight_decay": WEIGHT_DECAY,
    "fgdi.prompt.warmup_epochs": AT_LEAST_0,
    "fgdi.prompt.warmup_lr": RATE_FLOOR,
    "fgdi.prompt.min_lr": Range(0.0, "fgdi.prompt.lr"),  # the cosine's floor: above the rate it would rise
    "fgdi.prompt.omega": WEIGHT,
    "fgdi.prompt.temperature": Range(0.01, 100.0),  # CLIP's own floor is 0.01 (its logit scale at most 100)
}
RGB_KEYS = ("data.norm_mean", "data.norm_std")
NON_EMPTY = ("data.sources", "data.targets", "data.save_dir", "data.root", "test.ranks")


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
    for key, value in flat_items(cfg).items():
        numbers = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
            raise ConfigError(f"{key} must be a finite number, got {value!r}")
    for key, allowed in RANGES.items():
        value = get(cfg, key)
        if not all(allowed.admits(v, cfg) for v in (value if isinstance(value, (list, tuple)) else [value])):
            raise ConfigError(f"{key} must be {allowed.describe(cfg)}, got {value!r}")
    for key in RGB_KEYS:
        if len(get(cfg, key)) != 3:
            raise ConfigError(f"{key} must list 3 values, one per colour channel (R, G, B), got {get(cfg, key)!r}")
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
    refused = refused_keys(cfg)
    if refused:
        raise ConfigError("; ".join(f"{key} {get(cfg, key)!r} {fix}" for key, fix in refused.items()))
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


class Use(NamedTuple):
    """What a run does with a key: reads it (READ_WITH: only where `when` holds, `says` in words);
    or, once a config sets it away from its default, warns (`says`: what governs the same thing in
    that run; READ_WITH elsewhere: when it is read) or refuses (`says`: why, and what to do)."""

    action: str  # READ, READ_WITH, WARN or REFUSE
    says: str = ""
    when: Callable[[CN], bool] | None = None


READ, READ_WITH, WARN, REFUSE = "read", "read with", "warn", "refuse"
_READ_USE = Use(READ)


class KeyUse(NamedTuple):
    """A key's `Use` by each engine: the three-stage engine of an FGDI model, and torchreid's
    softmax / triplet engine of any other model (a baseline)."""

    fgdi: Use
    baseline: Use


def _both(action: str, says: str = "", when: Callable[[CN], bool] | None = None) -> KeyUse:
    return KeyUse(Use(action, says, when), Use(action, says, when))


def _baselines_only(governs: str, baseline: Use = _READ_USE) -> KeyUse:
    """A key torchreid's engines read and the three-stage engine does not: `governs` says what does there."""
    return KeyUse(Use(WARN, governs), baseline)


def normalised_by_mean_std(cfg: CN) -> bool:
    """torchreid's transforms normalise by ``data.norm_mean`` / ``norm_std``; the authors' (clip_fgdi)
    normalise each image by its own mean and std."""
    return CLIP_FGDI not in cfg.data.transforms


def _optim(*names: str) -> Use:
    return Use(READ_WITH, f"train.optim {' or '.join(names)}", lambda cfg: cfg.train.optim in names)


def _both_with_sampler(name: str) -> KeyUse:
    return _both(READ_WITH, f"sampler.train_sampler {name}", lambda cfg: cfg.sampler.train_sampler == name)


def _both_with_dataset(name: str, lists: tuple[str, ...] = ("sources", "targets")) -> KeyUse:
    return _both(
        READ_WITH,
        f"{name} in {' or '.join(f'data.{part}' for part in lists)}",
        lambda cfg: any(name in cfg.data[part] for part in lists),
    )


_READ = _both(READ)
_ADAM = "Adam with torch's betas (0.9, 0.999), as the authors; fgdi.image.* and fgdi.prompt.* set its rates and decay"
_IMAGES_ONLY = "video re-ID is not supported here (data.type image only)"
_STAGED = Use(READ_WITH, "train.staged_lr True", lambda cfg: cfg.train.staged_lr)
_STEPS = Use(
    READ_WITH,
    "train.lr_scheduler single_step or multi_step",
    lambda cfg: cfg.train.lr_scheduler in ("single_step", "multi_step"),
)
_TRIPLET = Use(READ_WITH, "loss.name triplet", lambda cfg: cfg.loss.name == "triplet")
_NO_TARGET_TRAINING = (
    "loads the targets' training images for domain adaptation, and no engine here trains on them (domain "
    "generalisation: the targets stay unseen until the test); set data.load_train_targets False"
)
# Every key of torchreid's default_config (scripts/default_config.py, and use_gpu, which its main.py sets),
# under this config's name for it (ALIASES), and what each engine does with it. A warning or refusal comes
# only when a config changes the key's default; tests fail on a torchreid key missing here, and
# docs/training.md shows this table.
TORCHREID_KEYS: dict[str, KeyUse] = {
    "model.name": _READ,
    "model.pretrained": _READ,  # fgdi: the CLIP weights, unless fgdi.clip_weights names them
    "model.load_weights": _READ,
    "model.resume": _READ,
    "data.type": _READ,  # image only (CHOICES)
    "data.root": _READ,
    "data.sources": _READ,
    "data.targets": _READ,
    "data.workers": _READ,
    "data.split_id": _READ,
    "data.height": _READ,
    "data.width": _READ,
    "data.combineall": _READ,
    "data.transforms": _READ,
    "data.k_tfm": _both(
        REFUSE,
        "asks for several augmented views of each training image, which no engine here trains on (nor do "
        "torchreid's softmax and triplet engines; with several sources torchreid drops it unsaid); set "
        "data.k_tfm 1, and data.transforms for the augmentation",
    ),
    "data.norm_mean": _both(
        READ_WITH, "data.transforms without clip_fgdi (it normalises each image by its own)", normalised_by_mean_std
    ),
    "data.norm_std": _both(
        READ_WITH, "data.transforms without clip_fgdi (it normalises each image by its own)", normalised_by_mean_std
    ),
    "data.save_dir": _READ,
    "data.load_train_targets": _both(REFUSE, _NO_TARGET_TRAINING),
    "market1501.use_500k_distractors": _both_with_dataset("market1501", ("targets",)),  # gallery distractors
    "cuhk03.labeled": _both_with_dataset("cuhk03"),
    "cuhk03.classic_split": _both_with_dataset("cuhk03"),
    "cuhk03.use_metric_cuhk03": _both_with_dataset("cuhk03", ("targets",)),
    "sampler.train_sampler": _READ,
    "sampler.train_sampler_t": _both(
        WARN, "it samples the targets' training images (data.load_train_targets), which no engine here trains on"
    ),
    "sampler.num_instances": _both(
        READ_WITH,
        f"sampler.train_sampler {' or '.join(IDENTITY_SAMPLERS)}",
        lambda cfg: cfg.sampler.train_sampler in IDENTITY_SAMPLERS,
    ),
    "sampler.num_cams": _both_with_sampler("RandomDomainSampler"),
    "sampler.num_datasets": _both_with_sampler("RandomDatasetSampler"),
    "video.seq_len": _both(WARN, _IMAGES_ONLY),
    "video.sample_method": _both(WARN, _IMAGES_ONLY),
    "video.pooling_method": _both(WARN, _IMAGES_ONLY),
    "train.optim": _baselines_only(_ADAM),
    "train.lr": _baselines_only("fgdi.image.lr (stages 1 and 3) and fgdi.prompt.lr (stage 2) set the rates"),
    "train.weight_decay": _baselines_only("fgdi.image.weight_decay and fgdi.prompt.weight_decay set it"),
    "train.max_epoch": _baselines_only(
        f"{', '.join(EPOCH_KEYS)} set the epochs (clip_reid models: {', '.join(epoch_keys(TABLES[stages.CLIP_REID]))})"
    ),
    "train.start_epoch": _baselines_only("model.resume continues a run where it stopped"),
    "train.batch_size": _READ,  # fgdi: stages 1 and 3 (stage 2: fgdi.prompt.batch_size)
    "train.fixbase_epoch": _baselines_only("the stage table decides what each stage trains"),
    "train.open_layers": _baselines_only(
        "the stage table decides what each stage trains",
        Use(READ_WITH, "train.fixbase_epoch > 0", lambda cfg: cfg.train.fixbase_epoch > 0),
    ),
    "train.staged_lr": _baselines_only(
        "fgdi.image.lr (biases: x fgdi.image.bias_lr_factor) and fgdi.prompt.lr / classifier_lr set each stage's rates"
    ),
    "train.new_layers": _baselines_only("the stage table decides what each stage trains, at fgdi.image.lr", _STAGED),
    "train.base_lr_mult": _baselines_only("fgdi.image.lr and fgdi.image.bias_lr_factor set the rates", _STAGED),
    "train.lr_scheduler": _baselines_only(
        "fgdi.image.milestones / gamma / warmup_* and stage 2's cosine (fgdi.prompt.*) set the schedules"
    ),
    "train.stepsize": _baselines_only("fgdi.image.milestones sets the steps", _STEPS),
    "train.gamma": _baselines_only("fgdi.image.gamma sets the decay", _STEPS),
    "train.print_freq": _READ,
    "train.seed": _READ,
    "sgd.momentum": _baselines_only(_ADAM, _optim("sgd", "rmsprop")),
    "sgd.dampening": _baselines_only(_ADAM, _optim("sgd")),
    "sgd.nesterov": _baselines_only(_ADAM, _optim("sgd")),
    "rmsprop.alpha": _baselines_only(_ADAM, _optim("rmsprop")),
    "adam.beta1": _baselines_only(_ADAM, _optim("adam", "amsgrad", "radam")),
    "adam.beta2": _baselines_only(_ADAM, _optim("adam", "amsgrad", "radam")),
    "loss.name": _baselines_only(
        "the engine's losses (ID + triplet, then the text terms) are weighed by fgdi.id_weight, "
        "fgdi.triplet_weight, fgdi.beta"
    ),
    "loss.softmax.label_smooth": _baselines_only("fgdi.label_smooth sets the smoothing"),
    "loss.triplet.margin": _baselines_only("the triplet is soft-margin (no margin)", _TRIPLET),
    "loss.triplet.weight_t": _baselines_only("fgdi.triplet_weight weighs the triplet", _TRIPLET),
    "loss.triplet.weight_x": _baselines_only("fgdi.id_weight weighs the ID loss", _TRIPLET),
    "test.batch_size": _READ,
    "test.dist_metric": _READ,
    "test.normalize_feature": _READ,
    "test.ranks": _READ,
    "test.evaluate": _READ,
    "test.eval_freq": _READ,  # fgdi: every that many epochs of the last stage
    "test.start_eval": _both(READ_WITH, "test.eval_freq > 0", lambda cfg: cfg.test.eval_freq > 0),
    "test.rerank": _READ,
    "test.visrank": _READ,
    "test.visrank_topk": _both(  # the ranked-results pictures of test.visrank, and of test.plots
        READ_WITH, "test.visrank True or test.plots True", lambda cfg: cfg.test.visrank or cfg.test.plots
    ),
    "use_gpu": _READ,
}


ENGINES = {stages.FGDI: "three-stage engine", stages.CLIP_REID: "two-stage engine (CLIP-ReID's stages)"}  # by method


def _engine(cfg: CN) -> str:
    if cfg.model.name in VARIANTS:
        return f"{cfg.model.name}'s {ENGINES[variant_method(cfg.model.name)]}"
    return f"torchreid's {cfg.loss.name} engine of {cfg.model.name}"


def _changed_uses(cfg: CN) -> dict[str, Use]:
    """{key: its `Use` by the engine of `cfg`} for the torchreid keys `cfg` sets away from their defaults."""
    fgdi = cfg.model.name in VARIANTS
    defaults = get_default_config()
    return {
        key: uses.fgdi if fgdi else uses.baseline
        for key, uses in TORCHREID_KEYS.items()
        if get(cfg, key) != get(defaults, key)
    }


def unread_keys(cfg: CN) -> dict[str, str]:
    """{key: what governs it instead, or when it is read} for the torchreid keys `cfg` changes that its run
    does not read, and for the fgdi.* keys it changes that its model's stage table does not read."""
    unread = {
        key: use.says if use.action == WARN else f"it is read only with {use.says}"
        for key, use in _changed_uses(cfg).items()
        if use.action == WARN or (use.action == READ_WITH and not use.when(cfg))
    }
    return {**unread, **_unread_by_the_table(cfg)}


def _unread_by_the_table(cfg: CN) -> dict[str, str]:
    """The fgdi.* keys another method's stage table reads and this model's does not (`stages.unread_keys`)."""
    if cfg.model.name not in VARIANTS:
        return {}
    defaults = get_default_config()
    unread = {}
    for key in stages.unread_keys(model_table(cfg.model.name)):
        if get(cfg, key) != get(defaults, key):
            readers = [f"{method}*" for method, table in TABLES.items() if key not in stages.unread_keys(table)]
            unread[key] = f"only the {', '.join(readers)} models' stages read it"
    return unread


def refused_keys(cfg: CN) -> dict[str, str]:
    """{key: why, and what to do} for the torchreid keys `cfg` changes that its run refuses."""
    return {key: use.says for key, use in _changed_uses(cfg).items() if use.action == REFUSE}


def unread_warnings(cfg: CN) -> list[str]:
    """The run log's warning line for each key of `unread_keys`."""
    return [
        f"=> Warning: {key} {get(cfg, key)!r} is not read by {_engine(cfg)}: {governs}"
        for key, governs in unread_keys(cfg).items()
    ]
