"""The captioned corpus, open_clip_train on it, and the checkpoint through fgdi's pretrained=<file> path."""

import contextlib
import csv
import dataclasses
import io
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchreid

from tests.conftest import killed_write
from tests.test_trust import ONE
from torchreid_fgdi.cli import pretrain as pretrain_command
from torchreid_fgdi.cli import run_pool
from torchreid_fgdi.cli.refusals import DEBUG_VARIABLE
from torchreid_fgdi.cli.train import train
from torchreid_fgdi.models import build_fgdi, clip_weights, create_clip
from torchreid_fgdi.models.variants import TINY_CLIP, check_variant_weights
from torchreid_fgdi.synthetic import pretrain
from torchreid_fgdi.synthetic.captions import (
    ATTRIBUTES,
    COLOURS,
    CorpusSize,
    attributes,
    caption,
    colour_name,
    write_corpus,
)
from torchreid_fgdi.synthetic.probe import above_majority, format_accuracy
from torchreid_fgdi.synthetic.render import DOMAIN_STYLES, _identity
from torchreid_fgdi.utils.checkpoint import CheckpointError, read_checkpoint, write_checkpoint

CLIP_CONFIG = str(Path(__file__).parents[1] / "configs" / "synthetic" / "fgdi_tiny_clip.yaml")
TINY = pretrain.PretrainSettings(
    corpus=CorpusSize(people=120, styles=4), heldout=CorpusSize(people=20, styles=2, images_per_person=1), epochs=1
)


@pytest.mark.parametrize(
    "rgb,name",
    [
        ((220, 30, 30), "red"),
        ((30, 60, 220), "blue"),
        ((40, 180, 60), "green"),
        ((20, 20, 20), "black"),
        ((240, 240, 240), "white"),
        ((128, 128, 128), "grey"),
        ((120, 70, 20), "brown"),
        ((230, 120, 200), "pink"),
    ],
)
def test_colours_get_their_everyday_names(rgb, name):
    assert colour_name(rgb) == name and name in COLOURS


def test_captions_name_what_is_drawn_in_varied_words():
    rng = np.random.default_rng(0)
    idents = [_identity(rng, DOMAIN_STYLES["synth_a"]) for _ in range(200)]
    captions = [caption(ident, "front", rng) for ident in idents]
    assert len(set(captions)) > 150  # varied templates and subsets, as alt-text varies
    for ident, text in zip(idents, captions):
        assert ("shorts" in text) <= ident["shorts"] and ("trousers" in text) <= (not ident["shorts"])
        assert not re.search(r"\b(pants|plaid|cap|solid|printed)\b|(?<!shoulder) bag", text)  # only the probe's words
    for attribute in ATTRIBUTES:  # each attribute the probe asks about is named often, in its words
        named = [attributes(i)[attribute] in t for i, t in zip(idents, captions) if attributes(i)[attribute] != "none"]
        assert 0.5 < np.mean(named) < 1, attribute  # a subset, as alt-text names
    assert set(attributes(idents[0])) == set(ATTRIBUTES)


def test_the_corpus_is_deterministic_and_labelled(tmp_path):
    first = write_corpus(str(tmp_path / "a"), CorpusSize(people=10, styles=3), seed=5)
    second = write_corpus(str(tmp_path / "b"), CorpusSize(people=10, styles=3), seed=5)
    rows_a, rows_b = (list(csv.DictReader(open(p))) for p in (first, second))
    assert len(rows_a) == 20 and [r["title"] for r in rows_a] == [r["title"] for r in rows_b]
    assert (tmp_path / "a" / "images" / "000003_1.jpg").read_bytes() == (
        tmp_path / "b" / "images" / "000003_1.jpg"
    ).read_bytes()
    assert all(r["shirt"] in COLOURS and r["bottom"] in ("shorts", "trousers") for r in rows_a)


def test_the_cache_key_follows_every_setting():
    assert pretrain.cache_key(TINY) == pretrain.cache_key(pretrain.PretrainSettings(**vars(TINY)))
    assert pretrain.cache_key(TINY) != pretrain.cache_key(pretrain.PretrainSettings(**{**vars(TINY), "lr": 2e-3}))


def test_torchreids_build_model_reads_the_tiny_clips_name_as_the_command_does(tmp_path, monkeypatch):
    """`pretrained="synthetic-captions"` means the cached tiny CLIP on every path that builds a model
    (the README's recipe, torchreid's `build_model`), not only in `torchreid-fgdi`."""
    assert clip_weights._MADE_WEIGHTS[pretrain.TAG] is pretrain.pretrained_checkpoint  # registered on import
    # the check before any dataset names the shipped file, the default settings' (made by no run)
    assert check_variant_weights("fgdi_tiny", pretrain.TAG) == pretrain.PACKAGED
    monkeypatch.setitem(clip_weights._READY_WEIGHTS, pretrain.TAG, lambda: None)  # as when it is not there yet
    source, _ = create_clip(TINY_CLIP)
    torch.save(source.state_dict(), tmp_path / "open_clip_tiny.pt")
    made = []
    monkeypatch.setitem(clip_weights._MADE_WEIGHTS, pretrain.TAG, lambda: made.append(1) or str(source_file))
    source_file = tmp_path / "open_clip_tiny.pt"
    # the check before any dataset is read says so, and makes nothing (under torchrun, rank 0 makes it later)
    assert check_variant_weights("fgdi_tiny", pretrain.TAG) == "'synthetic-captions', made on first use" and not made
    model = torchreid.models.build_model("fgdi_tiny", 4, num_domains=2, pretrained=pretrain.TAG)
    assert made == [1]
    assert torch.equal(model.text_encoder.text_projection, source.text_projection)


@dataclasses.dataclass(frozen=True)
class _TinyCorpus(CorpusSize):
    styles: int = TINY.corpus.styles


@dataclasses.dataclass(frozen=True)
class _TinySettings(pretrain.PretrainSettings):
    """`TINY`, as the command makes it from ``--people 120 --epochs 1`` with these classes in place."""

    heldout: CorpusSize = TINY.heldout


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """``torchreid-fgdi-pretrain`` of the tiny settings: (cache root, checkpoint path, its console output)."""
    root = tmp_path_factory.mktemp("cache")
    dynamo = logging.getLogger("torch._dynamo")
    levels = logging.getLogger().level, dynamo.level
    argv = ["--cache", str(root), "--people", str(TINY.corpus.people), "--epochs", str(TINY.epochs)]
    console = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(console):
        patch.setattr(pretrain_command, "CorpusSize", _TinyCorpus)
        patch.setattr(pretrain, "PretrainSettings", _TinySettings)
        patch.delenv("TORCHREID_FGDI_PROGRESS", raising=False)  # not a terminal: a line per epoch
        with contextlib.redirect_stderr(console):
            path = pretrain_command.pretrain(argv)
    assert path == pretrain.checkpoint_path(TINY, str(root))
    assert (logging.getLogger().level, dynamo.level) == levels  # open_clip_train set every logger to INFO
    return root, path, console.getvalue()


@pytest.mark.slow
def test_the_pretrain_console_shows_progress_and_probe_and_keeps_open_clips_log_beside_the_weights(pretrained):
    _, path, console = pretrained
    assert "| INFO |" not in console and "initialized randomly" not in console and "Train Epoch" not in console
    log = Path(path).parent / pretrain.LOG
    lines = console.splitlines()
    assert re.fullmatch(r"=> tiny CLIP epoch 1/1: loss \d+\.\d{4}, eta 00:00", lines[1])  # after "=> Pretraining ..."
    assert lines[2:] == [
        f"=> open_clip's log of the pretraining: {log}",
        *format_accuracy(pretrain.recorded_probe(path)).splitlines(),
        f"=> {path}",
    ]
    text = log.read_text()  # open_clip's whole log: its settings, steps and the probe model's random start
    assert f"| INFO |   batch_size: {TINY.batch_size}" in text and "| INFO | Train Epoch: 0 [" in text
    assert text.count("Model initialized randomly.") == 1  # the trained model's start
    assert pretrain.is_cached(TINY, str(Path(path).parents[2]))  # the log beside it changes nothing in the record


def test_a_benchmarks_quiet_pretraining_says_where_its_log_is_and_shows_its_probe(tmp_path, capsys):
    probe = {"shirt": {"values": 9, "accuracy": 0.5, "majority": 0.24}}
    path = pretrain.keep(str(tmp_path), {"weight": torch.zeros(1)}, probe, TINY)
    run_pool._report(run_pool.CLIP, path, None, 1, 1, {})
    assert capsys.readouterr().out == (
        f"=> pretrained CLIP ready: {path} (open_clip's log of the pretraining: {tmp_path / pretrain.LOG})\n"
        f"{format_accuracy(probe)}\n"
    )


def test_the_progress_bar_shows_the_epochs_loss_and_eta(monkeypatch):
    monkeypatch.setenv("TORCHREID_FGDI_PROGRESS", "1")
    shown = io.StringIO()
    with contextlib.redirect_stderr(shown):
        bar = pretrain._Progress(epochs=4)
    step = "Train Epoch: 1 [ 256/512 (50%)] Data (t): 0.3 LR: 0.0001 Contrastive_loss: 5.0 (5.1) Loss: 5.0 (5.1234)"
    bar.handle(logging.LogRecord("root", logging.INFO, __file__, 1, step, None, None))
    bar.close()
    assert re.search(r"tiny CLIP:  38%\|.*\| epoch 1\.5/4 \[00:00<00:0\d, loss 5\.1234\]", shown.getvalue())


@pytest.mark.slow
def test_open_clip_train_pretrains_a_checkpoint_fgdi_tiny_loads_through_pretrained(pretrained):
    tmp_path, path, _ = pretrained
    assert pretrain.is_cached(TINY, str(tmp_path))  # the weights on disk are those its record describes
    probe = pretrain.recorded_probe(path)
    assert set(probe) == {"shirt", "pattern", "bottom", "accessory"}
    assert all(0 <= r["accuracy"] <= 1 and r["values"] >= 2 for r in probe.values())
    assert (
        pretrain.pretrained_checkpoint(TINY, str(tmp_path)) == path == pretrain.checkpoint_path(TINY, str(tmp_path))
    )  # cached: not trained again
    state = torch.load(path, weights_only=True)
    model = build_fgdi("fgdi_tiny", 5, pretrained=path)
    visual = model.image_encoder.visual
    torch.testing.assert_close(visual.conv1.weight, state["visual.conv1.weight"].float())  # kept in fp16
    random = build_fgdi("fgdi_tiny", 5, pretrained=False)
    assert not torch.equal(random.image_encoder.visual.conv1.weight, state["visual.conv1.weight"])


@pytest.mark.slow
def test_a_config_naming_the_synthetic_clip_trains_from_it(pretrained, tiny_root, tmp_path, monkeypatch):
    _, path, _ = pretrained
    monkeypatch.setitem(
        clip_weights._MADE_WEIGHTS, pretrain.TAG, lambda: path
    )  # the tiny one stands in for the default
    train(["--config-file", CLIP_CONFIG, "--root", tiny_root, "data.save_dir", str(tmp_path), *ONE])
    trained = torch.load(tmp_path / "checkpoints" / "stage3.pth", weights_only=True)["state_dict"]
    clip = torch.load(path, weights_only=True)
    for key in ("positional_embedding", "text_projection", "transformer.resblocks.1.mlp.c_fc.weight"):
        # the frozen text tower is the CLIP's (kept in fp16)
        torch.testing.assert_close(trained[f"text_encoder.{key}"], clip[key].float())


@pytest.mark.slow
def test_a_diverged_pretraining_is_not_cached(tmp_path):
    diverging = dataclasses.replace(TINY, lr=float("inf"))
    with pytest.raises(CheckpointError, match="non-finite"):
        pretrain.pretrained_checkpoint(diverging, str(tmp_path))
    path = Path(pretrain.checkpoint_path(diverging, str(tmp_path)))
    assert not path.exists() and "| INFO | Train Epoch: 0 [" in (path.parent / pretrain.LOG).read_text()


# ---- the cache is checked against what was written --------------------------------------
def _stand_in(monkeypatch) -> list[str]:
    """Replaces open_clip_train's minutes by keeping fresh random weights of the tiny CLIP's shapes, with
    a probe whose accuracy counts the pretrainings (10%, 20%, ...); the list of their `replacing`."""
    made = []

    def pretraining(folder: str, settings: pretrain.PretrainSettings, replacing: str = "") -> dict:
        made.append(replacing)
        probe = {"shirt": {"values": 9, "accuracy": len(made) / 10, "majority": 0.24}}
        print(format_accuracy(probe))
        pretrain.keep(folder, create_clip(TINY_CLIP)[0].state_dict(), probe, settings)
        return probe

    monkeypatch.setattr(pretrain, "pretrain", pretraining)
    return made


def _random_weights(path: Path) -> None:
    with torch.random.fork_rng():  # other draws than the stand-in's (a pretraining leaves the random state as it was)
        torch.manual_seed(99)
        write_checkpoint(create_clip(TINY_CLIP)[0].state_dict(), str(path))  # the same shapes and size: it would load


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-1000])


def _grown(path: Path) -> None:
    path.write_bytes(path.read_bytes() + bytes(1000))


def _from_before_records(path: Path) -> None:
    (path.parent / pretrain.RECORD).unlink()


def _record_without_probe(path: Path) -> None:
    record = path.parent / pretrain.RECORD
    record.write_text(json.dumps({**json.loads(record.read_text()), "zero_shot": {"shirt": "95%"}}))


@pytest.mark.parametrize(
    "damage,reason",
    [
        (
            _random_weights,
            r"its sha256 differs from the one recorded when it was written \(replaced or changed since\)",
        ),
        (_empty, r"it has 0 bytes where \d+ were written \(emptied since\)"),
        (_truncated, r"it has \d+ bytes where \d+ were written \(truncated since\)"),
        (_grown, r"it has \d+ bytes where \d+ were written \(replaced or written to since\)"),
        (_from_before_records, r"no open_clip_tiny.json beside it records what was written"),
        (_record_without_probe, r"no open_clip_tiny.json beside it records what was written .*edited\)"),
    ],
    ids=["random weights", "empty", "truncated", "grown", "from before records", "record without a probe"],
)
def test_a_cached_clip_not_as_its_pretraining_wrote_it_is_made_again_saying_why(
    tmp_path, monkeypatch, capsys, damage, reason
):
    made = _stand_in(monkeypatch)
    assert pretrain.cache_problem(TINY, str(tmp_path)) == "it is not cached yet"
    path = pretrain.pretrained_checkpoint(TINY, str(tmp_path))
    assert pretrain.pretrained_checkpoint(TINY, str(tmp_path)) == path and made == [""]  # cached: used as it is
    damage(Path(path))
    # what a benchmark, whose runs are quiet, says as it starts pretraining
    assert re.fullmatch(
        f"the cached {re.escape(path)} cannot be trusted: {reason}.*", pretrain.cache_problem(TINY, str(tmp_path))
    )
    capsys.readouterr()
    assert pretrain.pretrained_checkpoint(TINY, str(tmp_path)) == path
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("=> ")]
    assert re.fullmatch(
        f"=> Pretraining the tiny CLIP again: the cached {re.escape(path)} cannot be trusted: {reason}.*", line
    )
    assert len(made) == 2 and re.match(reason, made[1]) and pretrain.is_cached(TINY, str(tmp_path))


def test_the_pretrain_command_shows_the_probe_of_the_weights_on_disk_or_refuses_in_one_line(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.delenv(DEBUG_VARIABLE, raising=False)
    argv = ["--cache", str(tmp_path), "--epochs", "1"]
    real = pretrain.pretrain
    made = _stand_in(monkeypatch)
    path = Path(pretrain_command.pretrain(argv))
    assert pretrain_command.pretrain(argv) == str(path) and len(made) == 1
    assert "| shirt | 9 | 10.0% | 24.0% |" in capsys.readouterr().out  # cached: the probe recorded with it
    _random_weights(path)
    pretrain_command.pretrain(argv)
    out = capsys.readouterr().out
    assert len(made) == 2 and "| 20.0% |" in out and "| 10.0% |" not in out  # never the old weights' probe

    monkeypatch.setattr(pretrain, "pretrain", real)
    monkeypatch.setattr(pretrain, "TRAINER_MODULES", ("no_such_trainer_module",))  # the extra is not installed
    _empty(path)
    assert pretrain_command.main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: pretraining the synthetic benchmark's tiny CLIP")
    assert f"again, as the cached {path} cannot be trusted (it has 0 bytes where " in err
    assert "needs no_such_trainer_module, which is not installed: it comes with the pretrain extra" in err


def test_a_killed_pretrainings_temporary_file_goes_and_a_running_writers_stays(tmp_path, monkeypatch, capsys):
    _stand_in(monkeypatch)
    path = Path(pretrain.pretrained_checkpoint(TINY, str(tmp_path)))
    killed = killed_write(path)
    work = path.parent.with_name(path.parent.name + ".work")  # a pretraining killed while it trained left it
    (work / "corpus" / "images").mkdir(parents=True)
    (work / "corpus" / "images" / "000001_1.jpg").write_bytes(b"a drawn person")
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as writer:
        running = path.parent / f"{path.name}.tmp{writer.pid}"
        running.write_bytes(b"being written")
        capsys.readouterr()
        try:
            pretrain.pretrained_checkpoint(TINY, str(tmp_path))
        finally:
            writer.kill()
    assert not killed.exists() and running.exists() and not work.exists()
    out = capsys.readouterr().out
    assert f"=> Removed 1 temporary file(s) left by a killed write: {killed}\n" in out
    assert f"=> Removed {work}, left by a killed pretraining\n" in out


def test_a_model_whose_clip_is_made_on_first_use_draws_afterwards_as_with_the_clip_cached(tmp_path, monkeypatch):
    """open_clip_train seeds torch's generator: the run that pretrained would otherwise draw other
    batches, augmentations and dropout than the same run once the CLIP is cached."""
    made = _stand_in(monkeypatch)
    settings = pretrain.PretrainSettings(epochs=1)
    monkeypatch.setitem(
        clip_weights._MADE_WEIGHTS, pretrain.TAG, lambda: pretrain.pretrained_checkpoint(settings, str(tmp_path))
    )
    draws = []
    for _ in range(2):  # made, then cached
        torch.manual_seed(1)
        torchreid.models.build_model("fgdi_tiny", 4, num_domains=2, pretrained=pretrain.TAG)
        draws.append(torch.rand(4))
    assert len(made) == 1
    assert torch.equal(draws[0], draws[1])


def test_the_probe_table_says_per_attribute_whether_it_beats_the_majority_value():
    probe = {
        "shirt": {"values": 9, "accuracy": 0.5, "majority": 0.24},
        "bottom": {"values": 2, "accuracy": 0.7, "majority": 0.77},
    }
    assert format_accuracy(probe).splitlines()[2:] == [
        "| shirt | 9 | 50.0% | 24.0% | yes |",
        "| bottom | 2 | 70.0% | 77.0% | no |",
    ]


# ---- the weights shipped in the package -------------------------------------------------
def test_the_packaged_tiny_clip_is_as_recorded_and_probes_as_recorded(tmp_path):
    """The shipped file is the default settings' checkpoint, unchanged since its record was written,
    and its probe, measured again on the held-out people, is the recorded one. Shirt colour beats
    the majority value, nothing else yet (docs/synthetic.md)."""
    settings = pretrain.PretrainSettings()
    assert pretrain.packaged(settings) == (pretrain.PACKAGED, "")  # made by these settings, as recorded
    assert pretrain.checkpoint_path(settings) == pretrain.PACKAGED  # used instead of pretraining
    assert Path(pretrain.PACKAGED).stat().st_size < 8_000_000  # fp16
    probe = pretrain.measure_probe(
        read_checkpoint(pretrain.PACKAGED), pretrain.heldout_corpus(str(tmp_path / "heldout"), settings)
    )
    assert probe == pretrain.recorded_probe(pretrain.PACKAGED)
    assert set(probe) == set(ATTRIBUTES)
    assert {a for a, r in probe.items() if above_majority(r)} == {"shirt"}


def test_packaged_weights_stand_in_only_for_the_settings_that_made_them_and_only_as_recorded(
    tmp_path, monkeypatch, capsys
):
    made = _stand_in(monkeypatch)
    settings = pretrain.PretrainSettings(epochs=1)
    shipped = pretrain.keep(str(tmp_path / "weights"), create_clip(TINY_CLIP)[0].state_dict(), {}, settings)
    monkeypatch.setattr(pretrain, "PACKAGED", shipped)
    monkeypatch.setenv("TORCHREID_FGDI_CACHE", str(tmp_path / "cache"))
    assert pretrain.pretrained_checkpoint(settings) == shipped and pretrain.is_cached(settings) and not made
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights"]  # nothing written beside the package's files
    other = pretrain.PretrainSettings(epochs=2)
    assert pretrain.checkpoint_path(other).startswith(str(tmp_path / "cache"))  # other settings: pretrained
    mine = pretrain.checkpoint_path(settings, str(tmp_path / "mine"))  # a folder asked for: pretrained there
    assert pretrain.pretrained_checkpoint(settings, str(tmp_path / "mine")) == mine and made == [""]
    _truncated(Path(shipped))
    capsys.readouterr()
    path = pretrain.pretrained_checkpoint(settings)
    assert path.startswith(str(tmp_path / "cache")) and made == ["", ""]
    assert re.fullmatch(
        f"=> Pretraining the tiny CLIP: the packaged {re.escape(shipped)} cannot be trusted: "
        r"it has \d+ bytes where \d+ were written \(truncated since\)",
        capsys.readouterr().out.splitlines()[0],
    )
