"""The three-stage engine: what each stage trains, that it learns, exact resume, cached prompts, CLI."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torchreid

from torchreid_fgdi.cli.train import train
from torchreid_fgdi.config import load_config
from torchreid_fgdi.data import DomainImageDataManager
from torchreid_fgdi.engine import ImageFGDIEngine
from torchreid_fgdi.engine.settings import FGDISettings
from torchreid_fgdi.engine.stages import FGDI_STAGES, IMAGE, IMAGE_ENCODER, PROMPT, STAGE_NAMES, Stage
from torchreid_fgdi.errors import ConfigError
from torchreid_fgdi.models import build_fgdi
from torchreid_fgdi.models.checkpoints import RECORD_KEY
from torchreid_fgdi.utils.checkpoint import CheckpointError

CONFIG = str(Path(__file__).parents[1] / "configs" / "synthetic" / "fgdi_tiny.yaml")
SHORT = ["fgdi.stage1_epochs", "2", "fgdi.stage2a_epochs", "2", "fgdi.stage2b_epochs", "2", "fgdi.stage3_epochs", "2"]
SHORT += ["fgdi.checkpoint_every", "1", "fgdi.prompt.batch_size", "32", "train.print_freq", "1000"]
IMAGE_SIDE = ("image_encoder.", "bottleneck.", "bottleneck_proj.", "classifier.", "classifier_proj.")


def _engine(root, *opts, table=FGDI_STAGES, epochs=None):
    cfg = load_config(CONFIG, ["data.root", root, "train.batch_size", "24", *SHORT, *opts])
    torchreid.utils.set_random_seed(cfg.train.seed)
    dm = DomainImageDataManager(
        root=root,
        sources=cfg.data.sources,
        targets=["synth_d"],
        height=64,
        width=32,
        workers=0,
        use_gpu=False,
        batch_size_train=24,
        batch_size_test=100,
        num_instances=4,
        train_sampler="DomainBalancedIdentitySampler",
    )
    model = build_fgdi("fgdi_tiny", dm.num_train_pids, num_domains=dm.num_train_domains, pretrained=False)
    settings = FGDISettings.from_node(cfg.fgdi, STAGE_NAMES)
    if epochs is not None:
        settings = dataclasses.replace(settings, epochs=epochs)
    return ImageFGDIEngine(dm, model, settings=settings, use_gpu=False, table=table)


def test_the_engine_uses_the_device_its_data_manager_was_built_for(tiny_root, monkeypatch):
    """The README's recipe passes no use_gpu: a config's ``use_gpu False`` (the data manager's) holds
    on a machine with a GPU, as in the command."""
    built = _engine(tiny_root)  # its data manager built with use_gpu False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine, as torchreid asks
    engine = ImageFGDIEngine(built.datamanager, built.model, built.settings)
    assert not engine.use_gpu and engine.device == torch.device("cpu")


def _run(engine, save_dir):
    engine.run(save_dir=str(save_dir), print_freq=1000)


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def finished(tiny_root, tmp_path_factory):
    """One uninterrupted short run: its engine and save_dir (checkpoints after every stage)."""
    save_dir = tmp_path_factory.mktemp("fgdi-run")
    engine = _engine(tiny_root)
    _run(engine, save_dir)
    return engine, save_dir


def _changed(before: dict, after: dict) -> set:
    """The weights that differ; the model's record (`RECORD_KEY`: its sizes, not a weight) is left out."""
    return {k for k in before if k != RECORD_KEY and not torch.equal(before[k], after[k])}


def test_each_stage_trains_exactly_its_parameters(finished):
    engine, save_dir = finished
    checkpoints = save_dir / "checkpoints"
    states = {s: _load(checkpoints / f"{s}.pth") for s in ("stage1", "stage2a", "stage2b", "stage3")}
    keys = list(states["stage1"])
    image = {k for k in keys if k.startswith(IMAGE_SIDE)} - {"bottleneck.bias", "bottleneck_proj.bias"}
    assert _changed(states["stage1"], states["stage2a"]) == {
        k for k in keys if k.startswith(("promptlearner.clsctx", "dcgrl."))
    }
    assert _changed(states["stage2a"], states["stage2b"]) == {
        k for k in keys if k.startswith(("promptlearner.dmctx", "dc."))
    }
    assert _changed(states["stage2b"], states["stage3"]) == image
    untouched = [k for k in keys if k.startswith(("text_encoder.", "promptlearner.token"))] + ["bottleneck.bias"]
    assert untouched and not _changed({k: states["stage1"][k] for k in untouched}, states["stage3"])


def test_another_method_is_another_table(tiny_root, tmp_path):
    """A method of two stages as rows: the loop, optimizers, checkpoints and logs follow the table."""
    table = (
        Stage("prompts", PROMPT, ("promptlearner.clsctx", "dcgrl."), optimizer="prompts", domain_classifier=True),
        Stage("image", IMAGE, IMAGE_ENCODER, optimizer="image", text_guided=True, domain_guidance=True),
    )
    engine = _engine(tiny_root, table=table, epochs={"prompts": 2, "image": 1})
    assert set(engine.optimizers) == {"prompts", "image"} and engine.max_epoch == 1
    before = {k: v.clone() for k, v in engine.model.state_dict().items()}
    _run(engine, tmp_path)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["image.pth", "latest.pth", "prompts.pth"]
    prompts, image = _load(tmp_path / "checkpoints" / "prompts.pth"), _load(tmp_path / "checkpoints" / "image.pth")
    keys = list(before)
    assert _changed(before, prompts) == {k for k in keys if k.startswith(("promptlearner.clsctx", "dcgrl."))}
    assert _changed(prompts, image) == {k for k in keys if k.startswith(IMAGE_SIDE)} - {
        "bottleneck.bias",
        "bottleneck_proj.bias",
    }
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["group"], r["step"]) for r in rows if not r["group"].startswith("test/")] == [
        ("prompts", 1),
        ("prompts", 2),
        ("prompts/moved", 2),
        ("image", 1),
    ]
    assert "i2t" in rows[3] and "guide" in rows[3]
    # the diagnostics this table's stages make: identity prompts only (no domain prompts, so no cosine)
    assert set(engine.diagnostics) == {"identity_prompts", "guide", "test_features", "warnings"}
    assert engine.diagnostics["identity_prompts"]["stage"] == "prompts"
    assert engine.diagnostics["test_features"]["stage"] == "image"
    other = torch.load(tmp_path / "checkpoints" / "prompts.pth", weights_only=True)
    torch.save({**other, "stage": "stage2b"}, tmp_path / "fgdi.pth")
    with pytest.raises(CheckpointError, match="at stage 'stage2b', which this engine's stages \\(prompts, image\\)"):
        _engine(tiny_root, table=table, epochs={"prompts": 2, "image": 1}).resume(str(tmp_path / "fgdi.pth"))
    torch.save({**other, "stage": "done"}, tmp_path / "finished.pth")  # a finished run of the other table
    with pytest.raises(CheckpointError, match="holds no state for the optimizer\\(s\\) stage2a, stage2b"):
        _engine(tiny_root).resume(str(tmp_path / "finished.pth"))


def test_a_table_the_engine_cannot_run_is_refused_before_training(tiny_root):
    shared = (Stage("a", IMAGE, ("image_encoder.",), optimizer="x"), Stage("b", IMAGE, ("classifier",), optimizer="x"))
    with pytest.raises(ConfigError, match="optimizer 'x' is shared by stages \\(a, b\\) that train different"):
        _engine(tiny_root, table=shared, epochs={"a": 1, "b": 1})
    prompts_only = (Stage("p", PROMPT, ("promptlearner.clsctx", "dcgrl."), optimizer="p", domain_classifier=True),)
    with pytest.raises(ConfigError, match="needs an image stage"):
        _engine(tiny_root, table=prompts_only, epochs={"p": 1})
    with pytest.raises(ConfigError, match="no epochs set for stage\\(s\\) b"):
        _engine(tiny_root, table=shared, epochs={"a": 1})
    settings = FGDISettings.from_node(load_config().fgdi, STAGE_NAMES)  # the defaults: the paper's epochs
    assert dict(settings.epochs) == {"stage1": 3, "stage2a": 120, "stage2b": 30, "stage3": 60}
    with pytest.raises(TypeError):
        settings.epochs["stage1"] = 5  # frozen settings: nothing changes them mid-run


def test_stage1_changes_only_the_image_side(tiny_root, tmp_path):
    engine = _engine(tiny_root, "fgdi.stage2a_epochs", "0", "fgdi.stage2b_epochs", "0", "fgdi.stage3_epochs", "0")
    before = {k: v.clone() for k, v in engine.model.state_dict().items()}
    _run(engine, tmp_path)
    image = {k for k in before if k.startswith(IMAGE_SIDE)} - {"bottleneck.bias", "bottleneck_proj.bias"}
    assert _changed(before, engine.model.state_dict()) == image


def test_losses_fall(tiny_root):
    engine = _engine(tiny_root, "fgdi.stage2a_epochs", "20")  # a schedule still warm after 10 epochs
    engine.enter("stage1")
    batch = next(iter(engine.train_loader))
    engine.model.train()
    first = engine.forward_backward(batch)["loss"]
    for _ in range(5):
        last = engine.forward_backward(batch)["loss"]
    assert last < 0.8 * first, (first, last)
    engine.enter("stage2a")
    summaries = []
    for _ in range(10):
        summaries.append(engine.train_prompts("stage2a"))
        engine.update_lr(["stage2a"])  # what an epoch (engine.train) does after its steps
    assert summaries[-1]["loss"] < summaries[0]["loss"], [round(x["loss"], 3) for x in summaries]


def test_cached_stage3_prompt_features_equal_fresh_encodings(finished):
    engine, _ = finished
    invariant, relevant = engine._text_cache  # what stage 3 trained against
    pids = torch.arange(engine.datamanager.num_train_pids)
    domains = torch.tensor([next(d for _, p, _, d in engine.datamanager.train_items if p == i) for i in pids])
    engine.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(invariant, engine.model.text_features(pids), atol=0, rtol=0)
        torch.testing.assert_close(relevant, engine.model.text_features(pids, domains), atol=0, rtol=0)


class _Killed(Exception):
    pass


@pytest.mark.parametrize("stage,after_steps", [("stage2a", 1), ("stage3", 9)])
def test_a_killed_run_resumes_to_the_same_weights(finished, tiny_root, tmp_path, stage, after_steps):
    uninterrupted, _ = finished
    killed = _engine(tiny_root)
    steps = {"n": 0}
    real = killed.forward_backward if stage == "stage3" else killed.train_prompts

    def dying(*args):
        if killed.stage == stage:
            steps["n"] += 1
            if steps["n"] > after_steps:
                raise _Killed
        return real(*args)

    setattr(killed, "forward_backward" if stage == "stage3" else "train_prompts", dying)
    with pytest.raises(_Killed):
        _run(killed, tmp_path)
    resumed = _engine(tiny_root)
    torch.manual_seed(12345)  # a different RNG state: resume must restore its own
    resumed.resume(str(tmp_path / "checkpoints" / "latest.pth"))
    assert resumed.stage == stage and resumed.stage_epoch >= 1
    _run(resumed, tmp_path)
    want, got = uninterrupted.model.state_dict(), resumed.model.state_dict()
    assert not _changed(want, got)
    assert resumed.diagnostics == uninterrupted.diagnostics  # from the checkpoint, metrics.jsonl and features/


def test_resume_rejects_a_plain_weights_file(tiny_root, tmp_path):
    engine = _engine(tiny_root)
    torch.save({"state_dict": engine.model.state_dict()}, tmp_path / "weights.pth")
    with pytest.raises(ValueError, match="not an FGDI engine checkpoint.*model.load_weights"):
        engine.resume(str(tmp_path / "weights.pth"))


def test_bfloat16_test_features_are_float32_and_close_to_fp32(tiny_root):
    fp32, bf16 = _engine(tiny_root), _engine(tiny_root, "fgdi.test_precision", "bf16")
    images = torch.randn(4, 3, 64, 32)
    fp32.model.eval(), bf16.model.eval()
    with torch.no_grad():
        want, got = fp32.extract_features(images), bf16.extract_features(images)
    assert got.dtype == torch.float32 and not torch.equal(got, want)
    assert (got - want).norm() / want.norm() < 0.05


def _first_step_losses(engine, batch) -> dict:
    engine.enter("stage1")
    engine.model.train()
    return engine.forward_backward(batch)


def test_bfloat16_autocast_trains_on_cpu_close_to_fp32_and_fp16_needs_cuda(tiny_root):
    fp32, bf16 = _engine(tiny_root), _engine(tiny_root, "fgdi.precision", "bf16")  # the same initial weights
    batch = next(iter(fp32.train_loader))
    want, got = _first_step_losses(fp32, batch), _first_step_losses(bf16, batch)
    assert got.keys() == want.keys() and got != want  # bf16 arithmetic ran
    for term in ("loss", "id", "triplet"):
        assert got[term] == pytest.approx(want[term], rel=0.05), term
    with pytest.raises(ValueError, match="fp16 needs CUDA; use bf16 or fp32"):
        _engine(tiny_root, "fgdi.precision", "fp16")


def test_command_line_trains_all_stages_and_tests_a_checkpoint(tiny_root, tmp_path):
    args = ["--config-file", CONFIG, "--root", tiny_root, "data.save_dir", str(tmp_path), *SHORT]
    results = train(args)
    assert list(results) == ["synth_a", "synth_b", "synth_c", "synth_d"]
    assert "| synth_d | unseen |" in (tmp_path / "results.md").read_text()
    final = tmp_path / "checkpoints" / "stage3.pth"
    tested = train(args + ["test.evaluate", "True", "model.load_weights", str(final)])
    assert tested["synth_d"]["mAP"] == pytest.approx(results["synth_d"]["mAP"])


def test_sync_bn_bnnecks_keep_their_checkpoint_layout_and_one_process_trains_as_plain_bn(tiny_root):
    plain, synced = _engine(tiny_root), _engine(tiny_root, "fgdi.sync_bn", "True")  # the same initial weights
    assert isinstance(synced.model.bottleneck, torch.nn.SyncBatchNorm)
    assert isinstance(synced.model.bottleneck_proj, torch.nn.SyncBatchNorm)
    assert synced.model.state_dict().keys() == plain.model.state_dict().keys()
    assert not _changed(plain.model.state_dict(), synced.model.state_dict())  # and the same values
    assert not synced.model.bottleneck.bias.requires_grad  # still the frozen-bias BNNeck
    batch = next(iter(plain.train_loader))
    want, got = _first_step_losses(plain, batch), _first_step_losses(synced, batch)
    assert got == pytest.approx(want, rel=1e-6)  # one process: SyncBatchNorm is plain batch norm
    assert not _changed(plain.model.state_dict(), synced.model.state_dict())  # and the step is the same
