"""The configs installed with the package, read by name from any folder (``--config-file
synthetic/fgdi_tiny``); a file at the path given always wins, and a name that is neither says so."""

from pathlib import Path

import pytest

import torchreid_fgdi
from torchreid_fgdi.cli import benchmark, train
from torchreid_fgdi.cli.refusals import DEBUG_VARIABLE
from torchreid_fgdi.config import load_config
from torchreid_fgdi.config.loading import PACKAGED_CONFIGS, packaged_config_names
from torchreid_fgdi.errors import ConfigError

PACKAGED = Path(torchreid_fgdi.__file__).parent / "configs"
TINY = PACKAGED / "synthetic" / "fgdi_tiny.yaml"


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """A working folder without configs/, as after a ``pip install``; no traceback on a refusal."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(DEBUG_VARIABLE, raising=False)
    return tmp_path


@pytest.mark.parametrize("name", ["synthetic/fgdi_tiny", "synthetic/fgdi_tiny.yaml", f"configs/synthetic/{TINY.name}"])
def test_an_installed_config_is_read_by_name_from_another_folder_saying_which_file(elsewhere, capsys, name):
    assert load_config(name).dump() == load_config(str(TINY)).dump()
    assert f"=> Config {name}: the one installed with the package, {TINY}\n" in capsys.readouterr().out


def test_a_file_at_the_path_wins_and_its_base_may_name_an_installed_config(elsewhere, capsys):
    mine = elsewhere / "configs" / "synthetic" / "fgdi_tiny.yaml"
    mine.parent.mkdir(parents=True)
    mine.write_text("_BASE_: synthetic/fgdi_tiny\ntrain:\n  seed: 7\n")  # no such file beside it: the installed one
    cfg = load_config("configs/synthetic/fgdi_tiny.yaml")
    assert cfg.train.seed == 7 and cfg.fgdi.image.lr == load_config(str(TINY)).fgdi.image.lr
    assert "=> Config" not in capsys.readouterr().out


def test_the_training_log_names_the_installed_file(elsewhere):
    save_dir = elsewhere / "run"
    argv = ["--config-file", "synthetic/fgdi_tiny", "data.save_dir", str(save_dir), "test.evaluate", "True"]
    assert train.main([*argv, "model.load_weights", str(elsewhere / "missing.pth")]) == 1  # stops once the log is open
    (log,) = save_dir.glob("test.log-*")
    assert f"=> Config synthetic/fgdi_tiny: the one installed with the package, {TINY}\n" in log.read_text()


def test_a_wrong_name_is_one_error_line_with_the_closest_installed_names(elsewhere, capsys):
    assert train.main(["--config-file", "synthetic/fgdi_tini", "train.seed", "3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        f"error: config file synthetic/fgdi_tini does not exist in {elsewhere}; the configs installed with the "
        "package are read by name, e.g. synthetic/fgdi_tiny (closest: synthetic/fgdi_tiny, "
    )
    assert "torchreid-fgdi --list-configs lists them)" in err
    assert benchmark.main(["--configs", "fgdi_tiny_clip", "synthetic/osnet_ain_x0_25"]) == 2
    assert "error: config file fgdi_tiny_clip does not exist in" in capsys.readouterr().err
    (elsewhere / "mine.yaml").write_text("_BASE_: fgdi_tiny.yaml\n")
    with pytest.raises(ConfigError, match="_BASE_ fgdi_tiny.yaml of mine.yaml: fgdi_tiny.yaml does not exist; .*"):
        load_config("mine.yaml")


def test_the_benchmark_takes_names_and_its_runs_read_the_installed_files(elsewhere, capsys):
    assert benchmark.main(["--configs", "synthetic/fgdi_tiny", "synthetic/osnet_ain_x0_25", "--collect"]) == 1
    out, err = capsys.readouterr()
    assert f"=> Config synthetic/osnet_ain_x0_25: the one installed with the package, {PACKAGED}/" in out
    assert "error: --collect: log/synthetic/fgdi_tiny/results.json does not exist" in err


def test_list_configs_names_every_installed_config(capsys):
    with pytest.raises(SystemExit) as done:
        train.command_line(["--list-configs"])
    names = capsys.readouterr().out.split()
    assert done.value.code == 0 and names == packaged_config_names()
    assert {p.relative_to(PACKAGED).with_suffix("").as_posix() for p in PACKAGED.rglob("*.yaml")} == set(names)
    assert Path(PACKAGED_CONFIGS).resolve() == PACKAGED.resolve()
