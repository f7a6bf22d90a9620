"""The cross-domain protocols on tiny fake copies of the real datasets (tests/fake_datasets.py),
read by the real dataset classes."""

import subprocess
import sys
from pathlib import Path

import pytest
import torchreid

from torchreid_fgdi.cli.benchmark import PAPER_AVERAGE, benchmark, protocol_settings
from torchreid_fgdi.config import load_config
from torchreid_fgdi.data.readiness import check_datasets

from .fake_datasets import BUILDERS

CONFIGS = str(Path(__file__).parents[1] / "configs")
TINY = ["model.pretrained", "False", "data.height", "64", "data.width", "32", "data.workers", "0"]
TINY += ["train.batch_size", "4", "sampler.num_instances", "2", "train.max_epoch", "1", "train.fixbase_epoch", "0"]
TINY += ["test.batch_size", "64", "test.eval_freq", "-1", "data.test_splits", "2", "train.print_freq", "1000"]
TINY += ["fgdi.stage1_epochs", "1", "fgdi.stage2a_epochs", "1", "fgdi.stage2b_epochs", "1", "fgdi.stage3_epochs", "1"]
TINY += ["fgdi.prompt.batch_size", "8", "fgdi.image.lr", "0.001"]
TINY += ["fgdi.num_classes", "0"]  # Protocol-2's 17.5k rows cost half a minute here; tests/test_recipe.py covers them


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fake-reid")
    expected = {name: build(str(root)) for name, build in BUILDERS.items()}
    return str(root), expected


def _counts(dataset) -> dict:
    def ids(items):
        return len({item[1] for item in items})

    return {
        "train_ids": ids(dataset.train),
        "train_imgs": len(dataset.train),
        "query_ids": ids(dataset.query),
        "query_imgs": len(dataset.query),
        "gallery_ids": ids(dataset.gallery),
        "gallery_imgs": len(dataset.gallery),
    }


CASES = [(name, {}) for name in BUILDERS if name != "cuhk03"] + [
    ("cuhk03", {"cuhk03_labeled": labeled, "cuhk03_classic_split": classic})
    for labeled in (False, True)
    for classic in (False, True)
]


@pytest.mark.parametrize("name,kwargs", CASES, ids=[f"{n}-{'-'.join(map(str, k.values()))}" for n, k in CASES])
def test_registered_dataset_parses_the_real_layout(fake_root, name, kwargs):
    root, expected = fake_root
    want = expected[name]
    if name == "cuhk03":
        want = want["classic" if kwargs["cuhk03_classic_split"] else "new"]
    dataset = torchreid.data.datasets.init_image_dataset(name, root=root, split_id=0, verbose=False, **kwargs)
    assert _counts(dataset) == want
    assert check_datasets(root, [name]) == {name: "found"}


def _labels_under_hash_seeds(classes: list[str], root: str, seeds: list[str]) -> list[list[str]]:
    """The training labels each class in `classes` gives, in one process per hash seed (run side by
    side): one list per class, one entry per seed."""
    code = (
        "import torchreid_fgdi, importlib\n"
        f"for path in {classes!r}:\n"
        "    mod, cls = path.rsplit('.', 1)\n"
        f"    ds = getattr(importlib.import_module(mod), cls)(root={root!r}, verbose=False)\n"
        "    print(sorted((p.split('/')[-1], pid) for p, pid, *_ in ds.train))"
    )
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            stdout=subprocess.PIPE,
            text=True,
            env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"},
        )
        for seed in seeds
    ]
    outputs = [run.communicate()[0].splitlines() for run in runs]
    assert all(run.returncode == 0 for run in runs)
    return [[lines[i] for lines in outputs] for i in range(len(classes))]


@pytest.mark.subprocess
@pytest.mark.timeout(900)
def test_identity_labels_do_not_depend_on_the_hash_seed(fake_root):
    root, _ = fake_root
    names = ("cuhksysu", "cuhk02")
    classes = [f"torchreid.reid.data.datasets.image.{name}.{name.upper()}" for name in names]  # torchreid's
    classes += [f"torchreid_fgdi.data.public.{name.upper()}" for name in names]  # ours
    labels = _labels_under_hash_seeds(classes, root, ["1", "2", "3", "4"])  # one set of processes for all
    for name, theirs, ours in zip(names, labels[:2], labels[2:]):
        assert len(set(theirs)) > 1, name
        assert len(set(ours)) == 1, name


def test_the_protocols_with_reported_numbers_guide_as_the_code_that_made_them():
    """The paper's tables come from the authors' code, whose guiding term runs the other way; the
    paper's direction stays the model's default, one key away."""
    model = f"{CONFIGS}/models/fgdi.yaml"
    assert load_config(model).fgdi.guide_direction == "paper"
    for protocol in PAPER_AVERAGE:
        for data in protocol_settings(protocol, CONFIGS):
            assert load_config([model, data]).fgdi.guide_direction == "authors", data
            assert load_config([model, data], ["fgdi.guide_direction", "paper"]).fgdi.guide_direction == "paper"
    for data in protocol_settings("single", CONFIGS):  # no reported numbers to reproduce: the paper's
        assert load_config([model, data]).fgdi.guide_direction == "paper", data


@pytest.mark.parametrize("protocol", ["p1", "p2", "p3", "single"])
def test_protocol_runs_fgdi_on_the_fake_layouts(fake_root, tmp_path, monkeypatch, protocol):
    root, _ = fake_root
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "bench"
    args = ["--protocol", protocol, "--models", "fgdi", "--configs-dir", CONFIGS, "--root", root, "--out", str(out)]
    runs = benchmark(args + ["model.name", "fgdi_tiny", *TINY])
    rows = list(runs["fgdi"])
    expected_rows = {
        "p1": ["prid", "grid", "viper", "ilids"],
        "p2": ["cuhk03", "market1501", "msmt17"],
        "p3": ["cuhk03", "market1501", "msmt17"],
        "single": [
            "dukemtmcreid_to_market1501",
            "market1501_to_cuhk03",
            "market1501_to_dukemtmcreid",
            "market1501_to_msmt17",
            "msmt17_to_market1501",
        ],
    }[protocol]
    assert rows == expected_rows
    table = (out / "benchmark.md").read_text()
    average = next(line for line in table.splitlines() if line.startswith("| **average** | unseen |"))
    if protocol in PAPER_AVERAGE:
        assert average.endswith("| {:.1f} | {:.1f} |".format(*PAPER_AVERAGE[protocol]))
    else:
        assert "paper" not in table
    if protocol == "p1":
        assert len(runs["fgdi"]["prid"]["splits"]) == 2
        prid = next(line for line in table.splitlines() if line.startswith("| prid |"))
        assert prid.endswith("| 80.0 | 71.0 |")


def test_protocol_runs_the_torchreid_baselines(fake_root, tmp_path, monkeypatch):
    root, _ = fake_root
    monkeypatch.chdir(tmp_path)
    models = ["osnet_ain_x1_0", "osnet_x1_0", "resnet50"]
    args = ["--protocol", "p1", "--models", *models, "--configs-dir", CONFIGS, "--root", root, "--out", str(tmp_path)]
    runs = benchmark(args + TINY)
    assert list(runs) == models and all(list(r) == ["prid", "grid", "viper", "ilids"] for r in runs.values())
