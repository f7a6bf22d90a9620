"""Settings rules: the config checker refuses what the modules that read a key would refuse, with
messages naming the key and the fix; every config problem is a ConfigError; the plugin's errors
share one base."""

import ast
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torchreid

import torchreid_fgdi
from tests.test_fgdi_engine import CONFIG
from torchreid_fgdi.cli import refusals, train
from torchreid_fgdi.cli.run_folder import RunFolderError
from torchreid_fgdi.config import load_config
from torchreid_fgdi.config.checks import CHOICES, RANGES, flat_items
from torchreid_fgdi.config.defaults import get_default_config
from torchreid_fgdi.data.readiness import DatasetsNotReadyError
from torchreid_fgdi.data.samplers import check_identity_batches
from torchreid_fgdi.errors import ConfigError, FGDIError, UnreadableImageError
from torchreid_fgdi.evaluation import NonFiniteFeaturesError, evaluate_features
from torchreid_fgdi.utils import atomic
from torchreid_fgdi.utils import checkpoint as checkpoint_file


@pytest.mark.parametrize(
    "key, bad, fix",
    [
        ("sampler.train_sampler_t", "RandomSampeler", "must be one of .*, DomainBalancedIdentitySampler; got"),
        ("fgdi.beta", "1.5", "must be between 0.0 and 1.0, got 1.5"),
        ("fgdi.beta", "-0.1", "must be between 0.0 and 1.0"),
        ("fgdi.prompt.omega", "-0.5", "must be between 0.0 and 100.0, got -0.5"),
        ("test.visrank_topk", "0", "must be >= 1, got 0"),
        ("data.test_splits", "0", "must be >= 1, got 0"),
    ],
)
def test_each_rule_refuses_a_bad_value_naming_the_key_and_what_is_allowed(key, bad, fix):
    with pytest.raises(ConfigError, match=f"{key} {fix}"):
        load_config((), [key, bad])


@pytest.mark.parametrize(
    "key, edge", [("fgdi.beta", "0.0"), ("fgdi.beta", "1.0"), ("fgdi.prompt.omega", "0.0"), ("test.visrank_topk", "1")]
)
def test_the_rules_accept_their_bounds(key, edge):
    cfg = load_config((), [key, edge])
    assert cfg.test.visrank_topk >= 1 and 0 <= cfg.fgdi.beta <= 1


def _numeric(value) -> bool:
    values = value if isinstance(value, list) else [value]
    return bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def test_every_numeric_key_has_a_range():
    """A new numeric key cannot be added without saying which values it may take."""
    numeric = {key for key, value in flat_items(get_default_config()).items() if _numeric(value)}
    assert numeric == set(RANGES), f"without a range: {sorted(numeric - set(RANGES))}; not numeric keys: " + str(
        sorted(set(RANGES) - numeric)
    )


@pytest.mark.parametrize(
    "key, bad, message",
    [
        ("fgdi.image.gamma", "-1", "fgdi.image.gamma must be > 0.0 and <= 1.0, got -1.0"),
        (
            "fgdi.prompt.min_lr",
            "-1",
            r"fgdi.prompt.min_lr must be between 0.0 and fgdi.prompt.lr \(0.003\), got -1.0",
        ),
        (
            "fgdi.prompt.min_lr",
            "0.01",
            r"fgdi.prompt.min_lr must be between 0.0 and fgdi.prompt.lr \(0.003\), got 0.01",
        ),
        ("fgdi.prompt.temperature", "1e-30", "fgdi.prompt.temperature must be between 0.01 and 100.0, got 1e-30"),
        ("data.norm_std", "[0, 0, 0]", r"data.norm_std must be between 0.01 and 1.0, got \[0.0, 0.0, 0.0\]"),
        ("data.norm_std", "[0.2, 0.2]", r"data.norm_std must list 3 values, one per colour channel"),
        ("sgd.momentum", "1", "sgd.momentum must be >= 0.0 and < 1.0, got 1.0"),
        ("train.lr", "5", "train.lr must be > 0.0 and <= 1.0, got 5.0"),
        ("fgdi.image.milestones", "[30, 0]", r"fgdi.image.milestones must be >= 1, got \[30, 0\]"),
        ("train.print_freq", "0", "train.print_freq must be >= 1, got 0"),
    ],
)
def test_an_absurd_value_is_one_error_line_before_anything_is_built(key, bad, message, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(refusals.DEBUG_VARIABLE, raising=False)
    root, save_dir = tmp_path / "data", tmp_path / "log"
    argv = ["--config-file", CONFIG, "--root", str(root), "data.save_dir", str(save_dir), key, bad]
    # A dataset that is not there: a value the checks let through ends the run there (exit 1), not in training.
    assert train.main([*argv, "data.sources", "['market1501']", "data.targets", "['market1501']"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert re.match(f"error: {message} ", line), line
    assert not root.exists() and not save_dir.exists()


@pytest.mark.parametrize(
    "opts",
    [
        ["fgdi.prompt.min_lr", "0.00035"],
        ["fgdi.prompt.temperature", "0.01"],
        ["fgdi.prompt.temperature", "100"],
        ["fgdi.image.gamma", "1"],
        ["sgd.momentum", "0"],
        ["data.norm_std", "[0.5, 0.5, 0.5]", "data.norm_mean", "[0.5, 0.5, 0.5]"],
    ],
)
def test_the_ranges_admit_their_edges(opts):
    assert load_config((), opts)


def _items(num_pids: int, per_pid: int) -> list:
    return [(f"{pid}_{i}.jpg", pid, i % 2, pid % 2) for pid in range(num_pids) for i in range(per_pid)]


def test_every_sampler_the_checker_accepts_is_one_torchreid_builds_by_name():
    for key in ("sampler.train_sampler", "sampler.train_sampler_t"):
        for name in CHOICES[key]:
            sampler = torchreid.reid.data.sampler.build_train_sampler(_items(8, 4), name, batch_size=8, num_instances=2)
            assert len(list(iter(sampler))) > 0, name


def test_every_choice_for_the_model_and_the_evaluation_is_one_they_accept():
    for neck_feat in CHOICES["fgdi.neck_feat"]:
        model = torchreid.models.build_model("fgdi_tiny", 3, pretrained=False, num_domains=1, neck_feat=neck_feat)
        assert model.eval()(torch.zeros(1, 3, 64, 32)).shape == (1, 128)
    with pytest.raises(ValueError, match="neck_feat must be one of before, after"):
        torchreid.models.build_model("fgdi_tiny", 3, pretrained=False, num_domains=1, neck_feat="between")
    for loss in CHOICES["loss.name"]:
        assert torchreid.models.build_model("fgdi_tiny", 3, loss=loss, pretrained=False, num_domains=1).loss == loss
    query = (torch.eye(3), np.arange(3), np.zeros(3, dtype=int))
    gallery = (torch.eye(3), np.arange(3), np.ones(3, dtype=int))
    for evaluator in CHOICES["test.evaluator"]:
        assert evaluate_features(query, gallery, evaluator=evaluator)["mAP"] == 1.0


def test_unknown_keys_and_unfillable_batches_are_config_errors_too():
    with pytest.raises(ConfigError, match="unknown config key 'fgdi.bta' in the command line; did you mean fgdi.beta"):
        load_config((), ["fgdi.bta", "0.2"])
    with pytest.raises(ConfigError, match=r"sampler.num_instances \(K\) 5 is more than the images of every"):
        check_identity_batches(_items(8, 4), "RandomIdentitySampler", batch_size=10, num_instances=5)
    with pytest.raises(ConfigError, match="a batch of 40 needs 10 identities"):
        check_identity_batches(_items(8, 4), "DomainBalancedIdentitySampler", batch_size=40, num_instances=4)
    with pytest.raises(ConfigError, match=r"train.batch_size 10 is not a multiple of sampler.num_instances \(K\) 4"):
        torchreid_fgdi.data.DomainBalancedIdentitySampler(_items(8, 4), batch_size=10, num_instances=4)


@pytest.mark.parametrize(
    "error, builtin",
    [
        (ConfigError, ValueError),
        (checkpoint_file.CheckpointError, ValueError),
        (atomic.WriteError, OSError),
        (RunFolderError, RuntimeError),
        (UnreadableImageError, OSError),
        (NonFiniteFeaturesError, FloatingPointError),
        (DatasetsNotReadyError, FileNotFoundError),
    ],
)
def test_the_plugins_errors_share_one_base_and_keep_their_builtin_class(error, builtin):
    with pytest.raises(FGDIError):
        raise error("x")
    with pytest.raises(builtin):
        raise error("x")


def test_the_data_layer_does_not_import_the_config_layer():
    data = Path(torchreid_fgdi.__file__).parent / "data"
    for path in sorted(data.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [alias.name for alias in node.names]
                assert not any(n.split(".")[-1] in ("config", "config_checks") for n in names), path
