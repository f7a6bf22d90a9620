"""Models side by side (the README's main job) and configs that build on a base config."""

import json
from pathlib import Path

import pytest

from torchreid_fgdi.benchmark import main
from torchreid_fgdi.config import load_config
from torchreid_fgdi.errors import ConfigError

CONFIGS = Path(__file__).parents[1] / "configs" / "synthetic"
FGDI, ABLATION = str(CONFIGS / "fgdi_tiny.yaml"), str(CONFIGS / "fgdi_tiny_stage1_only.yaml")
SHORT = ["fgdi.stage1_epochs", "1", "fgdi.stage2a_epochs", "1", "fgdi.stage2b_epochs", "1", "fgdi.stage3_epochs", "1"]


def test_derived_config_keeps_its_base_and_overrides_what_it_says(tmp_path):
    base, derived = load_config(FGDI), load_config(ABLATION)
    assert derived.model.name == base.model.name == "fgdi_tiny"
    assert derived.fgdi.prompt.lr == base.fgdi.prompt.lr and derived.fgdi.image.lr == base.fgdi.image.lr
    assert derived.fgdi.stage1_epochs == 30 and derived.fgdi.stage3_epochs == 0
    assert derived.data.save_dir != base.data.save_dir
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"_BASE_: {FGDI}\nfgdi:\n  stage_3_epochs: 2\n")
    with pytest.raises(ConfigError, match=r"'fgdi.stage_3_epochs' in .*bad.yaml; did you mean fgdi.stage3_epochs"):
        load_config(str(bad))


def test_models_side_by_side_and_collected_again(tiny_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the configs' save_dirs are relative
    out = tmp_path / "bench"
    runs = main(["--configs", FGDI, ABLATION, "--root", tiny_root, "--out", str(out), *SHORT])
    assert list(runs) == ["fgdi_tiny", "fgdi_tiny_stage1_only"]
    table = (out / "benchmark.md").read_text()
    saved = json.loads((tmp_path / "log/synthetic/fgdi_tiny/results.json").read_text())
    row = next(line for line in table.splitlines() if line.startswith("| synth_d | unseen |"))
    assert row.split(" | ")[2] == f"{100 * saved['synth_d']['mAP']:.1f}"
    csv = (out / "benchmark.csv").read_text().splitlines()
    assert csv[0] == "model,target,domain,mAP,R1,R5,R10" and len(csv) == 1 + 2 * (4 + 1)
    checkpoint = tmp_path / "log/synthetic/fgdi_tiny/checkpoints/stage3.pth"
    written = checkpoint.stat().st_mtime_ns
    main(["--configs", FGDI, ABLATION, "--root", tiny_root, "--out", str(out), "--collect", *SHORT])
    assert (out / "benchmark.md").read_text() == table and checkpoint.stat().st_mtime_ns == written


def test_configs_on_different_data_are_refused(tmp_path):
    other = tmp_path / "one_source.yaml"
    other.write_text(f"_BASE_: {FGDI}\ndata:\n  sources: [synth_a]\n  save_dir: {tmp_path / 'other'}\n")
    with pytest.raises(ValueError, match="must train and test on the same data"):
        main(["--configs", FGDI, str(other), "--out", str(tmp_path), "--collect"])
