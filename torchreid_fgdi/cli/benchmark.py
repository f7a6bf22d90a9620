"""Models side by side: on one set of configs, or over a whole cross-domain protocol.

- ``torchreid-fgdi-benchmark --configs A.yaml B.yaml [KEY VALUE ...]``: configs that train and
  test on the same data, one column pair per config.
- ``torchreid-fgdi-benchmark --protocol p1 [--models fgdi osnet_ain_x1_0 ...]``: every setting of
  the protocol (``configs/protocols/p1.yaml``, or each file of ``configs/protocols/p2/``) merged
  with each model's ``configs/models/<model>.yaml``; one row per target (or per setting), the
  average over the unseen targets, and the paper's reported numbers for fgdi beside them.
  ``configs/`` is the copy installed with the package unless ``--configs-dir`` names another.

Every fgdi model's CLIP weights, then every dataset, are checked before anything trains.
``--collect`` reads the ``results.json`` that finished runs left in their ``data.save_dir``
instead of training. ``benchmark.md`` and
``benchmark.csv`` go to ``--out``. KEY VALUE pairs and ``--root`` apply to every run.

``--seeds 1 2 3`` runs every job once per seed (``train.seed S``, ``data.save_dir <save_dir>/seed<S>``)
and shows each cell as the mean ± sample std over the seeds, then each model's difference from
``--reference`` (the first model unless named) paired by seed, with its standard error and whether it
is a tie; ``--collect`` reads the same folders.
``--jobs N`` trains N runs at once, each in its own process (run_pool). A stop signal, or a run
refused or killed, stops every run; the same command with ``model.resume auto`` continues them.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import os.path as osp
import sys
from collections.abc import Sequence
from typing import NamedTuple

from yacs.config import CfgNode as CN

from ..config import RunSettings, load_config
from ..config.loading import PACKAGED_CONFIGS, packaged_note, resolve_config_file
from ..data.readiness import ensure_datasets
from ..errors import ConfigError, RunFolderError, WeightsUnavailableError
from ..evaluation import compare_tables, images_tested, results_from_json
from ..evaluation.report import rerank_note
from ..synthetic import SYNTHETIC_DATASETS, pretrain
from . import run_pool
from . import train as training
from .parsers import command_parser
from .refusals import console_script

MODELS = ("fgdi", "osnet_ain_x1_0", "osnet_x1_0", "resnet50")
# CLIP-FGDI ViT-B/16 as its authors report it (mAP, Rank-1): README averages, Protocol-1 log per target.
PAPER = {
    "p1": {"prid": (80.0, 71.0), "grid": (76.2, 68.8), "viper": (81.4, 74.7), "ilids": (91.6, 86.7)},
    "p2": {},
    "p3": {},
}
PAPER_AVERAGE = {"p1": (82.2, 75.5), "p2": (51.6, 65.1), "p3": (54.3, 67.6)}


def protocol_settings(protocol: str, configs_dir: str) -> list[str]:
    """The protocol's data configs: one file, or every file of its folder."""
    single = osp.join(configs_dir, "protocols", f"{protocol}.yaml")
    files = (
        [single]
        if osp.isfile(single)
        else sorted(glob.glob(osp.join(glob.escape(osp.join(configs_dir, "protocols", protocol)), "*.yaml")))
    )
    if not files:
        known = sorted(osp.splitext(p)[0] for p in os.listdir(osp.join(configs_dir, "protocols")))
        raise ConfigError(f"unknown protocol {protocol!r} under {configs_dir}/protocols; known: {', '.join(known)}")
    return files


def _collected(save_dir: str) -> dict:
    path = osp.join(save_dir, "results.json")
    if not osp.isfile(path):
        raise FileNotFoundError(f"--collect: {path} does not exist; run the config first (drop --collect)")
    with open(path) as f:
        return results_from_json(json.load(f))


def _jobs(args) -> list[tuple[str, str | None, list[str]]]:
    """(column label, row prefix or None, config files) for every run."""
    if args.configs:
        labels = [osp.splitext(osp.basename(path))[0] for path in args.configs]  # a model may have several configs
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ConfigError(f"--configs names {', '.join(repeated)} more than once (column labels are file names)")
        return [(label, None, [path]) for label, path in zip(labels, args.configs)]
    settings = protocol_settings(args.protocol, args.configs_dir)
    models = {m: osp.join(args.configs_dir, "models", f"{m}.yaml") for m in args.models}
    for path in models.values():
        if not osp.isfile(path):
            raise FileNotFoundError(f"no model config {path}; models: {', '.join(MODELS)} or your own file there")
    prefix = len(settings) > 1
    return [
        (m, osp.splitext(osp.basename(s))[0] if prefix else None, [path, s])
        for s in settings
        for m, path in models.items()
    ]


class Run(NamedTuple):
    """One training run: its column, row prefix, config files, seed (None: the config's own) and settings."""

    label: str
    prefix: str | None
    files: list[str]
    seed: int | None
    opts: list[str]
    cfg: CN


def _runs(jobs: list[tuple[str, str | None, list[str]]], opts: list[str], seeds: list[int] | None) -> list[Run]:
    """Every job as it is, or once per seed, each seed in its own ``<data.save_dir>/seed<S>``."""
    runs = []
    for label, prefix, files in jobs:
        cfg = load_config(files, opts)
        if not seeds:
            runs.append(Run(label, prefix, files, None, opts, cfg))
            continue
        for seed in seeds:
            more = [*opts, "train.seed", str(seed), "data.save_dir", osp.join(cfg.data.save_dir, f"seed{seed}")]
            runs.append(Run(label, prefix, files, seed, more, load_config(files, more)))
    return runs


def _check_seeds(seeds: list[int] | None, opts: list[str]) -> None:
    if seeds is None:
        return
    if len(set(seeds)) != len(seeds) or len(seeds) < 2:
        raise ConfigError(
            f"--seeds {' '.join(map(str, seeds))}: give at least two different seeds to show a spread "
            "(for one run with seed S, drop --seeds and pass train.seed S)"
        )
    if "train.seed" in opts[::2]:
        raise ConfigError("--seeds sets train.seed for each run; drop the train.seed KEY VALUE pair")


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "torchreid-fgdi-benchmark",
        "Trains (or collects) several models on the same data and writes their results side by side to\n"
        "benchmark.md and benchmark.csv; the CLIP weights and every dataset are checked before anything\n"
        "trains.",
        [
            "torchreid-fgdi-benchmark --configs configs/synthetic/fgdi_tiny.yaml "
            "configs/synthetic/osnet_ain_x0_25.yaml --seeds 1 2 3 --jobs 2",
            "torchreid-fgdi-benchmark --configs configs/synthetic/fgdi_tiny.yaml "
            "configs/synthetic/osnet_ain_x0_25.yaml --seeds 1 2 3 --collect  # the table again, no training",
            "torchreid-fgdi-benchmark --protocol p1 --models fgdi osnet_ain_x1_0 --root reid-data",
        ],
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--configs", nargs="+", metavar="CFG", help="configs on the same data, one column per file")
    what.add_argument(
        "--protocol", help="p1, p2, p3 or single: every setting of configs/protocols/<protocol>(.yaml) with each model"
    )
    parser.add_argument(
        "--models", nargs="+", default=list(MODELS), help="for --protocol: model configs under <configs-dir>/models/"
    )
    parser.add_argument(
        "--configs-dir",
        default=PACKAGED_CONFIGS,
        help="holds models/ and protocols/ for --protocol (default: the configs installed with the package)",
    )
    parser.add_argument("--root", default="", help="root folder of the datasets (overrides data.root of every config)")
    parser.add_argument(
        "--collect", action="store_true", help="read the results.json finished runs left instead of training"
    )
    parser.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        metavar="S",
        help="run every job once per seed (in <data.save_dir>/seed<S>) and show mean ± std; "
        "default: once, with each config's train.seed",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs trained at once, each with its share of the CPU's cores; 2 halves a seeded synthetic "
        "benchmark's time on a 2-core CPU, with numbers that differ from --jobs 1 at float rounding",
    )
    parser.add_argument(
        "--reference",
        metavar="NAME",
        help="with --seeds: the model (config file name, or --models name) the others' differences are "
        "taken from, paired by seed with their standard error; default: the first",
    )
    parser.add_argument("--out", default="log/benchmark", help="folder for benchmark.md and benchmark.csv")
    parser.add_argument(
        "opts", nargs="*", default=[], metavar="KEY VALUE", help="config keys and values overriding every config"
    )
    return parser


def check_backbones(runs: list[Run]) -> None:
    """Prints where each CLIP-FGDI model reads its CLIP weights from; refuses, naming the file and
    what to do, weights that are neither here nor downloadable from here (before any dataset is read:
    the runs would stop only after loading them)."""
    checked: dict[str, str] = {}  # label -> where; a label's runs (its seeds, a protocol's targets) share a model
    for run in runs:
        if run.label in checked:
            continue
        try:
            where = training.clip_weights_source(RunSettings.from_config(run.cfg))
        except (WeightsUnavailableError, FileNotFoundError) as err:
            raise type(err)(f"CLIP weights of {run.label} not ready, nothing was started: {err}") from err
        if where:
            checked[run.label] = where
    if checked:
        width = max(map(len, checked))
        print("=> CLIP weights")
        for label, where in checked.items():
            print(f"  {label:<{width}}  {where}")


def _check_runs(runs: list[Run], same_data: bool, collect: bool) -> None:
    """Each run writes its own folder (and, for `same_data`, all train and test on the same datasets);
    unless `collect`, every model's CLIP weights and every dataset are there before anything trains."""
    cfgs = [run.cfg for run in runs]
    shared = sorted({c.data.save_dir for c in cfgs if [d.data.save_dir for d in cfgs].count(c.data.save_dir) > 1})
    if shared:
        raise ConfigError(
            f"several runs would write data.save_dir {', '.join(shared)}: each would overwrite the one before and "
            "the table would show one run's numbers twice; give each config its own data.save_dir"
        )
    if same_data and len({(tuple(c.data.sources), tuple(c.data.targets)) for c in cfgs}) > 1:
        raise ConfigError("the --configs must train and test on the same data (sources and targets)")
    if not collect:
        check_backbones(runs)
        for root in {c.data.root for c in cfgs}:
            names = [n for c in cfgs if c.data.root == root for n in (*c.data.sources, *c.data.targets)]
            ensure_datasets(root, names, generated=SYNTHETIC_DATASETS)


def _outcomes(runs: list[Run], collect: bool, jobs: int) -> list[dict]:
    """Each run's per-target results: read back (`collect`), or trained `jobs` at a time (one by one here)."""
    if collect:
        return [_collected(run.cfg.data.save_dir) for run in runs]
    argvs = [["--config-file", *run.files, *run.opts] for run in runs]
    names = [run.label + ("" if run.seed is None else f" seed {run.seed}") for run in runs]
    folders = [run.cfg.data.save_dir for run in runs]
    needs_clip = [run.cfg.fgdi.clip_weights == pretrain.TAG for run in runs]
    return run_pool.run_all(argvs, names, folders, needs_clip, jobs)


def check_test_images(runs: list[Run], outcomes: list[dict]) -> None:
    """Refuses a target tested on other query / gallery images in some runs than in others (a
    synthetic domain regenerated with a bigger test split between them, say): a mean or a difference
    over them would mix two benchmarks."""
    tested: dict[tuple, dict[str, str]] = {}
    for run, results in zip(runs, outcomes):
        for target, res in results.items():
            images = images_tested(res["images"]) if "images" in res else "not recorded (an older results.json)"
            tested.setdefault((run.prefix, target), {})[run.cfg.data.save_dir] = images
    for (prefix, target), images in tested.items():
        if len(set(images.values())) > 1:
            by_counts: dict[str, list[str]] = {}
            for folder, counts in images.items():
                by_counts.setdefault(counts, []).append(folder)
            shown = "; ".join(
                f"{counts} in {', '.join(folders[:2])}{f' and {len(folders) - 2} more' if len(folders) > 2 else ''}"
                for counts, folders in by_counts.items()
            )
            raise RunFolderError(
                f"{target}{f' ({prefix})' if prefix else ''} was tested on other query / gallery images in some runs "
                f"than in others ({shown}): repeat the test of the runs made on the old data, e.g. the same command "
                "without --collect and with model.resume auto (a finished run then repeats its final test on the "
                "data there now)"
            )


def _by_model(runs: list[Run], outcomes: list[dict]) -> tuple[dict[str, dict[int | None, dict]], set[str]]:
    """(model label -> seed -> table row -> result, the rows of source domains)."""
    per_seed: dict[str, dict[int | None, dict]] = {}
    source_rows = set()
    for run, results in zip(runs, outcomes):
        rows = per_seed.setdefault(run.label, {}).setdefault(run.seed, {})
        for target, res in results.items():
            row = target if run.prefix is None else (run.prefix if len(results) == 1 else f"{run.prefix}/{target}")
            rows[row] = res
            if target in run.cfg.data.sources:
                source_rows.add(row)
    return per_seed, source_rows


def write_tables(
    per_seed: dict[str, dict[int | None, dict]],
    source_rows: set[str],
    protocol: str | None,
    out: str,
    reranked: Sequence[str] = (),
    versus: str | None = None,
):
    """``benchmark.md`` and ``benchmark.csv`` in `out`, with the paper's numbers for a protocol it reports
    and, over seeds, each model's difference from `versus` (default: the first); the models in
    `reranked` tested with re-ranked distances, named below the table."""
    reference = None
    if protocol in PAPER:
        reference = {**PAPER[protocol], "**average**": PAPER_AVERAGE[protocol]}
    runs = {m: list(s.values()) for m, s in per_seed.items()}
    markdown, csv = compare_tables(runs, source_rows, reference, versus)
    if reranked:
        markdown += f"\n{rerank_note(reranked)}\n"
    os.makedirs(out, exist_ok=True)
    with open(osp.join(out, "benchmark.md"), "w") as f:
        f.write(markdown)
    with open(osp.join(out, "benchmark.csv"), "w") as f:
        f.write(csv)
    print(f"\n{markdown}\n(written to {out}/benchmark.md and benchmark.csv)")


def benchmark(argv: list[str] | None = None) -> dict[str, dict]:
    """Runs (or collects) every job and writes the side-by-side table; returns each model's results.

    The results are model label -> row -> torchreid result (``mAP``, ``cmc``); with ``--seeds``,
    model label -> seed -> row -> result.
    """
    args = build_parser().parse_intermixed_args(argv)
    if args.configs:
        names, more = training.split_config_files(args.configs)
        args.configs = [resolve_config_file(name) for name in names]  # the runs read the files themselves
        args.opts = more + args.opts
        for note in filter(None, map(packaged_note, names, args.configs)):
            print(note)
    opts = list(args.opts) + (["data.root", args.root] if args.root else [])
    _check_seeds(args.seeds, opts)
    run_pool.check_jobs(args.jobs)
    runs = _runs(_jobs(args), opts, args.seeds)  # every config checked before any run
    labels = list(dict.fromkeys(run.label for run in runs))
    if args.reference is not None and not args.seeds:
        raise ConfigError("--reference compares models paired by seed: give --seeds too (at least two)")
    if args.reference is not None and args.reference not in labels:
        raise ConfigError(f"--reference {args.reference}: not one of the models, which are {', '.join(labels)}")
    _check_runs(runs, same_data=bool(args.configs), collect=args.collect)
    outcomes = _outcomes(runs, args.collect, args.jobs)
    check_test_images(runs, outcomes)
    per_seed, source_rows = _by_model(runs, outcomes)
    reranked = sorted({run.label for run in runs if run.cfg.test.rerank})
    write_tables(per_seed, source_rows, args.protocol, args.out, reranked, args.reference)
    return per_seed if args.seeds else {m: s[None] for m, s in per_seed.items()}


main = console_script(benchmark)


if __name__ == "__main__":
    sys.exit(main())
