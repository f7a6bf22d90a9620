"""The commands as a user meets them: --help with every option explained and examples that parse,
usage instead of a run when nothing was asked for, refusals as one ``error:`` line (the traceback
only on request), the weights listing, one offline advice for one file, and the generator that
says it kept a domain and replaces one safely."""

import argparse
import logging
import runpy
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from torchreid_fgdi.cli import benchmark, export, pretrain, refusals, search, synthetic, train, weights
from torchreid_fgdi.cli.parsers import EXAMPLES_HEADING, HelpFormatter
from torchreid_fgdi.errors import ConfigError
from torchreid_fgdi.models import clip_weights, hub
from torchreid_fgdi.synthetic import render

REPO = Path(__file__).parents[1]
CONFIG = str(REPO / "configs" / "synthetic" / "osnet_ain_x0_25.yaml")
MODULES = {  # command -> its module in torchreid_fgdi.cli, whose `main` is the console script
    "torchreid-fgdi": train,
    "torchreid-fgdi-benchmark": benchmark,
    "torchreid-fgdi-search": search,
    "torchreid-fgdi-export": export,
    "torchreid-fgdi-weights": weights,
    "torchreid-fgdi-synthetic": synthetic,
    "torchreid-fgdi-pretrain": pretrain,
}
COMMANDS = {name: module.main for name, module in MODULES.items()}


def _help(command, monkeypatch, capsys) -> tuple[argparse.ArgumentParser, str]:
    """The parser `command` builds and the --help it prints."""
    built = []
    parse = argparse.ArgumentParser.parse_known_args

    def recording(self, *args, **kwargs):
        built.append(self)
        return parse(self, *args, **kwargs)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", recording)
    with pytest.raises(SystemExit) as done:
        command(["--help"])
    assert done.value.code == 0
    return built[0], capsys.readouterr().out


@pytest.mark.parametrize("name", COMMANDS)
def test_help_explains_every_option_shows_defaults_and_gives_examples_that_parse(name, monkeypatch, capsys):
    parser, text = _help(COMMANDS[name], monkeypatch, capsys)
    assert parser.prog == name and parser.formatter_class is HelpFormatter
    assert name not in parser.description  # the usage line says how to call it; the description says what it does
    formatter = HelpFormatter(name)
    for action in parser._actions:
        if action.help == argparse.SUPPRESS:  # fast-reid's flags, answered when used
            continue
        assert action.help, f"{name}: {action.option_strings or action.dest} has no help"
        shown = formatter._get_help_string(action)
        default = action.default
        nothing = default is None or default is False or default in ("", [], argparse.SUPPRESS)
        assert nothing or not action.option_strings or "default" in shown, f"{name}: {action.dest} hides its default"
    examples = text.split(f"\n{EXAMPLES_HEADING}\n", 1)[1].strip().splitlines()
    assert 2 <= len(examples) <= 3
    for line in examples:
        words = shlex.split(line, comments=True)
        assert words[0] == name
        parser.parse_intermixed_args(words[1:])  # a bad example exits 2 here
        for word in words:
            if word.endswith(".yaml"):
                assert (REPO / word).is_file(), f"{name} example names a missing {word}"


def test_defaults_read_as_typed_and_are_not_invented():
    parser = argparse.ArgumentParser(formatter_class=HelpFormatter)
    parser.add_argument("--domains", nargs="+", default=["a", "b"], help="domains")
    parser.add_argument("--rate", default="5%", help="rate")
    parser.add_argument("--seed", type=int, default=0, help="seed")
    parser.add_argument("--device", default=None, help="cpu or cuda")
    parser.add_argument("--flag", action="store_true", help="on or off")
    parser.add_argument("--cache", default="x", help="cache folder (default: ~/.cache)")
    text = " ".join(parser.format_help().split())
    assert "domains (default: a b)" in text and "rate (default: 5%)" in text and "seed (default: 0)" in text
    assert "cpu or cuda --flag" in text and "on or off --cache" in text  # nothing added after them
    assert text.count("default") == 4


@pytest.mark.subprocess
def test_no_arguments_print_the_usage_and_start_nothing(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "torchreid_fgdi"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2
    assert any(line.startswith("usage: torchreid-fgdi ") for line in done.stderr.splitlines())
    assert "torchreid-fgdi: error: nothing to run: give --config-file CFG" in done.stderr
    assert "Show configuration" not in done.stdout
    assert list(tmp_path.iterdir()) == []


def _refusals(tmp_path: Path) -> dict[str, tuple[list[str], int, str]]:
    """Every command's ``python -m`` spelling -> (words it refuses, exit status, what the error line names)."""
    missing, a_file = str(tmp_path / "missing.pth"), tmp_path / "a-file"
    a_file.write_text("")
    bad_key = (["--config-file", CONFIG, "train.max_epochs", "3"], 2, "unknown config key 'train.max_epochs'")
    return {
        "torchreid_fgdi": bad_key,
        "torchreid_fgdi.cli.train": bad_key,
        "torchreid_fgdi.cli.benchmark": (["--configs", CONFIG, "--seeds", "1"], 2, "--seeds 1: give at least two"),
        "torchreid_fgdi.cli.search": (
            ["--weights", missing, "--query", str(tmp_path / "q"), "--gallery", str(tmp_path)],
            1,
            "--query",
        ),
        "torchreid_fgdi.cli.export": (["--weights", missing, "--format", "torchscript"], 1, "missing.pth"),
        "torchreid_fgdi.cli.weights": (["--download", "bad"], 2, "no released weights named 'bad'"),
        "torchreid_fgdi.cli.synthetic": (["--root", str(a_file / "data")], 1, "a-file"),
        "torchreid_fgdi.cli.pretrain": (["--cache", str(a_file / "cache")], 1, "a-file"),
    }


def _dash_m(module: str, argv: list[str]) -> int:
    """What ``python -m module argv...`` does after its imports (runpy runs the module as ``__main__``):
    its exit status."""
    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings():
        patch.setattr(sys, "argv", [module, *argv])
        warnings.simplefilter("ignore", RuntimeWarning)  # the module was imported before here; a fresh -m is not
        with pytest.raises(SystemExit) as done:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
    return done.value.code


def test_python_dash_m_refuses_as_the_console_scripts_do(tmp_path, monkeypatch, capsys):
    """``python -m torchreid_fgdi`` and ``python -m torchreid_fgdi.cli.<command>`` (the README's other
    spelling) print the same one line as the console scripts, for every command."""
    monkeypatch.delenv(refusals.DEBUG_VARIABLE, raising=False)
    monkeypatch.chdir(tmp_path)
    refused = _refusals(tmp_path)
    assert {m.__name__ for m in MODULES.values()} <= set(refused)  # every command
    for module, (argv, status, message) in refused.items():
        assert _dash_m(module, argv) == status, (module, capsys.readouterr())
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and message in err, (module, err)
        assert err.rstrip().endswith(f"({refusals.DEBUG_VARIABLE}=1 shows the traceback)")
    assert list(tmp_path.iterdir()) == [tmp_path / "a-file"]  # nothing written by a refused command


@pytest.mark.subprocess
def test_a_command_module_refuses_in_a_process_of_its_own(tmp_path):
    """One of them for real: a fresh interpreter, as a user types it."""
    argv, status, message = _refusals(tmp_path)["torchreid_fgdi.cli.export"]
    done = subprocess.run(
        [sys.executable, "-m", "torchreid_fgdi.cli.export", *argv],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == status and "Traceback" not in done.stderr, done.stderr
    (line,) = done.stderr.strip().splitlines()[-1:]
    assert line.startswith("error: ") and message in line


@pytest.mark.parametrize(
    ("command", "argv", "message"),
    [
        (train.main, ["--config-file", CONFIG, "train.max_epochs", "3"], "unknown config key 'train.max_epochs'"),
        (benchmark.main, ["--configs", CONFIG, "--seeds", "1"], "--seeds 1: give at least two different seeds"),
    ],
)
def test_a_config_error_is_one_error_line_and_exit_2(command, argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(refusals.DEBUG_VARIABLE, raising=False)
    assert command(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {message}")
    assert err.rstrip().endswith(f"({refusals.DEBUG_VARIABLE}=1 shows the traceback)")
    assert "Traceback" not in err
    monkeypatch.setenv(refusals.DEBUG_VARIABLE, "1")
    with pytest.raises(ConfigError, match=message):  # uncaught: the interpreter prints its traceback
        command(argv)


@pytest.mark.parametrize("command", [search.main, export.main], ids=["search", "export"])
def test_an_out_that_is_a_file_or_unwritable_is_refused_before_any_work(command, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(refusals.DEBUG_VARIABLE, raising=False)
    a_file = tmp_path / "results.txt"
    a_file.write_text("kept")
    weights = str(tmp_path / "missing.pth")  # read only after the check: a refusal naming it means too late
    argv = ["--weights", weights, *(["--query", weights, "--gallery", str(tmp_path)] if command is search.main else [])]
    refused = {
        str(a_file): f"--out {a_file} is a file: pass a folder (it is made if missing)",
        str(a_file / "out"): f"--out {a_file / 'out'} is under {a_file}, which is a file: pass a folder",
        "/sys/fgdi-out": "--out /sys/fgdi-out cannot be written (/sys: ",  # no one may create files in sysfs
    }
    for out, message in refused.items():
        assert command([*argv, "--out", out]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert a_file.read_text() == "kept"


def test_an_index_that_cannot_be_written_or_is_not_an_index_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    """Before, a folder or an unwritable place failed after the gallery's extraction, and a checkpoint
    or an image given as --index was written over with the index."""
    monkeypatch.delenv(refusals.DEBUG_VARIABLE, raising=False)
    a_file, folder, checkpoint = tmp_path / "photo.jpg", tmp_path / "indexes", tmp_path / "stage3.pth"
    a_file.write_bytes(b"\xff\xd8\xff\xe0 a jpeg")
    folder.mkdir()
    torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 3}, checkpoint)
    kept = {path: path.read_bytes() for path in (a_file, checkpoint)}
    weights = str(tmp_path / "missing.pth")  # read only after the check: a refusal naming it means too late
    argv = ["--weights", weights, "--query", weights, "--gallery", str(tmp_path), "--out", str(tmp_path / "out")]
    foreign = "is not a gallery index ({}); a search would write its index over it: pass another --index path"
    refused = {
        str(folder): f"--index {folder} is a folder: pass a file path (e.g. {folder / 'index.pt'})",
        str(a_file / "i.pt"): f"--index {a_file / 'i.pt'} cannot be written: its folder is a file; pass a path",
        "/sys/fgdi.pt": "--index /sys/fgdi.pt cannot be written: its folder cannot be written (/sys: ",
        str(a_file): f"--index {a_file} " + foreign.format("not a file torch wrote"),
        str(checkpoint): f"--index {checkpoint} " + foreign.format("it holds a dict of state_dict, epoch"),
    }
    for index, message in refused.items():
        assert search.main([*argv, "--index", index]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert {path: path.read_bytes() for path in kept} == kept and not (tmp_path / "out").exists()


def test_missing_datasets_are_reported_once_without_a_traceback(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(refusals.DEBUG_VARIABLE, raising=False)
    argv = ["--config-file", CONFIG, "--root", str(tmp_path / "data"), "-s", "market1501", "-t", "market1501"]
    assert train.main([*argv, "data.save_dir", str(tmp_path / "log")]) == 1
    out, err = capsys.readouterr()
    assert "market1501  missing: " in out  # the dataset table, printed as it was checked
    lines = err.splitlines()
    assert lines[0].startswith("error: 1 dataset(s) not ready, nothing was started")
    assert lines[1].startswith("- market1501: expected under ")
    assert lines[-1] == f"({refusals.DEBUG_VARIABLE}=1 shows the traceback)"


def test_bugs_keep_their_traceback_and_missing_paths_do_not(capsys, monkeypatch):
    monkeypatch.delenv(refusals.DEBUG_VARIABLE, raising=False)

    def buggy(argv):
        return {}["no such key"]

    with pytest.raises(KeyError):
        refusals.run_command(buggy)

    def missing(argv):
        raise FileNotFoundError("gallery folder 'photos' does not exist")

    assert refusals.run_command(missing) == 1
    assert capsys.readouterr().err.startswith("error: gallery folder 'photos' does not exist (")


def test_another_rank_of_a_torchrun_job_prints_only_its_own_error_marked_with_its_rank(capsys, caplog, monkeypatch):
    """One process standing in for rank 1 (torchrun's variables, no process group): its lines,
    warnings and log records go nowhere, its refusal shows with its rank on every line."""
    monkeypatch.delenv(refusals.DEBUG_VARIABLE, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    shown = []

    def refused(argv):
        print("=> Start training")
        with warnings.catch_warnings(record=True) as caught:
            warnings.warn("a warning rank 0 shows", UserWarning, stacklevel=1)
        shown.extend(caught)
        logging.getLogger("torchreid_fgdi.test").warning("a record rank 0 shows")
        raise ConfigError("a refusal\nof two lines")

    assert refusals.run_command(refused) == 2
    out, err = capsys.readouterr()
    assert not shown and not caplog.records
    assert out == "" and err.splitlines() == [
        "[rank1]: error: a refusal",
        "[rank1]: of two lines",
        f"[rank1]: ({refusals.DEBUG_HINT})",
    ]

    def waited_for_a_lost_rank(argv):
        raise RuntimeError("[gloo/transport/tcp/pair.cc:561] Connection closed by peer [127.0.0.1]:11177")

    assert refusals.run_command(waited_for_a_lost_rank) == 1
    assert capsys.readouterr().err == ""  # rank 1 did not fail: the one that did says why
    monkeypatch.setenv("RANK", "0")
    assert refusals.run_command(waited_for_a_lost_rank) == 1
    assert capsys.readouterr().err == f"error: {refusals.LOST_PEER}\n"


def test_weights_download_of_an_unknown_name_lists_the_known_ones(capsys):
    assert weights.main(["--download", "bad"]) == 2  # a bad name, as a bad config key
    err = capsys.readouterr().err
    assert err.startswith("error: no released weights named 'bad'; known: ") and err.count("\n") == 1
    assert all(name in err for name in hub.REGISTRY)


def test_weights_listing_says_no_trained_clip_fgdi_weights_exist_until_one_is_registered(capsys, monkeypatch):
    assert weights.main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("No trained CLIP-FGDI weights are released yet")
    assert "CLIP backbones" in out and all(name in out for name in hub.REGISTRY)
    trained = hub.ReleasedWeights("https://example.org/fgdi.pth", "0" * 64, "fgdi.pth", None, "CLIP-FGDI", True)
    monkeypatch.setitem(hub.REGISTRY, "fgdi-market", trained)
    weights.main([])
    assert capsys.readouterr().out.startswith("trained CLIP-FGDI weights: fgdi-market;")


def test_offline_tag_and_registry_name_of_one_backbone_give_the_same_advice(tmp_path, monkeypatch):
    monkeypatch.setattr(hub, "host_reachable", lambda *args, **kwargs: False)
    monkeypatch.setattr(clip_weights, "host_reachable", lambda *args, **kwargs: False)
    entry = hub.REGISTRY["clip-rn50-openai"]
    advice = hub.by_hand(entry.url, str(tmp_path / entry.filename), entry.sha256)
    with pytest.raises(hub.WeightsUnavailableError) as by_name:
        hub.get_weights("clip-rn50-openai", str(tmp_path))
    with pytest.raises(hub.WeightsUnavailableError) as by_tag:
        clip_weights.resolve_weights("RN50", "openai", cache_dir=str(tmp_path))
    assert advice in str(by_name.value) and advice in str(by_tag.value)
    reads = "the tag 'openai' (as pretrained=True and torchreid's model.pretrained True mean) reads it from there"
    assert reads in str(by_tag.value)  # no other name needed: the default reads the file from there


def _images(domain: Path) -> list[str]:
    return sorted(str(p.relative_to(domain)) for p in domain.rglob("*.jpg"))


def test_the_generator_says_it_kept_a_domain_and_overwrite_swaps_in_a_new_one(tmp_path, capsys, monkeypatch):
    root, domain = tmp_path / "data", tmp_path / "data" / "synth_a"
    small = ["--root", str(root), "--domains", "synth_a", "--train-ids", "2", "--test-ids", "2"]
    assert synthetic.main(small) == 0
    first = _images(domain)
    capsys.readouterr()
    larger = [*small[:-4], "--train-ids", "5", "--test-ids", "3"]
    assert synthetic.main(larger) == 0
    assert capsys.readouterr().out == (
        f"=> {domain} exists: kept as it is, not regenerated with these sizes and seed (--overwrite replaces it)\n"
    )
    assert _images(domain) == first

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(render, "_write_split", crash)
    with pytest.raises(OSError, match="disk full"):
        synthetic.main([*larger, "--overwrite"])
    assert _images(domain) == first and [p.name for p in root.iterdir()] == ["synth_a"]  # the old one, whole
    monkeypatch.undo()
    assert synthetic.main([*larger, "--overwrite"]) == 0
    assert capsys.readouterr().out == f"wrote {domain}\n"
    assert len(_images(domain)) > len(first) and [p.name for p in root.iterdir()] == ["synth_a"]


def test_the_generator_refuses_sizes_it_cannot_draw(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        synthetic.main(["--root", str(tmp_path), "--max-cams-per-id", "1"])
    assert done.value.code == 2
    assert "--max-cams-per-id must be at least 2, got 1" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
