"""Every key of torchreid's default_config is read by a run, warned about with what governs it, or refused."""

import importlib.util
import re
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, parity
from tests.test_fgdi_engine import CONFIG
from torchreid_fgdi.cli.train import main as train_main
from torchreid_fgdi.cli.train import train
from torchreid_fgdi.config import TORCHREID_KEYS, ConfigError, RunSettings, load_config, unread_keys, unread_warnings
from torchreid_fgdi.config.checks import ALIASES, READ, READ_WITH, REFUSE, WARN, flat_items
from torchreid_fgdi.config.defaults import get_default_config

OSNET = str(Path(CONFIG).with_name("osnet_ain_x0_25.yaml"))
TRAINING_MD = Path(__file__).resolve().parents[1] / "docs" / "training.md"
TABLE_HEADING = "### torchreid's keys"


def _torchreid_keys() -> set[str]:
    """The keys of torchreid's own default_config (the unchanged fixture), under this config's names;
    use_gpu is set by torchreid's main.py rather than its default_config."""
    spec = importlib.util.spec_from_file_location(
        "torchreid_default_config", FIXTURES / "torchreid-upstream" / "default_config.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {ALIASES.get(key, key) for key in flat_items(module.get_default_config())} | {"use_gpu"}


@parity("torchreid-upstream/default_config.py")
def test_every_torchreid_key_is_classified_for_both_engines():
    keys = _torchreid_keys()
    assert len(keys) > 60  # the whole default_config was read
    assert not keys - set(TORCHREID_KEYS), (
        f"torchreid keys with no row in config.checks.TORCHREID_KEYS: {keys - set(TORCHREID_KEYS)}"
    )
    assert not set(TORCHREID_KEYS) - keys, "rows for keys torchreid does not have"
    ours = flat_items(get_default_config())
    for key, uses in TORCHREID_KEYS.items():
        assert key in ours
        for use in uses:
            assert use.action in (READ, READ_WITH, WARN, REFUSE) and bool(use.says) == (use.action != READ), key
            assert (use.when is not None) == (use.action == READ_WITH), key


def test_the_issues_three_keys_are_refused_or_warned_about():
    for opts in (["data.k_tfm", "2"], ["data.load_train_targets", "True", "data.targets", "['synth_d']"]):
        for config in (CONFIG, OSNET):
            with pytest.raises(ConfigError, match=rf"^{re.escape(opts[0])} (2|True) .*; set {re.escape(opts[0])} "):
                load_config(config, opts)
    (line,) = unread_warnings(load_config(CONFIG, ["train.staged_lr", "True"]))
    assert line == (
        "=> Warning: train.staged_lr True is not read by fgdi_tiny's three-stage engine: fgdi.image.lr (biases: x "
        "fgdi.image.bias_lr_factor) and fgdi.prompt.lr / classifier_lr set each stage's rates"
    )
    baseline = load_config(OSNET, ["train.staged_lr", "True"])  # torchreid's build_optimizer reads it
    assert unread_warnings(baseline) == [] and RunSettings.from_config(baseline).optimizer["staged_lr"] is True


def test_a_refused_key_is_one_error_line_and_exit_2_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TORCHREID_FGDI_DEBUG", raising=False)
    assert train_main(["--config-file", CONFIG, "data.save_dir", str(tmp_path / "run"), "data.k_tfm", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: data.k_tfm 2 asks for several augmented views")
    assert not (tmp_path / "run").exists()


def test_warnings_name_only_changed_keys_and_differ_by_engine():
    assert unread_keys(load_config(CONFIG)) == {} and unread_keys(load_config(OSNET)) == {}
    opts = ["train.max_epoch", "1", "train.lr", "0.1", "loss.name", "triplet", "video.seq_len", "4"]
    fgdi = unread_keys(load_config(CONFIG, opts))
    assert list(fgdi) == ["video.seq_len", "train.lr", "train.max_epoch", "loss.name"]  # in torchreid's order
    assert "fgdi.stage1_epochs" in fgdi["train.max_epoch"] and "fgdi.image.lr" in fgdi["train.lr"]
    assert list(unread_keys(load_config(OSNET, opts))) == ["video.seq_len"]


def test_a_key_read_only_with_another_is_warned_about_without_it():
    norm = ["data.norm_mean", "[0.5, 0.5, 0.5]"]
    assert unread_keys(load_config(CONFIG, norm)) == {}
    (said,) = unread_keys(load_config(CONFIG, [*norm, "data.transforms", "['clip_fgdi']"])).values()
    assert said.startswith("it is read only with data.transforms without clip_fgdi")
    momentum = ["sgd.momentum", "0.5"]  # the osnet config trains with adam
    assert unread_keys(load_config(OSNET, momentum)) == {
        "sgd.momentum": "it is read only with train.optim sgd or rmsprop"
    }
    assert unread_keys(load_config(OSNET, [*momentum, "train.optim", "sgd"])) == {}
    assert list(unread_keys(load_config(CONFIG, momentum))) == ["sgd.momentum"]  # fgdi: Adam whatever train.optim


def test_the_warnings_follow_the_config_dump_in_the_runs_log_once(tiny_root, tmp_path):
    opts = ["data.save_dir", str(tmp_path), "data.targets", "['synth_d']", "train.staged_lr", "True"]
    opts += ["train.max_epoch", "3", "test.evaluate", "True", "test.allow_untrained", "True"]  # untrained: a quick run
    train(["--config-file", CONFIG, "--root", tiny_root, *opts])
    (log,) = tmp_path.glob("test.log-*")
    text = log.read_text()
    dump_end = text.index("\n\n", text.index("Show configuration")) + 2
    warnings = unread_warnings(load_config(CONFIG, opts))
    assert len(warnings) == 2 and text[dump_end:].startswith("\n".join(warnings) + "\n")
    assert all(text.count(line) == 1 for line in warnings)


def _cell(use) -> str:
    return {
        READ: "read",
        READ_WITH: f"read with {use.says}, else warned",
        WARN: f"warned: {use.says}",
        REFUSE: f"refused: {use.says}",
    }[use.action]


def key_table() -> str:
    """docs/training.md's table of torchreid's keys, as `TORCHREID_KEYS` says."""
    torchreid_name = {ours: theirs for theirs, ours in ALIASES.items()}
    rows = ["| key | fgdi models (three-stage engine) | torchreid models (softmax / triplet engine) |", "|---|---|---|"]
    for key, uses in TORCHREID_KEYS.items():
        name = f"`{key}`" + (f" (torchreid: `{torchreid_name[key]}`)" if key in torchreid_name else "")
        same = uses.baseline == uses.fgdi and uses.fgdi.action != READ
        rows.append(f"| {name} | {_cell(uses.fgdi)} | {'the same' if same else _cell(uses.baseline)} |")
    return "\n".join(rows) + "\n"


def test_the_docs_table_of_torchreids_keys_is_the_codes():
    text = TRAINING_MD.read_text()
    start = text.index("| key | fgdi models", text.index(TABLE_HEADING))
    end = text.index("\n\n", start) + 1
    assert text[start:end] == key_table(), f"docs/training.md's table is stale; replace it with:\n{key_table()}"


def test_no_shipped_config_or_model_and_protocol_pair_sets_a_key_its_run_warns_about_or_refuses():
    configs = Path(CONFIG).parents[1]
    protocols = sorted((configs / "protocols").rglob("*.yaml"))
    for model in sorted((configs / "models").glob("*.yaml")):
        for protocol in protocols:
            cfg = load_config([str(model), str(protocol)])
            # the protocols run CLIP-FGDI's guidance in the authors' direction, which a clip_reid run has not
            told = (
                {"fgdi.guide_direction"}
                if cfg.model.name == "clip_reid" and cfg.fgdi.guide_direction != "paper"
                else set()
            )
            assert set(unread_keys(cfg)) == told, (model, protocol)
    for config in sorted((configs / "synthetic").glob("*.yaml")):
        assert unread_keys(load_config(str(config))) == {}, config
