"""``_BASE_`` in a config file: one file or a list, each read relative to the file naming it, in
order, every later one overriding the earlier ones and the file itself overriding them all."""

import pytest

from torchreid_fgdi.config import load_config
from torchreid_fgdi.errors import ConfigError


def _write(path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def test_a_list_of_bases_is_read_in_order_each_overriding_the_one_before(tmp_path):
    _write(tmp_path / "common.yaml", "train:\n  max_epoch: 5\n  seed: 3\n")
    _write(tmp_path / "sizes.yaml", "data:\n  height: 128\n  width: 64\n  sources: [synth_a]\n")
    _write(tmp_path / "sub" / "long.yaml", "_BASE_: ../common.yaml\ntrain:\n  max_epoch: 7\ndata:\n  height: 96\n")
    top = _write(tmp_path / "top.yaml", "_BASE_: [sizes.yaml, sub/long.yaml]\ndata:\n  width: 48\n")
    cfg = load_config(top)
    assert cfg.data.sources == ["synth_a"]  # only sizes.yaml says it
    assert cfg.data.height == 96  # sub/long.yaml, listed later, overrides sizes.yaml
    assert cfg.data.width == 48  # the file itself overrides every base
    assert (cfg.train.max_epoch, cfg.train.seed) == (7, 3)  # a base's own base, relative to that base


def test_the_same_base_reached_twice_is_not_a_cycle(tmp_path):
    _write(tmp_path / "common.yaml", "train:\n  seed: 3\n")
    _write(tmp_path / "a.yaml", "_BASE_: common.yaml\ndata:\n  height: 96\n")
    _write(tmp_path / "b.yaml", "_BASE_: [common.yaml]\ndata:\n  width: 48\n")
    cfg = load_config(_write(tmp_path / "top.yaml", "_BASE_: [a.yaml, b.yaml]\n"))
    assert (cfg.train.seed, cfg.data.height, cfg.data.width) == (3, 96, 48)


@pytest.mark.parametrize(
    "bases,error",
    [
        ("[ok.yaml, top.yaml]", r"_BASE_ cycle: .*top.yaml -> .*top.yaml; a config cannot be its own base"),
        ("[ok.yaml, 5]", r"_BASE_ in .*top.yaml must be a file name or a list of file names, got \['ok.yaml', 5\]"),
    ],
)
def test_a_list_with_a_cycle_or_a_non_name_is_refused(tmp_path, bases, error):
    _write(tmp_path / "ok.yaml", "train:\n  seed: 3\n")
    top = _write(tmp_path / "top.yaml", f"_BASE_: {bases}\n")
    with pytest.raises(ConfigError, match=error):
        load_config(top)
