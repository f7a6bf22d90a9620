"""The captioned corpus, open_clip_train on it, and the checkpoint through fgdi's pretrained=<file> path."""

import csv
import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_trust import ONE
from torchreid_fgdi.cli.train import train
from torchreid_fgdi.models import build_fgdi
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
from torchreid_fgdi.synthetic.render import DOMAIN_STYLES, _identity
from torchreid_fgdi.utils.checkpoint import CheckpointError

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
        assert colour_name(ident["shirt"]) in text  # the shirt colour is always named
        assert ("shorts" in text) <= ident["shorts"]
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
    assert pretrain.resolve("openai") == "openai" and pretrain.resolve("") == ""


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A pretraining of the tiny settings: (cache root, checkpoint path)."""
    root = tmp_path_factory.mktemp("cache")
    dynamo = logging.getLogger("torch._dynamo")
    levels = logging.getLogger().level, dynamo.level
    path = pretrain.pretrained_checkpoint(TINY, str(root))
    assert (logging.getLogger().level, dynamo.level) == levels  # open_clip_train set every logger to INFO
    return root, path


@pytest.mark.slow
def test_open_clip_train_pretrains_a_checkpoint_fgdi_tiny_loads_through_pretrained(pretrained):
    tmp_path, path = pretrained
    probe = json.loads((tmp_path / "synthetic-clip" / pretrain.cache_key(TINY) / pretrain.PROBE).read_text())
    assert set(probe) == {"shirt", "pattern", "bottom", "accessory"}
    assert all(0 <= r["accuracy"] <= 1 and r["values"] >= 2 for r in probe.values())
    assert (
        pretrain.pretrained_checkpoint(TINY, str(tmp_path)) == path == pretrain.checkpoint_path(TINY, str(tmp_path))
    )  # cached: not trained again
    state = torch.load(path, weights_only=True)
    model = build_fgdi("fgdi_tiny", 5, pretrained=path)
    visual = model.image_encoder.visual
    torch.testing.assert_close(visual.conv1.weight, state["visual.conv1.weight"])
    random = build_fgdi("fgdi_tiny", 5, pretrained=False)
    assert not torch.equal(random.image_encoder.visual.conv1.weight, state["visual.conv1.weight"])


@pytest.mark.slow
def test_a_config_naming_the_synthetic_clip_trains_from_it(pretrained, tiny_root, tmp_path, monkeypatch):
    _, path = pretrained
    monkeypatch.setattr(pretrain, "pretrained_checkpoint", lambda: path)  # the tiny one stands in for the default
    train(["--config-file", CLIP_CONFIG, "--root", tiny_root, "data.save_dir", str(tmp_path), *ONE])
    trained = torch.load(tmp_path / "checkpoints" / "stage3.pth", weights_only=True)["state_dict"]
    clip = torch.load(path, weights_only=True)
    for key in ("positional_embedding", "text_projection", "transformer.resblocks.1.mlp.c_fc.weight"):
        torch.testing.assert_close(trained[f"text_encoder.{key}"], clip[key])  # the frozen text tower is the CLIP's


@pytest.mark.slow
def test_a_diverged_pretraining_is_not_cached(tmp_path):
    diverging = dataclasses.replace(TINY, lr=float("inf"))
    with pytest.raises(CheckpointError, match="non-finite"):
        pretrain.pretrained_checkpoint(diverging, str(tmp_path))
    assert not Path(pretrain.checkpoint_path(diverging, str(tmp_path))).exists()
