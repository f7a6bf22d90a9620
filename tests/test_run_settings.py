"""A config is read once into `RunSettings`: typed, frozen, and the recorded dump keeps its layout."""

import dataclasses
import os.path as osp

import pytest

from torchreid_fgdi.config import RunSettings, get_default_config, load_config, load_config_text
from torchreid_fgdi.config.settings import DATA, LOSS, OPTIMIZER, RUN, SCHEDULER, TEST
from torchreid_fgdi.engine import settings as engine

# Checkpoints and run folders record cfg.dump(): its sections keep this order.
SECTIONS = [
    "model", "data", "video", "sampler", "cuhk03", "market1501", "train", "sgd", "rmsprop", "adam", "loss",
    "test", "use_gpu", "fgdi",
]  # fmt: skip


def test_the_default_config_keeps_its_sections_in_order():
    cfg = get_default_config()
    assert list(cfg) == SECTIONS
    assert list(cfg.fgdi)[-2:] == ["image", "prompt"]


def test_a_config_is_read_once_into_typed_frozen_settings():
    opts = ["test.plot_queries", "7", "fgdi.image.lr", "0.01", "loss.name", "triplet", "train.lr", "0.1"]
    cfg = load_config([], [*opts, "test.evaluate", "True", "test.allow_untrained", "True"])
    settings = RunSettings.from_config(cfg)
    assert settings.test == engine.TestSettings(plot_queries=7, rerank_memory_gib=cfg.test.rerank_memory_gib)
    assert settings.loss == engine.LossSettings(name="triplet")
    assert settings.fgdi.image.lr == 0.01 and settings.optimizer["lr"] == 0.1
    assert settings.run["save_dir"] == osp.join(cfg.data.save_dir, "evaluation") and settings.run["test_only"]
    assert load_config_text(settings.config_text).dump() == cfg.dump()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.test = engine.TestSettings()
    with pytest.raises(TypeError):
        settings.data["root"] = "elsewhere"
    settings.data["sources"].append("synth_d")  # a copy: the config keeps its own list
    assert cfg.data.sources == ["synth_a", "synth_b", "synth_c"]


def test_every_setting_names_a_key_of_the_config():
    keys = set(_flat(get_default_config()))
    for table in (DATA, OPTIMIZER, SCHEDULER, RUN, TEST, LOSS):
        assert set(table.values()) <= keys
    assert set(TEST) == {f.name for f in dataclasses.fields(engine.TestSettings)}
    assert set(LOSS) == {f.name for f in dataclasses.fields(engine.LossSettings)}


def test_model_arguments_and_class_rows_follow_the_model():
    fgdi = RunSettings.from_config(load_config([], ["model.name", "fgdi_tiny", "fgdi.num_classes", "50"]))
    assert fgdi.model_kwargs(3)["num_domains"] == 3 and fgdi.num_classes(40) == 50
    osnet = RunSettings.from_config(load_config([], ["fgdi.num_classes", "50"]))
    assert "num_domains" not in osnet.model_kwargs(3) and osnet.num_classes(40) == 40


def _flat(node, prefix=""):
    for name, value in node.items():
        yield from _flat(value, f"{prefix}{name}.") if isinstance(value, dict) else [prefix + name]
