"""Numbers a user can trust: no run, resume or evaluation silently comes from the wrong state."""

import json
import os
import pickle
import random
import resource
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torchreid
from PIL import Image

from tests.conftest import killed_write
from tests.fake_datasets import make_market1501
from tests.test_faults import MARKET, _jpeg_bytes, _market
from tests.test_fgdi_engine import CONFIG, _engine
from tests.test_inference import save_baseline
from torchreid_fgdi.cli import benchmark, refusals
from torchreid_fgdi.cli import export as export_cli
from torchreid_fgdi.cli.resume import resume_path
from torchreid_fgdi.cli.run_folder import RunFolder, RunFolderError
from torchreid_fgdi.cli.search import main as search_main
from torchreid_fgdi.cli.search import search
from torchreid_fgdi.cli.train import command_line, log_to_file, train
from torchreid_fgdi.cli.train import main as train_main
from torchreid_fgdi.config import load_config, load_config_text
from torchreid_fgdi.config.checks import RANGES, ConfigError, Range
from torchreid_fgdi.config.recipe import check_recipe
from torchreid_fgdi.data.folders import glob_with_literal_folders
from torchreid_fgdi.data.images import read_image
from torchreid_fgdi.engine import ImageFGDIEngine
from torchreid_fgdi.engine.fgdi import NonFiniteLossError
from torchreid_fgdi.engine.run_log import read_metrics
from torchreid_fgdi.errors import UnreadableImageError
from torchreid_fgdi.evaluation import NonFiniteFeaturesError, evaluate_features, extract_features
from torchreid_fgdi.tools.export import _write_checked, export
from torchreid_fgdi.tools.features import FeatureExtractor
from torchreid_fgdi.utils import atomic
from torchreid_fgdi.utils.checkpoint import CheckpointError, read_checkpoint

ONE = ["fgdi.stage1_epochs", "1", "fgdi.stage2a_epochs", "1", "fgdi.stage2b_epochs", "1", "fgdi.stage3_epochs", "1"]
ONE += ["fgdi.checkpoint_every", "1", "fgdi.prompt.batch_size", "32", "train.print_freq", "1000"]
ONE += ["train.batch_size", "24", "test.plots", "false", "data.targets", "['synth_a', 'synth_d']"]
OSNET = str(Path(CONFIG).parent / "osnet_ain_x0_25.yaml")


def _cli(root, save_dir, *opts, config=CONFIG):
    return train(["--config-file", config, "--root", root, "data.save_dir", str(save_dir), *ONE, *opts])


@pytest.fixture(scope="module")
def finished(tiny_root, tmp_path_factory):
    """A finished one-epoch-per-stage run (never modified: tests work on copies)."""
    save_dir = tmp_path_factory.mktemp("trust") / "run"
    _cli(tiny_root, save_dir)
    return save_dir


@pytest.fixture
def run_copy(finished, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    return copy


def _results(save_dir) -> str:
    return (Path(save_dir) / "results.json").read_text()


# ---- 1: a resume is checked against the checkpoint's config ------------------------------
def test_resuming_a_finished_run_with_changed_training_settings_is_refused(tiny_root, run_copy):
    before = _results(run_copy)
    with pytest.raises(RunFolderError) as err:
        _cli(tiny_root, run_copy, "model.resume", "auto", "fgdi.stage3_epochs", "3", "fgdi.image.lr", "0.5")
    assert "fgdi.stage3_epochs: 1 -> 3" in str(err.value) and "fgdi.image.lr: 0.001 -> 0.5" in str(err.value)
    assert "the run has finished" in str(err.value)
    assert _results(run_copy) == before


def _repaint(image: Path) -> None:
    """Other pixels of the same size under the same name, with the same modification time."""
    times = image.stat()
    with Image.open(image) as old:
        Image.new("RGB", old.size, (20, 200, 40)).save(image, format="JPEG")
    os.utime(image, ns=(times.st_atime_ns, times.st_mtime_ns))


@pytest.mark.parametrize("change", ["removed", "repainted"])
def test_resuming_on_other_training_images_under_the_same_settings_is_refused(tiny_root, run_copy, tmp_path, change):
    """Same config, other data: one training image of a source is gone, or has other contents under its
    name, so the checkpoint's data fingerprint no longer matches the training list."""
    data = tmp_path / "data"
    shutil.copytree(tiny_root, data)
    image = sorted((data / "synth_a" / "bounding_box_train").glob("*.jpg"))[0]
    if change == "removed":
        image.unlink()
    else:
        _repaint(image)
    before = _results(run_copy)
    with pytest.raises(RunFolderError, match="the training images and labels under data.root differ"):
        _cli(str(data), run_copy, "model.resume", "auto")
    assert _results(run_copy) == before


def test_resuming_a_checkpoint_on_other_sources_is_refused(tiny_root, run_copy):
    stage1 = str(run_copy / "checkpoints" / "stage1.pth")  # every tiny domain has 12 identities
    with pytest.raises(RunFolderError, match=r"data.sources: \['synth_a', 'synth_b', 'synth_c'\] -> \['synth_a', "):
        _cli(tiny_root, run_copy, "model.resume", stage1, "data.sources", "['synth_a', 'synth_b', 'synth_d']")


def test_a_checkpoint_of_another_size_names_the_differing_setting(tiny_root, run_copy):
    stage1 = str(run_copy / "checkpoints" / "stage1.pth")
    with pytest.raises(RunFolderError, match=r"data.height: 64 -> 32"):
        _cli(tiny_root, run_copy, "model.resume", stage1, "data.height", "32")


def test_a_new_experiment_in_an_old_runs_folder_is_refused_and_resume_auto_never_adopts_it(tiny_root, run_copy):
    before = _results(run_copy)
    with pytest.raises(RunFolderError, match=r"holds another experiment .*\n  fgdi.beta: 0.1 -> 0.5"):
        _cli(tiny_root, run_copy, "fgdi.beta", "0.5")
    with pytest.raises(RunFolderError, match=r"cannot resume .*checkpoints/\w+.pth.*\n  fgdi.beta: 0.1 -> 0.5"):
        _cli(tiny_root, run_copy, "fgdi.beta", "0.5", "model.resume", "auto")
    assert _results(run_copy) == before
    assert (run_copy / "metrics.jsonl").stat().st_size > 0  # the old run's curves are still there


def test_a_resume_applies_more_epochs_and_says_so(tiny_root, run_copy, capsys):
    stage2b = str(run_copy / "checkpoints" / "stage2b.pth")
    _cli(tiny_root, run_copy, "model.resume", stage2b, "fgdi.stage3_epochs", "2")
    out = capsys.readouterr().out
    assert "with changed settings, applied to the rest of the run:\n  fgdi.stage3_epochs: 1 -> 2" in out
    said = f"=> Resumed from {stage2b}: 3 of the run's 5 epochs done, continuing with stage3 epoch 1/2 (run epoch 4/5)"
    assert said in out
    state = read_checkpoint(str(run_copy / "checkpoints" / "stage3.pth"))
    assert (state["epoch"], state["image_epoch"]) == (5, 3)  # every stage's epochs (torchreid's), image epochs 1 + 2


def _files(folder: Path) -> dict:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def test_resuming_a_finished_run_says_so_and_only_tests_it_again(tiny_root, run_copy, capsys):
    """The benchmark's ``model.resume auto`` after a stop tests finished runs again; nothing is trained
    or written to checkpoints, and the log says how to evaluate the run otherwise."""
    checkpoints, before = run_copy / "checkpoints", _results(run_copy)
    files, tests = _files(checkpoints), _test_points(run_copy)
    capsys.readouterr()
    _cli(tiny_root, run_copy, "model.resume", "auto")
    out = capsys.readouterr().out
    stage3 = checkpoints / "stage3.pth"
    assert (
        f"=> {stage3} is the checkpoint of a finished run (every stage trained, 4 epochs): nothing left to train, "
        "so its final test is repeated (same weights and settings, so the same results unless the test images "
        f"changed). To evaluate it with other test settings: test.evaluate True model.load_weights {stage3}"
    ) in out
    assert "##### synth_d: mAP " in out and _results(run_copy) == before
    assert "Trained all stages" not in out and "Resumed from" not in out and "recorded in checkpoints" not in out
    assert _files(checkpoints) == files
    assert (
        _test_points(run_copy) == tests
    )  # TensorBoard and metrics.jsonl: the same points again, at the run's last epoch


def _test_points(save_dir: Path) -> set:
    """(group, step, mAP) of every test a run logged in metrics.jsonl."""
    return {
        (row["group"], row["step"], row["mAP"])
        for row in read_metrics(str(save_dir))
        if row["group"].startswith("test/")
    }


def test_torchreids_resume_of_an_fgdi_checkpoint_counts_the_epochs_the_log_counts(finished, capsys):
    """torchreid's `resume_from_checkpoint` starts again from the checkpoint's ``epoch``: the run's epochs
    done, every stage's (the log's 'run epoch 4/4'), not its image epochs (2)."""
    model = torchreid.models.build_model("fgdi_tiny", 36, num_domains=3, pretrained=False)
    assert torchreid.utils.resume_from_checkpoint(str(finished / "checkpoints" / "stage3.pth"), model) == 4
    assert "Last epoch = 4" in capsys.readouterr().out


def test_a_checkpoint_from_before_image_epoch_was_recorded_resumes_at_its_image_epoch(tiny_root, run_copy, tmp_path):
    state = read_checkpoint(str(run_copy / "checkpoints" / "stage2b.pth"))
    assert (state["epoch"], state["image_epoch"]) == (3, 1)
    old = {**{k: v for k, v in state.items() if k != "image_epoch"}, "epoch": 1}  # its "epoch" counted image epochs
    torch.save(old, tmp_path / "old.pth")
    engine = _engine(tiny_root)
    engine.resume(str(tmp_path / "old.pth"))
    assert (engine.stage, engine.image_epoch) == ("stage3", 1)
    assert engine.epoch == 0  # torchreid's index of the last epoch trained, where the run that wrote it stood


# ---- 2: the NaN recovery path: a lower learning rate really applies ----------------------
def test_a_resume_with_a_lower_learning_rate_trains_at_it(tiny_root, finished):
    good = str(finished / "checkpoints" / "stage2b.pth")
    old, new = _engine(tiny_root), _engine(tiny_root, "fgdi.image.lr", "1e-5")
    old.resume(good)
    new.resume(good)
    rates = [
        (o["lr"], n["lr"]) for o, n in zip(old.optimizers["image"].param_groups, new.optimizers["image"].param_groups)
    ]
    assert all(n == pytest.approx(o * 1e-5 / 1e-3, rel=1e-6) for o, n in rates) and rates[0][0] > 0
    assert new.schedulers["image"].base_lrs == pytest.approx([1e-5, 2e-5])


# ---- 3: evaluation needs trained weights and never replaces the run's results ------------
def test_evaluating_without_weights_is_refused_and_an_evaluation_keeps_the_runs_results(tiny_root, run_copy):
    before = _results(run_copy)
    with pytest.raises(ConfigError, match="test.evaluate True without model.load_weights"):
        _cli(tiny_root, run_copy, "test.evaluate", "True")
    stage3 = str(run_copy / "checkpoints" / "stage3.pth")
    evaluated = _cli(tiny_root, run_copy, "test.evaluate", "True", "model.load_weights", stage3)
    assert _results(run_copy) == before
    saved = json.loads((run_copy / "evaluation" / "results.json").read_text())
    assert saved["synth_d"]["mAP"] == pytest.approx(json.loads(before)["synth_d"]["mAP"], abs=1e-6)
    assert evaluated["synth_d"]["mAP"] == pytest.approx(saved["synth_d"]["mAP"])


def test_an_evaluation_under_another_recipe_is_refused_unless_allowed_and_keeps_the_runs_results(
    tiny_root, run_copy, capsys
):
    """The weights were trained and tested with torchreid's mean / std and the features before the
    BNNecks; evaluating them under the authors' per-image normalisation and after the necks runs and
    gives other numbers, so it is refused unless asked for, and never touches the run's own results."""
    before = _results(run_copy)
    stage3 = str(run_copy / "checkpoints" / "stage3.pth")
    other = ["test.evaluate", "True", "model.load_weights", stage3, "data.transforms", "clip_fgdi"]
    other += ["fgdi.neck_feat", "after"]
    argv = ["--config-file", CONFIG, "--root", tiny_root, "data.save_dir", str(run_copy), *ONE, *other]
    assert train_main(argv) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith(f"error: {stage3} was trained and tested under another recipe")
    assert "(data.transforms: ['random_flip'] -> ['clip_fgdi'], fgdi.neck_feat: 'before' -> 'after')" in error
    assert "test.allow_recipe_change True to use this recipe on purpose" in error
    assert not (run_copy / "evaluation" / "results.json").exists()
    evaluated = _cli(tiny_root, run_copy, *other, "test.allow_recipe_change", "True")
    log = sorted(run_copy.glob("test.log-*"))[-1]  # the allowed run's (the refused one's too, a second apart)
    assert f"=> {stage3} is used under another recipe than it was trained with (test.allow_recipe_change): " in (
        log.read_text()
    )
    assert "data.transforms: ['random_flip'] -> ['clip_fgdi'], fgdi.neck_feat: 'before' -> 'after'" in log.read_text()
    assert _results(run_copy) == before
    saved = json.loads((run_copy / "evaluation" / "results.json").read_text())
    assert evaluated["synth_d"]["mAP"] == pytest.approx(saved["synth_d"]["mAP"])
    assert saved["synth_d"]["mAP"] != pytest.approx(json.loads(before)["synth_d"]["mAP"], abs=1e-6)


def test_search_and_export_given_a_config_of_another_recipe_are_refused_unless_it_allows_it(
    tiny_root, finished, tmp_path, capsys
):
    weights = str(finished / "checkpoints" / "stage3.pth")
    config = tmp_path / "other.yaml"
    config.write_text(f"_BASE_: {CONFIG}\ndata:\n  norm_mean: [0.5, 0.5, 0.5]\nfgdi:\n  test_precision: bf16\n")
    gallery = os.path.join(tiny_root, "synth_d", "bounding_box_test")
    query = os.path.join(gallery, sorted(os.listdir(gallery))[0])
    out = tmp_path / "search"
    argv = ["--query", query, "--gallery", gallery, "--weights", weights, "--config-file", str(config)]
    assert search_main([*argv, "--out", str(out), "--index", str(tmp_path / "index")]) == 2
    error = capsys.readouterr().err  # the test precision is not a difference: extraction here is fp32
    assert "(data.norm_mean: [0.485, 0.456, 0.406] -> [0.5, 0.5, 0.5]): its features" in error
    assert f"(or leave out {config}: the checkpoint's own config is used then)" in error
    with pytest.raises(ConfigError, match=r"data.norm_mean: \[0.485"):
        export(weights, str(tmp_path / "export"), ["torchscript"], str(config))
    assert not out.exists() and not (tmp_path / "export").exists() and not (tmp_path / "index").exists()
    config.write_text(config.read_text() + "test:\n  allow_recipe_change: true\n")
    FeatureExtractor(weights, str(config), device="cpu")
    assert "is used under another recipe than it was trained with" in capsys.readouterr().out


@pytest.mark.parametrize(
    "recorded,given,change",
    [
        ([], ["fgdi.quick_gelu", "True"], None),  # the tiny CLIP (a config dict) runs QuickGELU
        (["fgdi.quick_gelu", "False"], [], (False, True)),
        (["model.name", "fgdi_vit_b16"], ["model.name", "fgdi_vit_b16", "fgdi.quick_gelu", "True"], None),  # OpenAI's
        (  # trained from a file on another machine: assumed OpenAI's, QuickGELU, as it was built there
            ["model.name", "fgdi_vit_b16", "fgdi.clip_weights", "/the/training/machine/ViT-B-16.pt"],
            ["model.name", "fgdi_vit_b16", "fgdi.quick_gelu", "True"],
            None,
        ),
        (  # a GELU tag: None under OpenAI's weights is another activation
            ["model.name", "fgdi_vit_b16", "fgdi.clip_weights", "laion2b_s34b_b88k"],
            ["model.name", "fgdi_vit_b16"],
            (False, True),
        ),
    ],
    ids=["tiny None = True", "tiny False -> None", "openai None = True", "missing file None = True", "GELU tag"],
)
def test_the_recipe_compares_the_activation_the_weights_resolve_to_not_the_value_written(recorded, given, change):
    """fgdi.quick_gelu None follows the CLIP weights: True and None are one model under OpenAI's weights,
    and None is another activation under weights trained with GELU."""
    state = {"config": load_config(CONFIG, recorded).dump()}
    if change is None:
        assert check_recipe(load_config(CONFIG, given), "ckpt.pth", state) == {}
        return
    with pytest.raises(ConfigError, match=r"another recipe than this config's \(fgdi.quick_gelu: False -> True\)"):
        check_recipe(load_config(CONFIG, given), "ckpt.pth", state)
    allowed = load_config(CONFIG, [*given, "test.allow_recipe_change", "True"])
    assert check_recipe(allowed, "ckpt.pth", state) == {"fgdi.quick_gelu": change}


def test_a_checkpoint_that_records_no_config_is_evaluated_and_the_log_says_it_was_not_checked(tmp_path, capsys):
    """torchreid's own checkpoints record no config (older torch versions saved them in the legacy format)."""
    path = str(tmp_path / "model.pth.tar-60")
    torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 60}, path, _use_new_zipfile_serialization=False)
    cfg = load_config(OSNET, ["data.transforms", "clip_fgdi", "test.evaluate", "True", "model.load_weights", path])
    assert check_recipe(cfg, path) == {}
    assert f"=> {path} records no config (torchreid's own checkpoints do not)" in capsys.readouterr().out


# ---- 4: NaN weights or features stop evaluation, search and export -----------------------
def test_nan_weights_are_refused_by_evaluation_features_search_and_export(tiny_root, run_copy, tmp_path):
    state = read_checkpoint(str(run_copy / "checkpoints" / "stage3.pth"))
    state["state_dict"]["bottleneck.weight"][0] = float("nan")
    broken = str(tmp_path / "broken.pth")
    torch.save(state, broken)
    match = r"broken.pth holds non-finite \(NaN / Inf\) weights in bottleneck.weight"
    with pytest.raises(CheckpointError, match=match):
        _cli(tiny_root, run_copy, "test.evaluate", "True", "model.load_weights", broken)
    with pytest.raises(CheckpointError, match=match):
        FeatureExtractor(broken)
    gallery = os.path.join(tiny_root, "synth_d", "bounding_box_test")
    query = os.path.join(gallery, sorted(os.listdir(gallery))[0])
    with pytest.raises(CheckpointError, match=match):
        search(["--query", query, "--gallery", gallery, "--weights", broken, "--out", str(tmp_path / "s")])
    with pytest.raises(CheckpointError, match=match):
        export(broken, str(tmp_path / "export"), ["torchscript"])
    assert not (tmp_path / "s").exists() and not (tmp_path / "export").exists()


@pytest.mark.parametrize("scale", [1e38, 1e20])  # features of Inf, or finite ones whose L2 norm overflows
def test_finite_weights_whose_features_overflow_are_refused_by_export_and_features(
    scale, tmp_path, monkeypatch, capsys
):
    monkeypatch.delenv(refusals.DEBUG_VARIABLE, raising=False)
    path, _ = save_baseline(tmp_path / "weights")
    state = read_checkpoint(path)
    state["state_dict"]["fc.0.weight"][0, 0] = scale
    torch.save(state, path)
    assert export_cli.main(["--weights", path, "--config-file", OSNET, "--out", str(tmp_path / "export")]) == 1
    err = capsys.readouterr().err
    want = (
        f"error: {path}: the model's features overflow float32 (5 of a random batch of 5 are not finite or "
        f"normalise to zeros; its largest weight is {scale:.1e}, in fc.0.weight): the weights are not sane (a "
        "diverged run?); use an earlier checkpoint. Nothing was exported"
    )
    assert err.startswith(want) and err.count("\n") == 1, err
    assert not (tmp_path / "export").exists()
    with pytest.raises(NonFiniteFeaturesError, match="for 2 of 2 images of the given images: its weights"):
        FeatureExtractor(path, OSNET, device="cpu")(torch.randn(2, 3, 64, 32))  # search's: never zeros


def test_non_finite_features_stop_the_evaluation_and_an_export_that_gives_nan_is_not_kept(tmp_path):
    loader = [{"img": torch.ones(2, 3, 4, 4), "pid": torch.tensor([1, 2]), "camid": torch.tensor([0, 1])}]
    with pytest.raises(NonFiniteFeaturesError, match="non-finite .* features for 1 of 2 images of synth_d query"):
        extract_features(loader, lambda x: torch.stack([x[0, 0, 0], x[1, 0, 0] * float("nan")]), "cpu", "synth_d query")

    class Nan(torch.nn.Module):
        def forward(self, images):
            return images.mean(dim=(2, 3)) * float("nan")

    with pytest.raises(RuntimeError, match="the torchscript export differs from PyTorch by nan"):
        _write_checked(str(tmp_path / "x.pt"), "torchscript", Nan(), torch.randn(2, 3, 8, 4), torch.randn(3, 3, 8, 4))


def test_a_checkpoint_with_finite_but_huge_weights_is_refused_before_its_distances_overflow(
    tiny_root, run_copy, tmp_path
):
    state = read_checkpoint(str(run_copy / "checkpoints" / "stage3.pth"))
    for key in [k for k in state["state_dict"] if ".ln_post." in k]:  # the image encoder's last LayerNorm
        state["state_dict"][key] *= 1e20  # finite weights; features ~1e20, whose squares overflow float32
    huge = str(tmp_path / "huge.pth")
    torch.save(state, huge)
    before = _results(run_copy)
    with pytest.raises(
        NonFiniteFeaturesError, match=r"too large for float32 distances \(norm up to \d\.\de\+\d\d: they "
    ):
        _cli(tiny_root, run_copy, "test.evaluate", "True", "model.load_weights", huge)
    assert _results(run_copy) == before and not (run_copy / "evaluation" / "results.json").exists()


@pytest.mark.parametrize("evaluator", ["fast", "torchreid"])
def test_features_whose_re_ranked_distances_would_overflow_are_refused(evaluator):
    """Norms of 1e10 rank in float32 (squared euclidean distances up to 4e20), but re-ranking squares
    those distances past float32's range: before, a ValueError traceback (fast) or NaN ranked as if
    it were a distance (torchreid)."""
    pids, cams = np.repeat(np.arange(4), 2), np.tile([0, 1], 4)
    query, gallery = (
        (torch.randn(8, 16, generator=torch.Generator().manual_seed(s)) * 1e10, pids, cams) for s in (0, 1)
    )
    assert evaluate_features(query, gallery, evaluator=evaluator)["mAP"] > 0
    with pytest.raises(
        NonFiniteFeaturesError, match="once re-ranking squares them .* for 8 of 8 images of synth_d query"
    ):
        evaluate_features(query, gallery, rerank=True, evaluator=evaluator, where="synth_d")
    huge = (query[0] * 1e20, pids, cams)  # norms past float32's square root: even unit vectors overflow
    with pytest.raises(NonFiniteFeaturesError, match=r"too large for float32 distances \(norm up to \d\.\de\+30"):
        evaluate_features(huge, gallery, "cosine", evaluator=evaluator)


# ---- 5: "the last good checkpoint" is one that is known to be good -----------------------
def test_a_divergence_does_not_name_a_damaged_checkpoint_as_good(tiny_root, tmp_path, monkeypatch):
    monkeypatch.setitem(RANGES, "fgdi.prompt.lr", Range(0.0, open_low=True))  # diverges in stage 2a: on purpose
    with pytest.raises(NonFiniteLossError) as err:
        _cli(tiny_root, tmp_path / "run", "fgdi.prompt.lr", "1e30")
    message = str(err.value)
    stage1 = tmp_path / "run" / "checkpoints" / "stage1.pth"
    assert "non-finite loss in stage2a" in message and "no checkpoint is known to be good" in message
    assert f"Not {stage1}" in message and "may already hold the damage" in message


# ---- 6: a run owns its folder ------------------------------------------------------------
def test_a_second_writer_of_a_folder_is_refused(tiny_root, tmp_path):
    with RunFolder(str(tmp_path / "run")), pytest.raises(RunFolderError, match="is in use by a running job \\(pid"):
        _cli(tiny_root, tmp_path / "run")


def test_benchmark_configs_sharing_a_folder_are_refused(tmp_path):
    save = ["data.save_dir", str(tmp_path / "shared")]
    with pytest.raises(ValueError, match="several runs would write data.save_dir .*shared"):
        benchmark.benchmark(["--configs", CONFIG, OSNET, *save, "--out", str(tmp_path / "bench")])
    assert not (tmp_path / "shared").exists()


def test_benchmark_takes_key_value_pairs_after_its_configs(finished, tmp_path):
    runs = benchmark.benchmark(
        ["--configs", CONFIG, "data.save_dir", str(finished), *ONE, "--collect", "--out", str(tmp_path)]
    )
    assert set(runs["fgdi_tiny"]) == {"synth_a", "synth_d"}


# ---- 7: paths are paths ------------------------------------------------------------------
def test_a_data_root_with_glob_characters_is_read_literally(tmp_path):
    make_market1501(str(tmp_path / "run[1]"))
    make_market1501(str(tmp_path / "run1"))
    next((tmp_path / "run1" / MARKET / "bounding_box_train").glob("*.jpg")).unlink()  # a sibling that differs
    items = _market(tmp_path / "run[1]").train_items
    assert len(items) == len(list((tmp_path / "run[1]" / MARKET / "bounding_box_train").glob("*.jpg")))
    assert all("run[1]" in path for path, *_ in items)
    assert glob_with_literal_folders(str(tmp_path / "run[1]" / "*")) == [str(tmp_path / "run[1]" / "market1501")]


# ---- 8: weights that do not fit stop the run ---------------------------------------------
def test_a_baseline_evaluated_with_an_fgdi_checkpoint_is_refused(tiny_root, finished, tmp_path):
    stage3 = str(finished / "checkpoints" / "stage3.pth")
    opts = [
        "data.save_dir",
        str(tmp_path),
        "test.evaluate",
        "True",
        "model.load_weights",
        stage3,
        "test.plots",
        "false",
    ]
    with pytest.raises(CheckpointError, match=r"stage3.pth does not fit OSNet .*\n  conv1.conv.weight: missing"):
        train(["--config-file", OSNET, "--root", tiny_root, *opts])
    assert not (tmp_path / "evaluation" / "results.json").exists()


# ---- 9: the same source twice ------------------------------------------------------------
def test_a_repeated_source_is_refused():
    with pytest.raises(ConfigError, match="data.sources names synth_a more than once"):
        load_config(CONFIG, ["data.sources", "['synth_a', 'synth_a', 'synth_b']"])


def test_target_training_images_are_refused_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(refusals.DEBUG_VARIABLE, raising=False)
    opts = ["data.save_dir", str(tmp_path / "run"), "data.load_train_targets", "True"]
    assert train_main(["--config-file", CONFIG, *opts, "data.targets", "['synth_d', 'synth_b']"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        "error: data.load_train_targets True loads the targets' training images for domain adaptation, and no "
        "engine here trains on them (domain generalisation: the targets stay unseen until the test); set "
        "data.load_train_targets False"
    )
    assert not (tmp_path / "run").exists()


# ---- 10: a kill between the stage file and latest.pth ------------------------------------
def test_a_kill_before_latest_is_linked_leaves_the_stage_file_and_stray_temporaries_go(
    tiny_root, tmp_path, monkeypatch
):
    def killed(source, path):
        raise KeyboardInterrupt  # stands in for SIGKILL right after the stage file was written

    with monkeypatch.context() as patch:
        patch.setattr(atomic, "link", killed)
        with pytest.raises(KeyboardInterrupt):
            _cli(tiny_root, tmp_path / "run", "fgdi.stage1_epochs", "2")
    checkpoints = tmp_path / "run" / "checkpoints"
    assert (checkpoints / "stage1.pth").is_file() and read_checkpoint(str(checkpoints / "latest.pth"))[
        "stage"
    ] == "stage1"
    stray = killed_write(checkpoints / "latest.pth")
    cfg = load_config(CONFIG, ["data.save_dir", str(tmp_path / "run"), "model.resume", "auto"])
    assert resume_path(cfg, fgdi=True) == str(checkpoints / "stage1.pth")  # further on than latest.pth
    _cli(tiny_root, tmp_path / "run", "model.resume", "auto", "fgdi.stage1_epochs", "2")
    assert not stray.exists()
    assert {p.name for p in checkpoints.iterdir()} == {
        f"{s}.pth" for s in ("stage1", "stage2a", "stage2b", "stage3", "latest")
    }


# ---- errors that name the problem --------------------------------------------------------
@pytest.mark.parametrize(
    "yaml_text,error",
    [
        ("data:\n  height: 64\nmodel:\n  name: fgdi_tiny\ndata:\n  width: 32\n", "key 'data' appears twice"),
        ("data:\n  transforms: [random_flipp]\n", "unknown transform 'random_flipp' .* Did you mean random_flip"),
        ("test:\n  ranks: [-5, 0, 1000]\n", r"test.ranks must be between 1 and 50"),
        ("fgdi:\n  image:\n    lr: .inf\n", "fgdi.image.lr must be a finite number"),
        ("fgdi:\n  image:\n    lr: .nan\n", "fgdi.image.lr must be a finite number"),
        ("fgdi:\n  beta: -3\n", r"fgdi.beta must be between 0.0 and 1.0, got -3"),
        ("fgdi:\n  label_smooth: 2\n", r"fgdi.label_smooth must be between 0.0 and 0.99"),
        ("fgdi:\n  quick_gelu: banana\n", "fgdi.quick_gelu must be one of"),
        ("data:\n  sources: []\n", "data.sources must not be empty"),
        ("train:\n  seed: -1\n", "train.seed must be between 0 and"),
        ("data:\n  height: 4\n", "data.height must be between 16 and 4096, got 4"),
        ("data:\n  width: 100000\n", "data.width must be between 16 and 4096, got 100000"),
        ("data:\n  save_dir: ''\n", "data.save_dir must not be empty"),
        ("_BASE_: bad.yaml\n", "_BASE_ cycle"),
        ("_BASE_: 5\n", "_BASE_ in .* must be a file name or a list of file names, got 5"),
        ("- model\n- data\n", "must hold a mapping of sections"),
    ],
)
def test_config_values_that_cannot_be_right_are_refused(tmp_path, yaml_text, error):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml_text)
    with pytest.raises(ConfigError, match=error):
        load_config(str(bad))


LOL = '["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]'
# A billion laughs: 500 bytes whose value, written out, is 9**9 strings (main printed it in an error message).
BOMB = "data:\n  sources:\n    - &a " + LOL + "\n"
BOMB += "".join(f"    - &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi"))
BAD_YAML = {  # file -> (its text, the line named, what the error line says)
    "bomb.yaml": (BOMB, 3, "anchors and aliases (&name, *name) are not read in a config"),
    "recursive.yaml": ("data: &d\n  self: *d\n", 1, "anchors and aliases"),
    "int_key.yaml": ("data:\n  height: 64\n  1: 2\n", 3, "the key 1 is not a name"),
    "merge_key.yaml": ("data:\n  <<: {height: 64}\n  width: 32\n", 2, "merge keys (<<:) are not read in a config"),
    "python_tag.yaml": (
        "model:\n  name: !!python/object/apply:os.system ['touch pwned']\n",
        2,
        "the tag !!python/object/apply:os.system is not read in a config",
    ),
    "nul.yaml": ("data:\n  height: 64\x00\n", 2, "a NUL byte"),
    "two_documents.yaml": ("data:\n  height: 64\n---\ndata:\n  width: 32\n", 3, "a second YAML document (after ---)"),
    "syntax.yaml": ("data:\n  height: [64\n  width: 32\n", 3, "not valid YAML: while parsing a flow sequence"),
    "deep.yaml": ("data:\n  sources: " + "[" * 2000 + "]" * 2000 + "\n", 2, "nested more than 16 levels deep"),
    "latin1.yaml": ("data:\n  root: caf\xe9\n", 2, "not UTF-8 text (byte 0xe9)"),
}


def _bad_yaml(tmp_path, name: str) -> tuple[str, str]:
    text, line, message = BAD_YAML[name]
    path = tmp_path / name
    path.write_bytes(text.encode("latin-1"))
    return str(path), f"error: {path}, line {line}: {message}"


@pytest.mark.parametrize("name", sorted(set(BAD_YAML) - {"bomb.yaml"}))
def test_a_config_file_yaml_cannot_read_safely_is_one_error_line_naming_the_line(name, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(refusals.DEBUG_VARIABLE, raising=False)
    monkeypatch.chdir(tmp_path)
    path, expected = _bad_yaml(tmp_path, name)
    # Datasets that are not there: a file read as a config ends the run there (exit 1), not in training.
    sources = ["data.sources", "['market1501']", "data.targets", "['market1501']"]
    assert train_main(["--config-file", path, "data.save_dir", str(tmp_path / "log"), *sources]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(expected), line
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # nothing written, nothing run


@pytest.mark.subprocess
def test_an_alias_bomb_is_refused_at_once_by_the_command(tmp_path):
    path, expected = _bad_yaml(tmp_path, "bomb.yaml")

    def two_gib():  # a safety net: expanded, the bomb takes gigabytes
        resource.setrlimit(resource.RLIMIT_DATA, (2 << 30, 2 << 30))

    done = subprocess.run(
        [sys.executable, "-m", "torchreid_fgdi", "--config-file", path],
        cwd=tmp_path,
        preexec_fn=two_gib,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and done.stderr.startswith(expected), done.stderr


def test_a_damaged_run_yaml_or_recorded_config_names_where_it_is(tmp_path):
    owner = tmp_path / "run" / "run.yaml"
    owner.parent.mkdir()
    owner.write_text(BAD_YAML["recursive.yaml"][0])
    with (
        RunFolder(str(owner.parent)) as folder,
        pytest.raises(ConfigError, match=f"{owner}, line 1: anchors and") as bad,
    ):
        folder.claim(load_config(CONFIG), resuming=False)
    assert str(bad.value).endswith("written by that run: restore it, or use another data.save_dir")
    assert owner.read_text() == BAD_YAML["recursive.yaml"][0]  # kept for the user to look at
    with pytest.raises(ConfigError, match="the config recorded in x.pth, line 2: the key 1 is not a name"):
        load_config_text("data:\n  1: 2\n", "the config recorded in x.pth")
    with pytest.raises(ConfigError, match="the config recorded in x.pth must hold a mapping of sections"):
        load_config_text("- data\n", "the config recorded in x.pth")
    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * 120_000)  # 1.2 MB: never read whole
    with pytest.raises(ConfigError, match=f"{big} is larger than 1 MiB; it cannot be a config"):
        load_config(str(big))


def test_quick_gelu_takes_true_false_and_none_from_the_command_line():
    assert load_config([], ["fgdi.quick_gelu", "false"]).fgdi.quick_gelu is False
    assert load_config([], ["fgdi.quick_gelu", "None"]).fgdi.quick_gelu is None


def test_sources_after_key_value_pairs_are_read_as_sources():
    cfg = load_config(
        *command_line(
            ["--config-file", CONFIG, "train.print_freq", "3", "-s", "synth_a", "synth_b", "data.workers", "1"]
        )
    )
    assert (cfg.data.sources, cfg.train.print_freq, cfg.data.workers) == (["synth_a", "synth_b"], 3, 1)


@pytest.mark.parametrize(
    "content,error",
    [
        (b"", "is empty \\(0 bytes\\)"),
        (random.Random(0).randbytes(4096), "is not a readable PyTorch file"),
        (pickle.dumps([1, 2, 3]), "is not a readable PyTorch file|holds a list"),
    ],
)
def test_a_damaged_checkpoint_names_the_file_and_the_problem(tmp_path, content, error):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=error):
        read_checkpoint(str(path))
    with pytest.raises(CheckpointError, match=f"{path}"):
        FeatureExtractor(str(path))
    torch.save([1, 2], path)
    with pytest.raises(CheckpointError, match="holds a list, not a dict of weights"):
        read_checkpoint(str(path))


def test_any_garbage_in_a_checkpoint_file_gives_a_checkpoint_error(tmp_path):
    path = tmp_path / "bad.pth"
    for seed in range(300):  # random bytes fail at many different places inside PyTorch's unpickler
        path.write_bytes(random.Random(seed).randbytes(1 + seed * 7))
        with pytest.raises(CheckpointError, match="is not a readable PyTorch file"):
            read_checkpoint(str(path))


def test_resume_auto_falls_back_to_the_newest_intact_checkpoint(run_copy, capsys):
    latest = run_copy / "checkpoints" / "latest.pth"
    latest.write_bytes(latest.read_bytes()[:1000])
    cfg = load_config(CONFIG, ["data.save_dir", str(run_copy), "model.resume", "auto"])
    assert resume_path(cfg, fgdi=True) == str(run_copy / "checkpoints" / "stage3.pth")
    assert f"skipping {latest}: checkpoint {latest} is not a readable PyTorch file" in capsys.readouterr().out


def test_a_folder_named_like_a_checkpoint_is_refused_before_any_work_and_a_save_onto_it_says_so(tiny_root, run_copy):
    latest = run_copy / "checkpoints" / "latest.pth"
    latest.unlink()
    latest.mkdir()
    before = _results(run_copy)
    with pytest.raises(CheckpointError, match=f"checkpoint {latest} is a folder, not a file: .*move the folder away"):
        _cli(tiny_root, run_copy, "model.resume", "auto")
    with pytest.raises(CheckpointError, match="is a folder, not a file"):
        read_checkpoint(str(latest))
    with pytest.raises(atomic.WriteError, match="a folder of that name is in the way: .*; nothing was written"):
        atomic.save({"w": torch.zeros(1)}, str(latest))
    assert _results(run_copy) == before and latest.is_dir()


def test_a_save_over_the_file_size_limit_says_so_and_keeps_the_previous_file(tmp_path):
    path = str(tmp_path / "latest.pth")
    atomic.save({"w": torch.zeros(10)}, path)
    before = Path(path).read_bytes()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20000, hard))
    try:
        with pytest.raises(
            atomic.WriteError, match="file-size limit \\(ulimit -f\\) is 20000 bytes.*previous file is intact"
        ):
            atomic.save({"w": torch.zeros(100000)}, path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert Path(path).read_bytes() == before and os.listdir(tmp_path) == ["latest.pth"]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (a device every write to fails: ENOSPC)")
def test_a_log_the_full_disk_cuts_short_says_so_once_the_run_is_over_and_an_error_of_the_run_comes_first(
    tmp_path, capsys
):
    log = tmp_path / "train.log-2026"
    log.symlink_to("/dev/full")
    with pytest.raises(atomic.WriteError) as err:
        with log_to_file(str(log)):
            print("x" * 20000)  # more than the log's buffer: the disk is full while the run goes on
            print("the run went on")
    assert str(err.value).startswith(f"could not complete the log {log}: the disk holding {tmp_path} is full")
    assert "the run's checkpoints and results are intact" in str(err.value) and "\n" not in str(err.value)
    assert capsys.readouterr().out.endswith("the run went on\n")
    with pytest.raises(KeyError, match="the run's own error"):
        with log_to_file(str(log)):
            print("a line the log cannot keep")
            raise KeyError("the run's own error")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (a device every write to fails: ENOSPC)")
def test_metrics_the_full_disk_cuts_short_end_the_run_in_one_line_after_its_results(tiny_root, tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.symlink_to("/dev/full")
    with pytest.raises(atomic.WriteError) as err:
        _engine(tiny_root).run(save_dir=str(tmp_path), test_only=True)  # the test's line fails: the run goes on
    assert str(err.value).startswith(f"could not complete the log {metrics}: the disk holding {tmp_path} is full")
    assert "the run's checkpoints and results are intact" in str(err.value) and "\n" not in str(err.value)
    assert "synth_d" in json.loads((tmp_path / "results.json").read_text())


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header says `width` x `height` (its pixels are not there)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunks = b""
    for kind, data in ((b"IHDR", header), (b"IDAT", zlib.compress(b"\0" * 64)), (b"IEND", b"")):
        chunks += struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunks


@pytest.mark.parametrize(
    "kind,error",
    [("fifo", "not a regular file"), ("bomb", "implausibly large"), ("truncated", "[Tt]runcated")],
)
def test_a_file_that_is_not_a_whole_image_is_named_before_any_work_or_skipped(tmp_path, kind, error):
    make_market1501(str(tmp_path))
    bad = tmp_path / MARKET / "bounding_box_test" / "0009_c2s1_000101_01.jpg"  # a gallery image
    bad.unlink(missing_ok=True)
    if kind == "fifo":
        os.mkfifo(bad)
    else:
        bad.write_bytes(_png_claiming(20000, 20000) if kind == "bomb" else _jpeg_bytes()[:400])
    with pytest.raises(UnreadableImageError, match=f"(?s)cannot be read, nothing was started.*{bad.name}: .*{error}"):
        _market(tmp_path)
    assert str(bad) in _market(tmp_path, skip_unreadable_images=True).skipped_images
    if kind != "truncated":
        with pytest.raises(UnreadableImageError, match=error):
            read_image(str(bad))


def test_search_explains_a_file_as_gallery_and_skips_unreadable_images_on_request(
    finished, tiny_root, tmp_path, capsys
):
    weights = str(finished / "checkpoints" / "stage3.pth")
    gallery = tmp_path / "gallery"
    shutil.copytree(os.path.join(tiny_root, "synth_d", "query"), gallery)
    query = str(sorted(gallery.iterdir())[0])
    with pytest.raises(NotADirectoryError, match="is a file: pass the folder"):
        search(["--query", query, "--gallery", query, "--weights", weights])
    (gallery / "broken.jpg").write_bytes(b"")
    with pytest.raises(SystemExit):
        search(["--query", query, "--gallery", str(gallery), "--weights", weights, "--out", str(tmp_path / "s")])
    assert "--skip-unreadable leaves unreadable gallery images out" in capsys.readouterr().err
    empty_query = tmp_path / "empty.jpg"
    empty_query.write_bytes(b"")
    with pytest.raises(SystemExit) as done:
        search(["--query", str(empty_query), "--gallery", str(gallery), "--weights", weights, "--skip-unreadable"])
    err = capsys.readouterr().err
    assert done.value.code == 2 and f'cannot decode image "{empty_query}"' in err
    assert "(it is a --query image: --skip-unreadable leaves out unreadable gallery images only)" in err
    ranking = search(
        [
            "--query",
            query,
            "--gallery",
            str(gallery),
            "--weights",
            weights,
            "--out",
            str(tmp_path / "s"),
            "--skip-unreadable",
        ]
    )
    assert all("broken" not in m["path"] for m in ranking[0]["matches"])
    with pytest.raises(ConfigError, match="CUDA is not available on this machine"):
        FeatureExtractor(weights, device="cuda")


def test_a_checkpoint_of_another_experiment_is_not_resumed_into_an_owned_folder(tiny_root, finished, run_copy):
    other = run_copy.parent / "other"
    _cli(tiny_root, other, "fgdi.beta", "0.5", "fgdi.stage2a_epochs", "0", "fgdi.stage2b_epochs", "0")
    stage1 = str(finished / "checkpoints" / "stage1.pth")
    with pytest.raises(RunFolderError, match=r"holds another experiment .*\n  fgdi.beta: 0.5 -> 0.1"):
        _cli(tiny_root, other, "model.resume", stage1)


def test_auto_resume_after_an_explicit_resume_continues_it_not_the_folders_older_checkpoints(
    tiny_root, run_copy, monkeypatch
):
    stage2b = str(run_copy / "checkpoints" / "stage2b.pth")

    def killed(self, **kwargs):
        raise KeyboardInterrupt  # the resumed run dies before it writes a checkpoint

    with monkeypatch.context() as patch:
        patch.setattr(ImageFGDIEngine, "run", killed)
        with pytest.raises(KeyboardInterrupt):
            _cli(tiny_root, run_copy, "model.resume", stage2b, "fgdi.stage3_epochs", "2", "fgdi.image.lr", "1e-4")
    cfg = load_config(CONFIG, ["data.save_dir", str(run_copy), "model.resume", "auto"])
    latest = resume_path(cfg, fgdi=True)
    state = read_checkpoint(latest)
    assert latest.endswith("latest.pth") and (state["stage"], state["stage_epoch"]) == ("stage3", 0)
    assert torch.equal(
        state["state_dict"]["classifier.weight"], read_checkpoint(stage2b)["state_dict"]["classifier.weight"]
    )


def _osnet(root, save_dir, *opts):
    opts = ["data.save_dir", str(save_dir), "data.height", "64", "data.width", "32", "test.plots", "false", *opts]
    return train(["--config-file", OSNET, "--root", root, "train.max_epoch", "2", "train.batch_size", "24", *opts])


def test_a_finished_baseline_resumed_again_keeps_its_epoch_and_fine_tuning_skips_only_the_classifier(
    tiny_root, tmp_path, capsys
):
    first = _osnet(tiny_root, tmp_path / "base")
    files = _files(tmp_path / "base" / "model")
    capsys.readouterr()
    again = _osnet(tiny_root, tmp_path / "base", "model.resume", "auto")
    assert sorted(p.name for p in (tmp_path / "base" / "model").iterdir()) == ["model.pth.tar-2"]
    assert again["synth_d"]["mAP"] == pytest.approx(first["synth_d"]["mAP"])
    weights = str(tmp_path / "base" / "model" / "model.pth.tar-2")
    out = capsys.readouterr().out
    assert "Last epoch = 2\n" in out  # torchreid's resume_from_checkpoint
    assert f"=> {weights} is the checkpoint of a finished run (2 of 2 epochs): nothing left to train" in out
    assert "Start training" not in out and "Checkpoint saved" not in out and "recorded in checkpoints" not in out
    assert _files(tmp_path / "base" / "model") == files  # the test repeated, nothing written over
    _osnet(
        tiny_root,
        tmp_path / "tuned",
        "model.load_weights",
        weights,
        "data.sources",
        "['synth_a']",
        "train.max_epoch",
        "1",
    )
    assert "other identities, kept as initialised: ['classifier.weight', 'classifier.bias']" in capsys.readouterr().out
