"""The config's keys and defaults, in the layout of torchreid's `scripts/default_config.py`.

A config file may only set keys that exist here (yacs rejects the rest), so a typo fails before
any work starts. `loading` reads config files over these defaults; `settings.RunSettings` turns
a config into what a run reads. The order of the sections is part of the format: checkpoints
and run folders record ``cfg.dump()``.
"""

from __future__ import annotations

from yacs.config import CfgNode as CN

from ..evaluation.rerank import DEFAULT_MEMORY_GIB as RERANK_MEMORY_GIB


def get_default_config() -> CN:
    """Every key a config may set, with its default, in torchreid's `default_config` layout (one
    builder per section, in the order the sections have always had: `cfg.dump()` is recorded)."""
    cfg = CN()
    _add_model(cfg)
    _add_data(cfg)
    _add_sampler(cfg)
    _add_dataset_options(cfg)
    _add_train(cfg)
    _add_optimizers(cfg)
    _add_loss(cfg)
    _add_test(cfg)
    _add_fgdi(cfg)
    _add_fgdi_optimizers(cfg)
    return cfg


def _add_model(cfg: CN) -> None:
    """model: the architecture and the weights it starts from."""
    cfg.model = CN()
    cfg.model.name = "osnet_ain_x0_25"
    cfg.model.pretrained = False  # ImageNet weights for torchreid's models (needs a download)
    cfg.model.load_weights = ""
    cfg.model.resume = ""  # a checkpoint, or "auto": the newest in data.save_dir (none: start afresh)


def _add_data(cfg: CN) -> None:
    """data: datasets, input size, augmentation, output folder; video: torchreid's, accepted only."""
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


def _add_sampler(cfg: CN) -> None:
    """sampler: how training batches are drawn."""
    cfg.sampler = CN()
    cfg.sampler.train_sampler = "RandomSampler"
    cfg.sampler.train_sampler_t = "RandomSampler"
    cfg.sampler.num_instances = 4
    cfg.sampler.num_cams = 1
    cfg.sampler.num_datasets = 1


def _add_dataset_options(cfg: CN) -> None:
    """cuhk03, market1501: per-dataset options."""
    cfg.cuhk03 = CN()
    cfg.cuhk03.labeled = False  # torchreid's cuhk03.labeled_images is read as this
    cfg.cuhk03.classic_split = False
    cfg.cuhk03.use_metric_cuhk03 = False

    cfg.market1501 = CN()
    cfg.market1501.use_500k_distractors = False
    cfg.market1501.train_distractors = False  # with combineall: the pid-0 gallery images as one identity (authors)


def _add_train(cfg: CN) -> None:
    """train: the baselines' optimisation (an FGDI run reads fgdi.* instead) and the seed."""
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


def _add_optimizers(cfg: CN) -> None:
    """sgd, rmsprop, adam: torchreid's optimizer options."""
    cfg.sgd = CN()
    cfg.sgd.momentum = 0.9
    cfg.sgd.dampening = 0.0
    cfg.sgd.nesterov = False
    cfg.rmsprop = CN()
    cfg.rmsprop.alpha = 0.99
    cfg.adam = CN()
    cfg.adam.beta1 = 0.9
    cfg.adam.beta2 = 0.999


def _add_loss(cfg: CN) -> None:
    """loss: the baselines' losses."""
    cfg.loss = CN()
    cfg.loss.name = "softmax"
    cfg.loss.softmax = CN()
    cfg.loss.softmax.label_smooth = True
    cfg.loss.triplet = CN()
    cfg.loss.triplet.margin = 0.3
    cfg.loss.triplet.weight_t = 1.0
    cfg.loss.triplet.weight_x = 0.0


def _add_test(cfg: CN) -> None:
    """test: evaluation, re-ranking, plots; use_gpu."""
    cfg.test = CN()
    cfg.test.batch_size = 100
    cfg.test.dist_metric = "euclidean"
    cfg.test.normalize_feature = False
    cfg.test.ranks = [1, 5, 10, 20]
    cfg.test.evaluate = False
    cfg.test.allow_untrained = False  # True: test.evaluate without model.load_weights (the initial weights)
    # True: a checkpoint evaluated (or given to search / export with a config) under another input size,
    # test transform, normalisation or feature choice than it records (config/recipe.py), on purpose
    cfg.test.allow_recipe_change = False
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


def _add_fgdi(cfg: CN) -> None:
    """fgdi: CLIP-FGDI (model.name fgdi, fgdi_vit_b32, ..., fgdi_tiny) and CLIP-ReID (clip_reid, ...,
    clip_reid_tiny), the model and its stages; input size is data.height/width."""
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
    # CLIP-ReID's two stages (model.name clip_reid*; defaults: its code's person configs)
    cfg.fgdi.prompt_epochs = 120  # identity prompts, both towers frozen
    cfg.fgdi.image_epochs = 60  # image encoder guided by the prompts (i2t)
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


def _add_fgdi_optimizers(cfg: CN) -> None:
    """fgdi.image, fgdi.prompt: the Adam and schedule of the image stages and of stage 2."""
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
