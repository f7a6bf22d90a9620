"""Configuration: yacs defaults in the layout of torchreid's `scripts/default_config.py`.

A config file may only set keys that exist here (yacs rejects the rest), so a typo fails
before any work starts. The helpers turn a config into the keyword arguments of torchreid's
builders, exactly as torchreid's own `scripts/main.py` does.
"""

from __future__ import annotations

import os.path as osp
from collections.abc import Sequence

import yaml
from yacs.config import CfgNode as CN

from ..engine.settings import FGDISettings, LossSettings, TestSettings
from ..engine.stages import EPOCH_KEYS, STAGE_NAMES
from ..errors import ConfigError
from ..evaluation.rerank import DEFAULT_MEMORY_GIB as RERANK_MEMORY_GIB
from .checks import check_config, flat_items, get, typed_overrides


def get_default_config() -> CN:
    cfg = CN()

    cfg.model = CN()
    cfg.model.name = "osnet_ain_x0_25"
    cfg.model.pretrained = False  # ImageNet weights for torchreid's models (needs a download)
    cfg.model.load_weights = ""
    cfg.model.resume = ""  # a checkpoint, or "auto": the newest in data.save_dir (none: start afresh)

    cfg.data = CN()
    cfg.data.type = "image"
    cfg.data.root = "reid-data"
    cfg.data.sources = ["synth_a", "synth_b", "synth_c"]
    cfg.data.targets = ["synth_a", "synth_b", "synth_c", "synth_d"]
    cfg.data.workers = 2
    cfg.data.split_id = 0
    cfg.data.test_splits = 10  # PRID, GRID, VIPeR, iLIDS: mean over random splits 0..9 (1: split_id only)
    cfg.data.height = 256
    cfg.data.width = 128
    cfg.data.combineall = False
    cfg.data.transforms = ["random_flip"]
    cfg.data.k_tfm = 1
    cfg.data.norm_mean = [0.485, 0.456, 0.406]
    cfg.data.norm_std = [0.229, 0.224, 0.225]
    cfg.data.save_dir = "log"
    cfg.data.load_train_targets = False
    cfg.data.skip_unreadable_images = False  # True: decode every image first, drop and report bad ones

    cfg.video = CN()  # torchreid's video settings, accepted so its configs load; this plugin reads images
    cfg.video.seq_len = 15
    cfg.video.sample_method = "evenly"
    cfg.video.pooling_method = "avg"

    cfg.sampler = CN()
    cfg.sampler.train_sampler = "RandomSampler"
    cfg.sampler.train_sampler_t = "RandomSampler"
    cfg.sampler.num_instances = 4
    cfg.sampler.num_cams = 1
    cfg.sampler.num_datasets = 1

    cfg.cuhk03 = CN()
    cfg.cuhk03.labeled = False  # torchreid's cuhk03.labeled_images is read as this
    cfg.cuhk03.classic_split = False
    cfg.cuhk03.use_metric_cuhk03 = False

    cfg.market1501 = CN()
    cfg.market1501.use_500k_distractors = False
    cfg.market1501.train_distractors = False  # with combineall: the pid-0 gallery images as one identity (authors)

    cfg.train = CN()
    cfg.train.optim = "adam"
    cfg.train.lr = 0.0003
    cfg.train.weight_decay = 5e-4
    cfg.train.max_epoch = 60
    cfg.train.start_epoch = 0
    cfg.train.batch_size = 32
    cfg.train.fixbase_epoch = 0
    cfg.train.open_layers = ["classifier"]
    cfg.train.staged_lr = False
    cfg.train.new_layers = ["classifier"]
    cfg.train.base_lr_mult = 0.1
    cfg.train.lr_scheduler = "single_step"
    cfg.train.stepsize = [20]
    cfg.train.gamma = 0.1
    cfg.train.print_freq = 20
    cfg.train.seed = 1

    cfg.sgd = CN()
    cfg.sgd.momentum = 0.9
    cfg.sgd.dampening = 0.0
    cfg.sgd.nesterov = False
    cfg.rmsprop = CN()
    cfg.rmsprop.alpha = 0.99
    cfg.adam = CN()
    cfg.adam.beta1 = 0.9
    cfg.adam.beta2 = 0.999

    cfg.loss = CN()
    cfg.loss.name = "softmax"
    cfg.loss.softmax = CN()
    cfg.loss.softmax.label_smooth = True
    cfg.loss.triplet = CN()
    cfg.loss.triplet.margin = 0.3
    cfg.loss.triplet.weight_t = 1.0
    cfg.loss.triplet.weight_x = 0.0

    cfg.test = CN()
    cfg.test.batch_size = 100
    cfg.test.dist_metric = "euclidean"
    cfg.test.normalize_feature = False
    cfg.test.ranks = [1, 5, 10, 20]
    cfg.test.evaluate = False
    cfg.test.allow_untrained = False  # True: test.evaluate without model.load_weights (the initial weights)
    cfg.test.eval_freq = -1
    cfg.test.start_eval = 0
    cfg.test.rerank = False
    cfg.test.rerank_memory_gib = RERANK_MEMORY_GIB  # fast evaluator's re-ranking: its blocks' working memory
    cfg.test.evaluator = "fast"  # chunked, vectorised CMC / mAP; "torchreid" for torchreid's own
    cfg.test.visrank = False
    cfg.test.visrank_topk = 10
    cfg.test.plots = True  # PNGs in save_dir/plots: CMC, ranked queries, loss curves, domain PCA
    cfg.test.plot_queries = 4  # queries per target in plots/visrank (test.visrank draws them all)

    cfg.use_gpu = True  # used only where CUDA is available

    # CLIP-FGDI (model.name fgdi, fgdi_vit_b32, ..., fgdi_tiny); input size is data.height/width.
    cfg.fgdi = CN()
    cfg.fgdi.clip_weights = ""  # open_clip tag or local file; "" = the model's default if model.pretrained
    cfg.fgdi.clip_cache_dir = ""  # download cache for tags ("" = open_clip's)
    cfg.fgdi.quick_gelu = None  # None follows the weights (QuickGELU for OpenAI's CLIP)
    cfg.fgdi.stride = 0  # ViT patch stride; 0 = patch size (CLIP-ReID uses 12)
    cfg.fgdi.neck_feat = "before"  # eval feature before (authors) or after the BNNecks
    cfg.fgdi.grl_scale = 0.1  # gradient-reversal scale (the paper's epsilon)
    cfg.fgdi.num_cameras = 0  # CLIP-ReID camera embedding rows, only to load its SIE checkpoints
    cfg.fgdi.num_classes = 0  # classifier and prompt rows; 0 = the training identities (more: the authors' P2 counts)
    # The three stages (defaults: the paper's / authors' values). Batches of stages 1 and 3 are
    # train.batch_size with sampler.*; train.optim / lr / max_epoch are the baselines' keys.
    cfg.fgdi.stage1_epochs = 3  # image-encoder adaptation
    cfg.fgdi.stage2a_epochs = 120  # identity prompts
    cfg.fgdi.stage2b_epochs = 30  # domain prompts
    cfg.fgdi.stage3_epochs = 60  # image encoder with text guidance
    cfg.fgdi.label_smooth = 0.1
    cfg.fgdi.id_weight = 1.0
    cfg.fgdi.triplet_weight = 1.0
    cfg.fgdi.beta = 0.1  # stage 3: (1 - beta) * i2t cross-entropy + beta * domain guidance
    cfg.fgdi.guide_direction = "paper"  # "paper" (pull to invariant, push from domain prompt) or "authors"
    cfg.fgdi.precision = "auto"  # auto (fp16 autocast on CUDA, fp32 on CPU), fp32, bf16, fp16
    cfg.fgdi.test_precision = "fp32"  # feature extraction: fp32 (authors'), bf16 (~2.4x faster on CPU), fp16
    cfg.fgdi.sync_bn = False  # torchrun on GPUs: BNNeck statistics over all ranks' batches (SyncBatchNorm)
    cfg.fgdi.grad_checkpointing = False  # ViT image tower: recompute block activations in backward (less memory)
    cfg.fgdi.checkpoint_every = 5  # epochs, within a stage; a checkpoint also ends every stage
    cfg.fgdi.image = CN()  # Adam for stages 1 and 3 (one optimizer and schedule across both)
    cfg.fgdi.image.lr = 5e-6
    cfg.fgdi.image.bias_lr_factor = 2.0
    cfg.fgdi.image.weight_decay = 1e-4
    cfg.fgdi.image.milestones = [30, 50]  # epochs counted over stage 1 then stage 3
    cfg.fgdi.image.gamma = 0.1
    cfg.fgdi.image.warmup_factor = 0.1
    cfg.fgdi.image.warmup_epochs = 10
    cfg.fgdi.prompt = CN()  # stage 2: Adam on cached image features
    cfg.fgdi.prompt.batch_size = 128
    cfg.fgdi.prompt.lr = 3.5e-4  # identity / domain vectors
    cfg.fgdi.prompt.classifier_lr = 0.01  # domain classifiers
    cfg.fgdi.prompt.weight_decay = 1e-4
    cfg.fgdi.prompt.warmup_epochs = 5
    cfg.fgdi.prompt.warmup_lr = 1e-5
    cfg.fgdi.prompt.min_lr = 1e-6
    cfg.fgdi.prompt.omega = 0.01  # weight of the domain classifier's cross-entropy
    cfg.fgdi.prompt.temperature = 1.0  # SupCon
    cfg.fgdi.prompt.reshuffle = True  # a new order of the cached features every epoch; False: one per stage (authors)
    return cfg


def _merged(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, but a key given twice in one mapping is an error: PyYAML keeps the last
    silently, so a section written twice would lose the first one's settings."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(
                    f"{self.name}: key {key!r} appears twice (lines {seen[key] + 1} and "
                    f"{key_node.start_mark.line + 1}); "
                    "YAML would keep only the second: merge them into one"
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def read_config_file(path: str, _reading: tuple[str, ...] = ()) -> dict:
    """A YAML config as a dict; ``_BASE_: other.yaml`` (or a list, relative to the file) is read
    first and overridden, so a variant config holds only what differs."""
    real = osp.realpath(path)
    if real in _reading:
        chain = " -> ".join([*_reading, real])
        raise ConfigError(f"_BASE_ cycle: {chain}; a config cannot be its own base")
    with open(path) as f:
        data = yaml.load(f, Loader=_UniqueKeyLoader) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of sections (model:, data:, ...), not a {type(data).__name__}")
    bases = data.pop("_BASE_", [])
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"_BASE_ in {path} must be a file name or a list of file names, got {bases!r}")
    merged: dict = {}
    for base in bases:
        merged = _merged(merged, read_config_file(osp.join(osp.dirname(path), base), (*_reading, real)))
    return _merged(merged, data)


def load_config(config_files: str | Sequence[str] = (), opts: Sequence[str] = ()) -> CN:
    """Defaults, then each YAML file in order (e.g. a model config, then a protocol config), then
    `KEY VALUE` pairs; checked (`config_checks`) and frozen. ``{model}`` in ``data.save_dir``
    becomes ``model.name``, so one protocol config serves every model."""
    cfg = get_default_config()
    for config_file in [config_files] if isinstance(config_files, str) else config_files:
        if config_file:
            cfg.merge_from_other_cfg(typed_overrides(cfg, flat_items(read_config_file(config_file)), config_file))
    opts = list(opts)
    if len(opts) % 2:
        raise ConfigError(f"command-line overrides must be KEY VALUE pairs, got an odd number: {opts}")
    cfg.merge_from_other_cfg(typed_overrides(cfg, dict(zip(opts[0::2], opts[1::2])), "the command line"))
    cfg.data.save_dir = cfg.data.save_dir.replace("{model}", cfg.model.name)
    check_config(cfg)
    cfg.freeze()
    return cfg


def load_config_text(text: str, where: str = "a checkpoint's config") -> CN:
    """A config dumped with ``cfg.dump()`` (as checkpoints record it). Keys and types are checked;
    what depends on the machine that trained (CUDA, datasets registered there) is not."""
    cfg = get_default_config()
    cfg.merge_from_other_cfg(typed_overrides(cfg, flat_items(yaml.safe_load(text) or {}), where))
    cfg.freeze()
    return cfg


def imagedata_kwargs(cfg: CN) -> dict:
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


def model_kwargs(cfg: CN, num_domains: int) -> dict:
    """`torchreid.models.build_model` arguments beyond name and num_classes; FGDI's come from `fgdi`."""
    from ..models import VARIANTS

    if cfg.model.name not in VARIANTS:
        return {"loss": cfg.loss.name, "pretrained": cfg.model.pretrained, "use_gpu": cfg.use_gpu}
    return {
        "pretrained": cfg.fgdi.clip_weights or cfg.model.pretrained,
        "use_gpu": cfg.use_gpu,
        "num_domains": num_domains,
        "image_size": (cfg.data.height, cfg.data.width),
        "stride": cfg.fgdi.stride or None,
        "neck_feat": cfg.fgdi.neck_feat,
        "grl_scale": cfg.fgdi.grl_scale,
        "quick_gelu": cfg.fgdi.quick_gelu,
        "num_cameras": cfg.fgdi.num_cameras,
        "cache_dir": cfg.fgdi.clip_cache_dir or None,
    }


def num_classes(cfg: CN, num_train_pids: int) -> int:
    """Classifier (and identity-prompt) rows: the training identities, or ``fgdi.num_classes``.

    The CLIP-FGDI authors size them by per-dataset counts they hard-code for the combined datasets,
    also in Protocol-2 where only training splits are read, so some rows are never a target (they
    still take part in the label-smoothed cross-entropy and, in stage 3, the i2t logits).
    """
    from ..models import VARIANTS

    wanted = cfg.fgdi.num_classes if cfg.model.name in VARIANTS else 0
    if wanted and wanted < num_train_pids:
        raise ConfigError(
            f"fgdi.num_classes {wanted} is fewer than the {num_train_pids} training identities: "
            "set it to 0 (one row per identity) or to at least that number"
        )
    return wanted or num_train_pids


def optimizer_kwargs(cfg: CN) -> dict:
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


def lr_scheduler_kwargs(cfg: CN) -> dict:
    return {
        "lr_scheduler": cfg.train.lr_scheduler,
        "stepsize": cfg.train.stepsize,
        "gamma": cfg.train.gamma,
        "max_epoch": cfg.train.max_epoch,
    }


def engine_run_kwargs(cfg: CN) -> dict:
    return {
        "save_dir": cfg.data.save_dir,
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


def test_settings(cfg: CN) -> TestSettings:
    """The ``test`` keys every engine's test reads."""
    t = cfg.test
    return TestSettings(t.evaluator, t.rerank_memory_gib, t.plots, t.plot_queries)


def loss_settings(cfg: CN) -> LossSettings:
    """The baselines' torchreid losses (``loss.*``)."""
    softmax, triplet = cfg.loss.softmax, cfg.loss.triplet
    return LossSettings(cfg.loss.name, softmax.label_smooth, triplet.margin, triplet.weight_t, triplet.weight_x)


def fgdi_engine_kwargs(cfg: CN) -> dict:
    """`ImageFGDIEngine` arguments beyond the data manager and the model."""
    return {
        "settings": FGDISettings.from_node(cfg.fgdi, STAGE_NAMES),
        "test": test_settings(cfg),
        "use_gpu": cfg.use_gpu,
        "config_text": cfg.dump(),
    }
