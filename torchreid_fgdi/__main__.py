"""`python -m torchreid_fgdi --config-file CFG [KEY VALUE ...]`: train and test from a config.

The same steps as torchreid's `scripts/main.py`: config -> data manager -> model -> optimizer
and scheduler -> engine -> `engine.run`, then a per-target table (also in `save_dir`).
"""

from __future__ import annotations

import argparse
import os.path as osp
import sys
import time

import torch
import torchreid

from . import config as config_lib
from .data import DomainImageDataManager
from .engine import build_engine


def build_config(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", type=str, default="", help="path to a yacs YAML config")
    parser.add_argument("-s", "--sources", nargs="+", help="source datasets (overrides the config)")
    parser.add_argument("-t", "--targets", nargs="+", help="target datasets (overrides the config)")
    parser.add_argument("--root", type=str, default="", help="root folder of the datasets")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=None, help="KEY VALUE pairs overriding the config")
    args = parser.parse_args(argv)

    cfg = config_lib.get_default_config()
    cfg.use_gpu = torch.cuda.is_available()
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    if args.root:
        cfg.data.root = args.root
    if args.sources:
        cfg.data.sources = args.sources
    if args.targets:
        cfg.data.targets = args.targets
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    return cfg


def main(argv=None) -> dict:
    cfg = build_config(argv)
    torchreid.utils.set_random_seed(cfg.train.seed)
    log_name = "test.log" if cfg.test.evaluate else "train.log"
    log_name += time.strftime("-%Y-%m-%d-%H-%M-%S")
    sys.stdout = torchreid.utils.Logger(osp.join(cfg.data.save_dir, log_name))
    print(f"Show configuration\n{cfg}\n")

    datamanager = DomainImageDataManager(**config_lib.imagedata_kwargs(cfg))
    model = torchreid.models.build_model(
        name=cfg.model.name,
        num_classes=datamanager.num_train_pids,
        loss=cfg.loss.name,
        pretrained=cfg.model.pretrained,
        use_gpu=datamanager.use_gpu,
    )
    if cfg.model.load_weights:
        torchreid.utils.load_pretrained_weights(model, cfg.model.load_weights)
    if datamanager.use_gpu:
        model = model.cuda()
    optimizer = torchreid.optim.build_optimizer(model, **config_lib.optimizer_kwargs(cfg))
    scheduler = torchreid.optim.build_lr_scheduler(optimizer, **config_lib.lr_scheduler_kwargs(cfg))
    run_kwargs = config_lib.engine_run_kwargs(cfg)
    if cfg.model.resume:
        run_kwargs["start_epoch"] = torchreid.utils.resume_from_checkpoint(
            cfg.model.resume, model, optimizer=optimizer, scheduler=scheduler
        )
    engine = build_engine(cfg, datamanager, model, optimizer, scheduler)
    engine.run(**run_kwargs)
    sys.stdout.flush()
    return engine.test_results


if __name__ == "__main__":
    main()
