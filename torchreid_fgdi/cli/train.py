"""Train and test from configs: what ``torchreid-fgdi --config-file CFG [CFG ...] [KEY VALUE ...]`` runs.

The same steps as torchreid's `scripts/main.py`: config -> data manager -> model -> optimizer
and scheduler -> engine -> `engine.run`, then a per-target table (also in `save_dir`). FGDI
models (``fgdi*``, and ``clip_reid*``: CLIP-ReID) run through the stage-table `ImageFGDIEngine`,
which owns its optimizers and runs the stages of the model's method; every other torchreid
model through torchreid's softmax / triplet engine.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import os.path as osp
import sys
import time
import traceback
from collections.abc import Iterator

import torch
import torchreid
from yacs.config import CfgNode as CN

from ..config import RunSettings, load_config, unread_warnings
from ..config.loading import packaged_config_names, packaged_note, resolve_config_file
from ..config.recipe import check_recipe
from ..data import DomainImageDataManager
from ..data.readiness import ensure_datasets
from ..engine import ImageFGDIEngine, build_engine, distributed, schedules
from ..engine.checkpointing import continue_from
from ..engine.stages import DONE
from ..models import FGDI, load_fgdi_checkpoint
from ..models.checkpoints import load_torchreid_checkpoint
from ..models.variants import check_variant_weights
from ..synthetic import SYNTHETIC_DATASETS
from ..utils import atomic
from .parsers import command_parser
from .refusals import REFUSALS, Stopped, console_script, refusal_text
from .resume import checked_resume
from .run_folder import RunFolder


def _split_words(words: list[str], belongs) -> tuple[list[str], list[str]]:
    """(the option's own words, the KEY VALUE words that followed them): an option taking several
    words also swallows the overrides typed after it, up to the first word that is not its own."""
    split = next((i for i, word in enumerate(words) if not belongs(word)), len(words))
    return words[:split], words[split:]


def split_config_files(words: list[str]) -> tuple[list[str], list[str]]:
    """--config-file's words: (YAML files or packaged configs' names, KEY VALUE words after them).
    A config key has a dot, a packaged config's name (``synthetic/fgdi_tiny``) none."""
    return _split_words(words, lambda word: word.endswith((".yaml", ".yml")) or "." not in word)


# fast-reid's command-line flags, answered with what does the same here.
FASTREID_FLAGS = {
    "--eval-only": "test.evaluate True model.load_weights CKPT",
    "--resume": "model.resume auto (or model.resume CKPT)",
    "--num-gpus": "torchrun --nproc_per_node N -m torchreid_fgdi --config-file ...",
}


def command_line(argv: list[str] | None = None) -> tuple[list[str], list[str]]:
    """(config files, KEY VALUE words) the command line gives; with neither the user asked for no
    run, so the usage is printed instead (exit 2). ``--list-configs`` prints the packaged configs'
    names and exits."""
    parser = command_parser(
        "torchreid-fgdi",
        "Trains and tests a model as yacs configs say (torchreid's scripts/main.py, plus the stage-table\n"
        "engine for fgdi models, and clip_reid ones: CLIP-ReID), then writes a per-target table to data.save_dir.",
        [
            "torchreid-fgdi --config-file synthetic/fgdi_tiny  # CLIP-FGDI on the synthetic domains (a config by name)",
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
        help="yacs YAML config(s), merged in order (e.g. model, protocol); later files override earlier ones; "
        "a config installed with the package by its name, e.g. synthetic/fgdi_tiny",
    )
    parser.add_argument("--list-configs", action="store_true", help="print the installed configs' names and exit")
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
    if args.list_configs:
        print("\n".join(packaged_config_names()))
        parser.exit()
    if not files and not opts:
        parser.error("nothing to run: give --config-file CFG (and KEY VALUE overrides); the examples are in --help")
    return files, opts


class _Tee:
    """The console, copied into a log file. A log that cannot be written (a full disk) stops being
    written, not the run: its first error is kept in `failed` for the end of the run."""

    def __init__(self, console, log):
        self.console, self.log, self.failed = console, log, None

    def write(self, text: str) -> None:
        self.console.write(text)
        self._to_log(self.log.write, text)

    def flush(self) -> None:
        self.console.flush()
        self._to_log(self.log.flush)

    def log_only(self, text: str) -> None:
        """What the console gets from elsewhere (stderr), so the log does not just stop."""
        self._to_log(self.log.write, text)

    def close_log(self) -> None:
        try:
            self.log.close()  # flushes what is buffered: where a full disk shows at the end of a run
        except OSError as err:
            self.failed = self.failed or err

    def _to_log(self, call, *args) -> None:
        if self.failed is None:
            try:
                call(*args)
            except OSError as err:
                self.failed = err


@contextlib.contextmanager
def log_to_file(path: str) -> Iterator[None]:
    """Copies stdout into `path` while the block runs, like torchreid's `Logger`, and ends it with the
    refusal or traceback that stops the block.

    torchreid's `Logger` replaces `sys.stdout` for good and closes the console when collected,
    which breaks anything that runs after `train` in the same process (tests, notebooks). A log
    that cannot be completed (a full disk) is a `WriteError` once the block is over (an error of
    the block itself comes first): the checkpoints and results were written whole before it.
    """
    os.makedirs(osp.dirname(path), exist_ok=True)
    tee = _Tee(sys.stdout, open(path, "a"))
    try:
        with contextlib.redirect_stdout(tee):
            yield
    except (*REFUSALS, Stopped) as err:  # the log ends saying why, as the console will
        tee.log_only(refusal_text(err) + "\n")
        raise
    except Exception:
        tee.log_only(traceback.format_exc())
        raise
    finally:
        tee.close_log()
    if tee.failed is not None:
        missing = "the log misses its last lines (the console showed them)"
        raise atomic.incomplete_log(path, tee.failed, missing) from tee.failed


def train(argv: list[str] | None = None) -> dict:
    """Trains and tests as the config says; returns the per-target results."""
    files, opts = command_line(argv)
    paths = [resolve_config_file(name) for name in files]
    cfg = load_config(paths, opts)
    distributed.init_from_env()
    if not distributed.is_main():  # under torchrun rank 0 alone speaks, and keeps the log
        return run(cfg)
    log_name = ("test.log" if cfg.test.evaluate else "train.log") + time.strftime("-%Y-%m-%d-%H-%M-%S")
    with log_to_file(osp.join(cfg.data.save_dir, log_name)):
        for note in filter(None, map(packaged_note, files, paths)):
            print(note)
        return run(cfg)


def run(cfg: CN) -> dict:
    """Trains and tests as `cfg` says, holding its output folder (`RunFolder`) throughout. The config
    is read once, into `RunSettings`; only the resume check compares it whole with the recorded one,
    and an evaluation's weights are checked against it for the keys that decide features (`check_recipe`)."""
    settings = RunSettings.from_config(cfg)
    if cfg.test.evaluate and settings.load_weights:
        check_recipe(cfg, settings.load_weights)
    folder = RunFolder(settings.run["save_dir"])
    with folder if distributed.is_main() else contextlib.nullcontext():
        return _run(cfg, settings, folder)


def _run(cfg: CN, settings: RunSettings, folder: RunFolder) -> dict:
    torchreid.utils.set_random_seed(settings.seed)
    print(f"Show configuration\n{cfg}\n")
    for line in unread_warnings(cfg):
        print(line)

    where = clip_weights_source(settings)
    if where:
        print(f"=> CLIP weights: {where}")
    data = settings.data
    ensure_datasets(data["root"], [*data["sources"], *data["targets"]], generated=SYNTHETIC_DATASETS)
    rank, world = distributed.rank(), distributed.world_size()
    datamanager = DomainImageDataManager(**data, rank=rank, world_size=world)
    model = build_model(settings, datamanager)
    if isinstance(model, FGDI):
        return run_fgdi(cfg, settings, datamanager, model, folder)
    return run_torchreid(cfg, settings, datamanager, model, folder)


def clip_weights_source(settings: RunSettings) -> str | None:
    """Where the fgdi model of `settings` reads its CLIP weights (None for torchreid's models), checked
    without downloading or making anything; refused, with what to do, when they cannot be had from
    here. Called before any dataset is read: a run would stop only after loading them all."""
    if not settings.fgdi_model:
        return None
    return check_variant_weights(settings.model_name, settings.model["pretrained"], settings.model["cache_dir"])


def build_model(settings: RunSettings, datamanager: DomainImageDataManager) -> torch.nn.Module:
    """torchreid's `build_model` as `settings` say, sized by the training data; under torchrun, rank 0's
    first (weights made on first use, such as the pretrained tiny CLIP, are made by the rank that speaks)."""
    classes = settings.num_classes(datamanager.num_train_pids)
    with distributed.main_first():
        return torchreid.models.build_model(
            settings.model_name, classes, **settings.model_kwargs(datamanager.num_train_domains)
        )


def run_torchreid(
    cfg: CN, settings: RunSettings, datamanager: DomainImageDataManager, model: torch.nn.Module, folder: RunFolder
) -> dict:
    """A torchreid model's run through the engine of ``loss.name``, resumed or from ``model.load_weights``."""
    if settings.load_weights:
        skipped = load_torchreid_checkpoint(model, settings.load_weights, skip_classifier=True)
        print(
            f"=> Loaded {settings.load_weights}"
            + (f" (other identities, kept as initialised: {skipped})" if skipped else "")
        )
    if datamanager.use_gpu:
        model = model.cuda()
    optimizer = torchreid.optim.build_optimizer(model, **settings.optimizer)
    scheduler = torchreid.optim.build_lr_scheduler(optimizer, **settings.scheduler)
    run_kwargs = dict(settings.run)
    fingerprint = datamanager.fingerprint()
    resume, recorded = checked_resume(cfg, fingerprint, folder, fgdi=False)
    if resume:
        run_kwargs["start_epoch"] = torchreid.utils.resume_from_checkpoint(
            resume, model, optimizer=optimizer, scheduler=scheduler
        )
        if settings.optimizer["lr"] != recorded.train.lr:
            schedules.scale_lrs(scheduler, settings.optimizer["lr"] / recorded.train.lr)
        if hasattr(scheduler, "T_max"):
            scheduler.T_max = settings.scheduler["max_epoch"]
    trained = model
    if distributed.world_size() > 1:
        device_ids = [torch.cuda.current_device()] if datamanager.use_gpu else None
        trained = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    engine = build_engine(
        datamanager, trained, optimizer, scheduler, settings.loss, settings.test, settings.config_text
    )
    engine.register_model("model", model, optimizer, scheduler)  # checkpoints without DDP's "module." prefix
    engine.resumed_from = resume
    engine.run(**run_kwargs)
    return getattr(engine, "test_results", {})


def run_fgdi(
    cfg: CN, settings: RunSettings, datamanager: DomainImageDataManager, model: FGDI, folder: RunFolder
) -> dict:
    """The stage-table engine's run of `model` (its method's stages), resumed or from ``model.load_weights``."""
    if settings.load_weights:
        kept = load_fgdi_checkpoint(model, settings.load_weights)
        print(f"=> Loaded {settings.load_weights}" + (f" (not in it, kept as initialised: {kept})" if kept else ""))
    engine = ImageFGDIEngine(
        datamanager,
        model,
        settings.fgdi,
        settings.test,
        config_text=settings.config_text,
    )
    resume, _ = checked_resume(cfg, engine.data_fingerprint, folder, fgdi=True)
    if resume:
        state = engine.resume(resume)
        if distributed.is_main() and state["stage"] != DONE:  # a finished run only tests again: nothing to continue
            continue_from(state, resume, settings.run["save_dir"])
    engine.run(**settings.run)
    return getattr(engine, "test_results", {})


main = console_script(train)


if __name__ == "__main__":
    sys.exit(main())
