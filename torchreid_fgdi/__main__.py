"""`python -m torchreid_fgdi --config-file CFG [CFG ...] [KEY VALUE ...]`: train and test from configs.

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

from . import config as config_lib
from .data import DomainImageDataManager
from .data.readiness import ensure_datasets
from .engine import ImageFGDIEngine, build_engine, distributed
from .models import FGDI, load_weights


def build_config(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config-file", nargs="+", default=[], help="yacs YAML config(s), merged in order (e.g. model, protocol)"
    )
    parser.add_argument("-s", "--sources", nargs="+", help="source datasets (overrides the config)")
    parser.add_argument("-t", "--targets", nargs="+", help="target datasets (overrides the config)")
    parser.add_argument("--root", type=str, default="", help="root folder of the datasets")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=None, help="KEY VALUE pairs overriding the config")
    args = parser.parse_args(argv)

    # --config-file takes every following word; the first one that is not a YAML file starts KEY VALUE.
    files = list(args.config_file)
    split = next((i for i, word in enumerate(files) if not word.endswith((".yaml", ".yml"))), len(files))
    opts = files[split:] + list(args.opts)
    files = files[:split]
    for key, value in (("data.root", args.root), ("data.sources", args.sources), ("data.targets", args.targets)):
        if value:
            opts += [key, str(value)]
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
    which breaks anything that runs after `main` in the same process (tests, notebooks).
    """
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, "a") as log, contextlib.redirect_stdout(_Tee(sys.stdout, log)):
        yield


def main(argv=None) -> dict:
    """Trains and tests as the config says; returns the per-target results."""
    cfg = build_config(argv)
    rank, _ = distributed.init_from_env()
    log_name = ("test.log" if cfg.test.evaluate else "train.log") + time.strftime("-%Y-%m-%d-%H-%M-%S")
    log_name += f"-rank{rank}" if rank else ""
    with log_to_file(osp.join(cfg.data.save_dir, log_name)):
        return run(cfg)


def run(cfg) -> dict:
    torchreid.utils.set_random_seed(cfg.train.seed)
    print(f"Show configuration\n{cfg}\n")

    ensure_datasets(cfg.data.root, [*cfg.data.sources, *cfg.data.targets])
    rank, world = distributed.rank(), distributed.world_size()
    datamanager = DomainImageDataManager(
        **config_lib.imagedata_kwargs(cfg), rank=rank, world_size=world, seed=cfg.train.seed
    )
    model = torchreid.models.build_model(
        cfg.model.name,
        datamanager.num_train_pids,
        **config_lib.model_kwargs(cfg, datamanager.num_train_domains),
    )
    if isinstance(model, FGDI):
        return run_fgdi(cfg, datamanager, model)
    if cfg.model.load_weights:
        torchreid.utils.load_pretrained_weights(model, cfg.model.load_weights)
    if datamanager.use_gpu:
        model = model.cuda()
    optimizer = torchreid.optim.build_optimizer(model, **config_lib.optimizer_kwargs(cfg))
    scheduler = torchreid.optim.build_lr_scheduler(optimizer, **config_lib.lr_scheduler_kwargs(cfg))
    run_kwargs = config_lib.engine_run_kwargs(cfg)
    resume = resume_path(cfg, fgdi=False)
    if resume:
        run_kwargs["start_epoch"] = torchreid.utils.resume_from_checkpoint(
            resume, model, optimizer=optimizer, scheduler=scheduler
        )
    trained = model
    if world > 1:
        device_ids = [torch.cuda.current_device()] if datamanager.use_gpu else None
        trained = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    engine = build_engine(cfg, datamanager, trained, optimizer, scheduler)
    engine.register_model("model", model, optimizer, scheduler)  # checkpoints without DDP's "module." prefix
    engine.evaluator = cfg.test.evaluator
    engine.plots, engine.plot_queries = cfg.test.plots, cfg.test.plot_queries
    engine.run(**run_kwargs)
    return getattr(engine, "test_results", {})


def resume_path(cfg, fgdi: bool) -> str:
    """``model.resume``; ``auto`` is the run's newest checkpoint in ``data.save_dir``, or nothing
    (start afresh) if it has none, so re-running one command continues a killed run."""
    if cfg.model.resume != "auto":
        return cfg.model.resume
    if fgdi:
        latest = osp.join(cfg.data.save_dir, "checkpoints", "latest.pth")
        found = [latest] if osp.isfile(latest) else []
    else:
        pattern = re.compile(r"model\.pth\.tar-(\d+)$")  # not a temporary file a killed save left
        epochs = {
            int(m.group(1)): path
            for path in glob.glob(osp.join(cfg.data.save_dir, "model", "*"))
            if (m := pattern.search(path))
        }
        found = [epochs[e] for e in sorted(epochs)]
    if not found:
        print(f"=> model.resume auto: no checkpoint in {cfg.data.save_dir}, starting afresh")
        return ""
    print(f"=> model.resume auto: {found[-1]}")
    return found[-1]


def run_fgdi(cfg, datamanager, model: FGDI) -> dict:
    if cfg.model.load_weights:
        kept = load_weights(model, cfg.model.load_weights)
        print(f"=> Loaded {cfg.model.load_weights}" + (f" (not in it, kept as initialised: {kept})" if kept else ""))
    engine = ImageFGDIEngine(datamanager, model, settings=cfg.fgdi, use_gpu=datamanager.use_gpu)
    engine.config_text = cfg.dump()
    engine.evaluator = cfg.test.evaluator
    engine.plots, engine.plot_queries = cfg.test.plots, cfg.test.plot_queries
    resume = resume_path(cfg, fgdi=True)
    if resume:
        engine.resume(resume)
    engine.run(**config_lib.fgdi_run_kwargs(cfg))
    return getattr(engine, "test_results", {})


if __name__ == "__main__":
    main()
