"""CLIP-ReID as a built-in comparison: its two stages as a table, registered as ``clip_reid*`` models."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import torchreid

from tests.test_fgdi_engine import IMAGE_SIDE, _changed, _load
from torchreid_fgdi.cli.train import build_model, train
from torchreid_fgdi.config import RunSettings, load_config, unread_warnings
from torchreid_fgdi.data import DomainImageDataManager
from torchreid_fgdi.engine import ImageFGDIEngine
from torchreid_fgdi.engine.settings import FGDISettings
from torchreid_fgdi.engine.stages import (
    ALL_STAGE_NAMES,
    CLIP_REID_STAGES,
    FGDI_STAGES,
    PROMPT,
    Stage,
    build_optimizers,
    with_epochs,
)
from torchreid_fgdi.errors import ConfigError, RunFolderError
from torchreid_fgdi.models import FGDI, build_fgdi, load_fgdi_checkpoint
from torchreid_fgdi.tools.features import FeatureExtractor
from torchreid_fgdi.utils.checkpoint import CheckpointError

CONFIGS = Path(__file__).parents[1] / "configs"
CONFIG = str(CONFIGS / "synthetic" / "clip_reid_tiny_clip.yaml")
# A random tiny CLIP (no pretraining in a test) and a run of a few seconds.
TINY = ["fgdi.clip_weights", "", "fgdi.prompt_epochs", "2", "fgdi.image_epochs", "2", "fgdi.checkpoint_every", "1"]
TINY += ["fgdi.prompt.batch_size", "32", "train.batch_size", "24", "train.print_freq", "1000"]


@pytest.fixture(scope="module")
def run(tiny_root, tmp_path_factory):
    """One short clip_reid_tiny run through the command, from its shipped config: its folder and results."""
    save_dir = tmp_path_factory.mktemp("clip-reid-run")
    results = train(["--config-file", CONFIG, "--root", tiny_root, "data.save_dir", str(save_dir), *TINY])
    return save_dir, results


def test_clip_reid_trains_its_two_stages_through_the_command_and_reports_every_domain(run):
    save_dir, results = run
    assert list(results) == ["synth_a", "synth_b", "synth_c", "synth_d"]
    assert "| synth_d | unseen |" in (save_dir / "results.md").read_text()
    assert json.loads((save_dir / "results.json").read_text())["synth_d"]["mAP"] == pytest.approx(
        results["synth_d"]["mAP"]
    )
    assert sorted(p.name for p in (save_dir / "checkpoints").iterdir()) == ["image.pth", "latest.pth", "prompt.pth"]
    log = next(save_dir.glob("train.log-*")).read_text()
    assert "=> Warning" not in log  # its shipped config sets no key its run does not read


def test_the_prompt_stage_trains_only_the_identity_prompts_and_the_image_stage_only_the_image_side(run):
    save_dir, _ = run
    checkpoints = save_dir / "checkpoints"
    prompt, image = _load(checkpoints / "prompt.pth"), _load(checkpoints / "image.pth")
    keys = list(prompt)
    assert _changed(prompt, image) == {k for k in keys if k.startswith(IMAGE_SIDE)} - {
        "bottleneck.bias",
        "bottleneck_proj.bias",
    }
    domain_side = [k for k in keys if k.startswith(("promptlearner.dmctx", "dc.", "dcgrl."))]
    assert domain_side and not _changed({k: prompt[k] for k in domain_side}, image)
    rows = [json.loads(line) for line in (save_dir / "metrics.jsonl").read_text().splitlines()]
    prompt_rows = [r for r in rows if r["group"] == "prompt"]
    image_rows = [r for r in rows if r["group"] == "image"]
    assert len(prompt_rows) == len(image_rows) == 2
    assert all({"i2t", "t2i"} <= set(r) and not {"domain", "domain_acc"} & set(r) for r in prompt_rows)
    assert all({"id", "triplet", "i2t"} <= set(r) and "guide" not in r for r in image_rows)


def _engine(tiny_root, *opts):
    """A clip_reid_tiny engine as the command builds it (its table chosen by the model's variant)."""
    cfg = load_config(CONFIG, ["data.root", tiny_root, *TINY, *opts])
    settings = RunSettings.from_config(cfg)
    torchreid.utils.set_random_seed(settings.seed)
    datamanager = DomainImageDataManager(**settings.data)
    model = build_model(settings, datamanager)
    return ImageFGDIEngine(datamanager, model, settings.fgdi, settings.test)


def test_the_model_chooses_the_table_and_each_step_computes_clip_reids_losses(tiny_root):
    engine = _engine(tiny_root)
    assert [s.name for s in engine.stages] == ["prompt", "image"] and set(engine.optimizers) == {"prompt", "image"}
    assert [(s.name, s.epochs) for s in engine.stages] == [("prompt", 2), ("image", 2)]
    prompt = engine.optimizers["prompt"].param_groups
    assert len(prompt) == 1 and prompt[0]["params"] == [engine.model.promptlearner.clsctx]
    engine.enter("prompt")
    before = {k: v.clone() for k, v in engine.model.state_dict().items()}
    summary = engine.train_prompts("prompt")
    assert summary["loss"] == pytest.approx(summary["i2t"] + summary["t2i"]) and "domain" not in summary
    assert _changed(before, engine.model.state_dict()) == {"promptlearner.clsctx"}  # no domain part, no tower
    engine.enter("image")
    engine.model.train()
    step = engine.forward_backward(next(iter(engine.train_loader)))
    assert set(step) == {"loss", "id", "triplet", "i2t", "acc"}
    assert step["loss"] == pytest.approx(0.25 * step["id"] + step["triplet"] + step["i2t"], rel=1e-5)


def test_build_model_registers_every_backbone_for_both_methods():
    model = torchreid.models.build_model("clip_reid_tiny", 5, num_domains=2, pretrained=False)
    assert isinstance(model, FGDI) and model.variant == "clip_reid_tiny" and model.record["variant"] == "clip_reid_tiny"
    names = set(torchreid.reid.models.__dict__["__model_factory"])
    for suffix in ("", "_vit_b16", "_vit_b32", "_vit_l14", "_rn50", "_rn101", "_tiny"):
        assert {"fgdi" + suffix, "clip_reid" + suffix} <= names


def test_weights_of_one_method_are_refused_by_a_model_of_the_other(tmp_path):
    fgdi = build_fgdi("fgdi_tiny", 5, num_domains=2, pretrained=False)
    clip_reid = build_fgdi("clip_reid_tiny", 5, num_domains=2, pretrained=False)
    torch.save(fgdi.state_dict(), tmp_path / "fgdi.pth")
    with pytest.raises(CheckpointError, match="holds fgdi_tiny weights .* the model being loaded is clip_reid_tiny"):
        load_fgdi_checkpoint(clip_reid, str(tmp_path / "fgdi.pth"))
    with pytest.raises(CheckpointError, match="holds clip_reid_tiny weights .* the model being loaded is fgdi_tiny"):
        fgdi.load_state_dict(clip_reid.state_dict())


def test_a_key_the_models_table_does_not_read_is_warned_about():
    clip_reid = load_config(CONFIG, ["fgdi.stage3_epochs", "7", "fgdi.beta", "0.3"])
    assert unread_warnings(clip_reid) == [
        "=> Warning: fgdi.stage3_epochs 7 is not read by clip_reid_tiny's two-stage engine (CLIP-ReID's stages): "
        "only the fgdi* models' stages read it",
        "=> Warning: fgdi.beta 0.3 is not read by clip_reid_tiny's two-stage engine (CLIP-ReID's stages): "
        "only the fgdi* models' stages read it",
    ]
    fgdi = load_config(str(CONFIGS / "synthetic" / "fgdi_tiny.yaml"), ["fgdi.image_epochs", "7"])
    assert unread_warnings(fgdi) == [
        "=> Warning: fgdi.image_epochs 7 is not read by fgdi_tiny's three-stage engine: "
        "only the clip_reid* models' stages read it"
    ]


def test_a_protocol_runs_clip_reid_by_model_name():
    files = [str(CONFIGS / "models" / "fgdi.yaml"), str(CONFIGS / "protocols" / "p1.yaml")]
    cfg, over = load_config(files), load_config(files, ["model.name", "clip_reid"])
    assert cfg.data.save_dir == "log/protocol1/fgdi" and over.data.save_dir == "log/protocol1/clip_reid"
    shipped = load_config([str(CONFIGS / "models" / "clip_reid.yaml"), str(CONFIGS / "protocols" / "p1.yaml")])
    assert shipped.model.name == "clip_reid" and shipped.fgdi.id_weight == 0.25


def test_a_prompt_stage_lists_its_domain_classifier_exactly_when_it_has_one():
    settings = FGDISettings.from_node(load_config(CONFIG).fgdi, ALL_STAGE_NAMES)
    model = build_fgdi("clip_reid_tiny", 5, num_domains=2, pretrained=False)
    without = (Stage("p", PROMPT, ("promptlearner.clsctx", "dcgrl."), optimizer="p"), *CLIP_REID_STAGES[1:])
    with pytest.raises(
        ConfigError, match="prompt stage 'p' trains promptlearner.clsctx, dcgrl. with domain_classifier"
    ):
        build_optimizers(model, with_epochs(without, {"p": 1, "image": 1}), settings)
    assert FGDI_STAGES[1].domain_classifier and not CLIP_REID_STAGES[0].domain_classifier


def test_its_run_resumes_as_itself_is_refused_as_fgdi_and_its_weights_give_features(run, tiny_root, tmp_path, capsys):
    save_dir, results = run
    copy = tmp_path / "run"  # the run's folder without latest.pth: auto must find the table's own stage files
    shutil.copytree(save_dir, copy)
    (copy / "checkpoints" / "latest.pth").unlink()
    args = ["--config-file", CONFIG, "--root", tiny_root, "data.save_dir", str(copy), *TINY]
    capsys.readouterr()
    again = train([*args, "model.resume", "auto"])  # the finished run, tested again
    out = capsys.readouterr().out
    assert f"=> model.resume auto: {copy / 'checkpoints' / 'image.pth'}" in out
    assert "image.pth is the checkpoint of a finished run (every stage trained, 4 epochs)" in out
    assert again["synth_d"]["mAP"] == pytest.approx(results["synth_d"]["mAP"])
    train([*args, "model.resume", str(copy / "checkpoints" / "prompt.pth")])  # mid-run: its image stage is left
    assert "2 of the run's 4 epochs done, continuing with image epoch 1/2" in capsys.readouterr().out
    with pytest.raises(RunFolderError, match="model.name: 'clip_reid_tiny' -> 'fgdi_tiny'"):
        train([*args, "model.resume", "auto", "model.name", "fgdi_tiny"])
    extractor = FeatureExtractor(str(save_dir / "checkpoints" / "image.pth"), device="cpu")
    assert extractor.model.variant == "clip_reid_tiny"
    assert extractor(torch.rand(2, 3, 64, 32)).shape == (2, 64 + 64)
