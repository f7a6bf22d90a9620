"""`python -m torchreid_fgdi.benchmark --configs A.yaml B.yaml [KEY VALUE ...]`: models side by side.

Runs every config (or, with ``--collect``, reads the ``results.json`` a finished run left in its
``data.save_dir``) and prints one table with each model's mAP / Rank-1 per target and the
averages over source and unseen targets; ``benchmark.md`` and ``benchmark.csv`` go to ``--out``.
KEY VALUE pairs and ``--root`` apply to every config.
"""

from __future__ import annotations

import argparse
import json
import os
import os.path as osp

from . import __main__ as cli
from .config import load_config
from .evaluation import compare_tables, result_from_json


def _label(cfg, config_file: str, taken: set) -> str:
    label = cfg.model.name if cfg.model.name not in taken else osp.splitext(osp.basename(config_file))[0]
    taken.add(label)
    return label


def _collected(save_dir: str) -> dict:
    path = osp.join(save_dir, "results.json")
    if not osp.isfile(path):
        raise FileNotFoundError(f"--collect: {path} does not exist; run the config first (drop --collect)")
    with open(path) as f:
        return {name: result_from_json(r) for name, r in json.load(f).items()}


def main(argv=None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", required=True, help="yacs YAML configs, one per model")
    parser.add_argument("--root", default="", help="root folder of the datasets (overrides every config)")
    parser.add_argument("--collect", action="store_true", help="read finished runs instead of training")
    parser.add_argument("--out", default="log/benchmark", help="where benchmark.md / benchmark.csv go")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE pairs overriding every config")
    args = parser.parse_args(argv)
    opts = list(args.opts) + (["data.root", args.root] if args.root else [])

    cfgs = {path: load_config(path, opts) for path in args.configs}  # every config checked before any run
    sources = {tuple(cfg.data.sources) for cfg in cfgs.values()}
    targets = {tuple(cfg.data.targets) for cfg in cfgs.values()}
    if len(sources) > 1 or len(targets) > 1:
        raise ValueError(f"the configs must train and test on the same data; sources {sources}, targets {targets}")
    runs, taken = {}, set()
    for path, cfg in cfgs.items():
        label = _label(cfg, path, taken)
        if args.collect:
            runs[label] = _collected(cfg.data.save_dir)
        else:
            runs[label] = cli.main(["--config-file", path, *opts])
    markdown, csv = compare_tables(runs, sources.pop())
    os.makedirs(args.out, exist_ok=True)
    with open(osp.join(args.out, "benchmark.md"), "w") as f:
        f.write(markdown)
    with open(osp.join(args.out, "benchmark.csv"), "w") as f:
        f.write(csv)
    print(f"\n{markdown}\n(written to {args.out}/benchmark.md and benchmark.csv)")
    return runs


if __name__ == "__main__":
    main()
