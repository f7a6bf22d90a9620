"""Train and test from configs: what ``torchreid-fgdi --config-file CFG [CFG ...] [KEY VALUE ...]`` runs.

The same steps as torchreid's `scripts/main.py`: config -> data manager -> model -> optimizer
and scheduler -> engine -> `engine.run`, then a per-target table (also in `save_dir`). FGDI
models run through the three-stage `ImageFGDIEngine`, which owns its optimizers; every other
torchreid model through torchreid's softmax / triplet engine.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import os.path as osp
import re
import sys
import time
from collections.abc import Iterator

import torch
import torchreid
from yacs.config import CfgNode as CN

from ..config import defaults as config_lib
from ..data import DomainImageDataManager
from ..data.readiness import ensure_datasets
from ..engine import ImageFGDIEngine, build_engine, distributed, schedules
from ..engine.checkpointing import Progress, check_data, checkpoint_progress, continue_from, newest_checkpoint
from ..engine.settings import FGDISettings
from ..engine.stages import STAGE_NAMES
from ..models import FGDI, load_fgdi_checkpoint
from ..models.checkpoints import load_torchreid_checkpoint
from ..synthetic import pretrain
from ..utils.checkpoint import CheckpointError, read_checkpoint
from .parsers import command_parser
from .refusals import run_command
from .run_folder import RunFolder, check_resume, recorded_config


def _split_words(words: list[str], belongs) -> tuple[list[str], list[str]]:
    """(the option's own words, the KEY VALUE words that followed them): an option taking several
    words also swallows the overrides typed after it, up to the first word that is not its own."""
    split = next((i for i, word in enumerate(words) if not belongs(word)), len(words))
    return words[:split], words[split:]


def split_config_files(words: list[str]) -> tuple[list[str], list[str]]:
    """--config-file's words: (YAML files, KEY VALUE words after them)."""
    return _split_words(words, lambda word: word.endswith((".yaml", ".yml")))


# fast-reid's command-line flags, answered with what does the same here.
FASTREID_FLAGS = {
    "--eval-only": "test.evaluate True model.load_weights CKPT",
    "--resume": "model.resume auto (or model.resume CKPT)",
    "--num-gpus": "torchrun --nproc_per_node N -m torchreid_fgdi --config-file ...",
}


def build_config(argv: list[str] | None = None) -> CN:
    """The config the command line asks for, merged and checked; with neither a config file nor an
    override the user asked for no run, so the usage is printed instead (exit 2)."""
    parser = command_parser(
        "torchreid-fgdi",
        "Trains and tests a model as yacs configs say (torchreid's scripts/main.py, plus the three-stage\n"
        "CLIP-FGDI engine for fgdi models), then writes a per-target table to data.save_dir.",
        [
            "torchreid-fgdi --config-file configs/synthetic/fgdi_tiny.yaml  # CLIP-FGDI on the synthetic domains",
            "torchreid-fgdi --config-file configs/synthetic/osnet_ain_x0_25.yaml train.max_epoch 5 "
            "data.save_dir log/quick",
            "torchreid-fgdi --config-file configs/synthetic/fgdi_tiny.yaml test.evaluate True "
            "model.load_weights log/synthetic/fgdi_tiny/checkpoints/stage3.pth",
        ],
    )
    parser.add_argument(
        "--config-file",
        nargs="+",
        default=[],
        metavar="CFG",
        help="yacs YAML config(s), merged in order (e.g. model, protocol); later files override earlier ones",
    )
    parser.add_argument("-s", "--sources", nargs="+", default=[], help="source datasets (overrides data.sources)")
    parser.add_argument("-t", "--targets", nargs="+", default=[], help="target datasets (overrides data.targets)")
    parser.add_argument("--root", type=str, default="", help="root folder of the datasets (overrides data.root)")
    parser.add_argument("--transforms", nargs="+", default=[], help="data augmentation (overrides data.transforms)")
    for flag in FASTREID_FLAGS:
        parser.add_argument(flag, nargs="?", const="", default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "opts", nargs="*", default=[], metavar="KEY VALUE", help="config keys and values overriding the configs"
    )
    args = parser.parse_intermixed_args(argv)
    for flag, equivalent in FASTREID_FLAGS.items():
        if getattr(args, flag.lstrip("-").replace("-", "_")) is not None:
            parser.error(f"{flag} is fast-reid's flag; here: {equivalent}")

    files, opts = split_config_files(args.config_file)
    named = {}
    for key, words in (
        ("data.sources", args.sources),
        ("data.targets", args.targets),
        ("data.transforms", args.transforms),
    ):
        named[key], more = _split_words(words, lambda word: "." not in word)  # a config key has a dot
        opts += more
    opts += list(args.opts)
    for key, value in (("data.root", args.root), *named.items()):
        if value:
            opts += [key, str(value)]
    if not files and not opts:
        parser.error("nothing to run: give --config-file CFG (and KEY VALUE overrides); the examples are in --help")
    return config_lib.load_config(files, opts)


class _Tee:
    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> None:
        for stream in self.streams:
            stream.write(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


@contextlib.contextmanager
def log_to_file(path: str) -> Iterator[None]:
    """Copies stdout into `path` while the block runs, like torchreid's `Logger`.

    torchreid's `Logger` replaces `sys.stdout` for good and closes the console when collected,
    which breaks anything that runs after `train` in the same process (tests, notebooks).
    """
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, "a") as log, contextlib.redirect_stdout(_Tee(sys.stdout, log)):
        yield


def train(argv: list[str] | None = None) -> dict:
    """Trains and tests as the config says; returns the per-target results."""
    cfg = build_config(argv)
    rank, _ = distributed.init_from_env()
    log_name = ("test.log" if cfg.test.evaluate else "train.log") + time.strftime("-%Y-%m-%d-%H-%M-%S")
    log_name += f"-rank{rank}" if rank else ""
    with log_to_file(osp.join(cfg.data.save_dir, log_name)):
        return run(cfg)


EVALUATION_DIR = "evaluation"  # test.evaluate results go here, never over the training run's own


def output_dir(cfg: CN) -> str:
    """Where the run writes: ``data.save_dir``, or its ``evaluation/`` folder for ``test.evaluate``."""
    return osp.join(cfg.data.save_dir, EVALUATION_DIR) if cfg.test.evaluate else cfg.data.save_dir


def run(cfg: CN) -> dict:
    """Trains and tests as `cfg` says, holding its output folder (`RunFolder`) throughout."""
    folder = RunFolder(output_dir(cfg))
    with folder if distributed.is_main() else contextlib.nullcontext():
        return _run(cfg, folder)


def _run(cfg: CN, folder: RunFolder) -> dict:
    torchreid.utils.set_random_seed(cfg.train.seed)
    print(f"Show configuration\n{cfg}\n")

    ensure_datasets(cfg.data.root, [*cfg.data.sources, *cfg.data.targets])
    rank, world = distributed.rank(), distributed.world_size()
    datamanager = DomainImageDataManager(
        **config_lib.imagedata_kwargs(cfg), rank=rank, world_size=world, seed=cfg.train.seed
    )
    kwargs = config_lib.model_kwargs(cfg, datamanager.num_train_domains)
    if isinstance(kwargs["pretrained"], str):  # the synthetic benchmark's CLIP is made on first use
        kwargs["pretrained"] = pretrain.resolve(kwargs["pretrained"])
    model = torchreid.models.build_model(
        cfg.model.name, config_lib.num_classes(cfg, datamanager.num_train_pids), **kwargs
    )
    if isinstance(model, FGDI):
        for key, governed_by in config_lib.ignored_by_fgdi(cfg).items():
            print(f"=> Warning: {key} {config_lib.get(cfg, key)!r} does not apply to {cfg.model.name}: {governed_by}")
        return run_fgdi(cfg, datamanager, model, folder)
    if cfg.model.load_weights:
        skipped = load_torchreid_checkpoint(model, cfg.model.load_weights, skip_classifier=True)
        print(
            f"=> Loaded {cfg.model.load_weights}"
            + (f" (other identities, kept as initialised: {skipped})" if skipped else "")
        )
    if datamanager.use_gpu:
        model = model.cuda()
    optimizer = torchreid.optim.build_optimizer(model, **config_lib.optimizer_kwargs(cfg))
    scheduler = torchreid.optim.build_lr_scheduler(optimizer, **config_lib.lr_scheduler_kwargs(cfg))
    run_kwargs = {**config_lib.engine_run_kwargs(cfg), "save_dir": output_dir(cfg)}
    fingerprint = datamanager.fingerprint()
    resume, recorded = checked_resume(cfg, fingerprint, folder, fgdi=False)
    if resume:
        run_kwargs["start_epoch"] = torchreid.utils.resume_from_checkpoint(
            resume, model, optimizer=optimizer, scheduler=scheduler
        )
        if cfg.train.lr != recorded.train.lr:
            schedules.scale_lrs(scheduler, cfg.train.lr / recorded.train.lr)
        if hasattr(scheduler, "T_max"):
            scheduler.T_max = cfg.train.max_epoch
    trained = model
    if world > 1:
        device_ids = [torch.cuda.current_device()] if datamanager.use_gpu else None
        trained = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    engine = build_engine(cfg, datamanager, trained, optimizer, scheduler, fingerprint)
    engine.register_model("model", model, optimizer, scheduler)  # checkpoints without DDP's "module." prefix
    engine.run(**run_kwargs)
    return getattr(engine, "test_results", {})


def _torchreid_progress(state: dict, recorded) -> Progress:
    done = int(state["epoch"])
    return Progress(done >= recorded.train.max_epoch, {"train.max_epoch": (False, done)})


def checked_resume(cfg: CN, fingerprint: str, folder: RunFolder, fgdi: bool) -> tuple[str, CN | None]:
    """The checkpoint to resume ('' for none) and its recorded config, checked against `cfg` and the
    training data's `fingerprint` before anything is written; then the folder is claimed for the run."""
    resume = "" if cfg.test.evaluate else resume_path(cfg, fgdi)
    recorded = None
    if resume:
        state = read_checkpoint(resume, mmap=True)
        recorded = recorded_config(state, resume)
        progress = (
            checkpoint_progress(state, FGDISettings.from_node(recorded.fgdi, STAGE_NAMES))
            if fgdi
            else _torchreid_progress(state, recorded)
        )
        check_resume(recorded, cfg, progress, resume)
        check_data(state.get("data"), fingerprint, resume)
    if not cfg.test.evaluate and distributed.is_main():
        folder.claim(cfg, resuming=bool(resume))
    return resume, recorded


def resume_path(cfg: CN, fgdi: bool) -> str:
    """``model.resume``; ``auto`` is the run's newest intact checkpoint in ``data.save_dir``, or
    nothing (start afresh) if it has none, so re-running one command continues a killed run."""
    if cfg.model.resume != "auto":
        return cfg.model.resume
    if fgdi:
        found = newest_checkpoint(osp.join(cfg.data.save_dir, "checkpoints"))
    else:
        found = _newest_torchreid_checkpoint(osp.join(cfg.data.save_dir, "model"))
    if not found:
        print(f"=> model.resume auto: no checkpoint in {cfg.data.save_dir}, starting afresh")
        return ""
    print(f"=> model.resume auto: {found}")
    return found


def _newest_torchreid_checkpoint(folder: str) -> str:
    pattern = re.compile(r"model\.pth\.tar-(\d+)$")  # not a temporary file a killed save left
    epochs = {
        int(m.group(1)): path for path in glob.glob(osp.join(glob.escape(folder), "*")) if (m := pattern.search(path))
    }
    for epoch in sorted(epochs, reverse=True):
        try:
            read_checkpoint(epochs[epoch], mmap=True)
            return epochs[epoch]
        except CheckpointError as err:
            print(f"=> model.resume auto: skipping {epochs[epoch]}: {err}")
    return ""


def run_fgdi(cfg: CN, datamanager: DomainImageDataManager, model: FGDI, folder: RunFolder) -> dict:
    """The three-stage engine's run of `model`, resumed or from `model.load_weights` as `cfg` says."""
    if cfg.model.load_weights:
        kept = load_fgdi_checkpoint(model, cfg.model.load_weights)
        print(f"=> Loaded {cfg.model.load_weights}" + (f" (not in it, kept as initialised: {kept})" if kept else ""))
    engine = ImageFGDIEngine(datamanager, model, **config_lib.fgdi_engine_kwargs(cfg))
    resume, _ = checked_resume(cfg, engine.data_fingerprint, folder, fgdi=True)
    if resume:
        state = engine.resume(resume)
        if distributed.is_main():
            continue_from(state, resume, cfg.data.save_dir)
    engine.run(**{**config_lib.engine_run_kwargs(cfg), "save_dir": output_dir(cfg)})
    return getattr(engine, "test_results", {})


def main(argv: list[str] | None = None) -> int:
    """The ``torchreid-fgdi`` console script: `train`, a refusal as one ``error:`` line."""
    return run_command(train, argv)


if __name__ == "__main__":
    sys.exit(main())
