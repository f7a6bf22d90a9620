"""What a run leaves and what comes after it: logs, progress, plots, inference, search, export."""

import base64
import contextlib
import io
import json
import os
import shutil

import numpy as np
import onnxruntime
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.test_fgdi_engine import CONFIG, SHORT
from torchreid_fgdi.cli import search as search_cli
from torchreid_fgdi.cli.train import train
from torchreid_fgdi.config import RunSettings, load_config, load_config_text
from torchreid_fgdi.data import DomainImageDataManager
from torchreid_fgdi.engine import diagnostics, progress
from torchreid_fgdi.engine.run_log import read_metrics
from torchreid_fgdi.evaluation import rank_pictures
from torchreid_fgdi.tools import export as export_module
from torchreid_fgdi.tools import search
from torchreid_fgdi.tools.export import export
from torchreid_fgdi.tools.features import FeatureExtractor, checkpoint_model_kwargs

STAGE_TERMS = {
    "stage1": {"loss", "id", "triplet", "acc", "lr"},
    "stage2a": {"loss", "i2t", "t2i", "domain", "domain_acc", "lr"},
    "stage2b": {"loss", "i2t", "t2i", "domain", "domain_acc", "lr"},
    "stage3": {"loss", "id", "triplet", "i2t", "guide", "acc", "lr"},
}
TARGETS = ("synth_a", "synth_b", "synth_c", "synth_d")


@pytest.fixture(scope="module")
def run(tiny_root, tmp_path_factory):
    """One short run through the command line with progress bars forced on: (save_dir, stderr)."""
    save_dir = tmp_path_factory.mktemp("run")
    stderr = io.StringIO()
    os.environ["TORCHREID_FGDI_PROGRESS"] = "1"
    try:
        with contextlib.redirect_stderr(stderr):
            train(["--config-file", CONFIG, "--root", tiny_root, "data.save_dir", str(save_dir), *SHORT])
    finally:
        del os.environ["TORCHREID_FGDI_PROGRESS"]
    return save_dir, stderr.getvalue()


def test_tensorboard_has_every_loss_term_lr_and_accuracy_per_stage_and_the_test_metrics(run):
    save_dir, _ = run
    events = EventAccumulator(str(save_dir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for stage, terms in STAGE_TERMS.items():
        assert {f"{stage}/{term}" for term in terms} <= tags, stage
        assert [e.step for e in events.Scalars(f"{stage}/loss")] == [1, 2]  # one point per epoch
    for target in TARGETS:
        assert {f"test/{target}/{m}" for m in ("mAP", "Rank-1", "Rank-5", "Rank-10")} <= tags
    final = json.loads((save_dir / "results.json").read_text())["synth_d"]["mAP"]
    assert events.Scalars("test/synth_d/mAP")[-1].value == pytest.approx(final)


def test_metrics_file_and_plain_text_log(run):
    save_dir, _ = run
    rows = read_metrics(str(save_dir))
    for stage, terms in STAGE_TERMS.items():
        stage_rows = [r for r in rows if r["group"] == stage]
        assert [r["step"] for r in stage_rows] == [1, 2] and terms <= set(stage_rows[0])
    assert all(0 <= r[k] <= 100 for r in rows for k in ("acc", "domain_acc") if k in r)  # percent, as torchreid's
    (log,) = save_dir.glob("train.log-*")
    text = log.read_text()
    for line in ("=> stage1 epoch 2/2 (run epoch 2/8)", "=> stage2a epoch 2/2 (run epoch 4/8)", "##### synth_d: mAP"):
        assert line in text


def test_progress_bars_cover_every_stage_and_extraction_and_stay_quiet_off_a_terminal(run, capsys):
    _, stderr = run
    for desc in ("stage1", "image features", "stage2a", "stage2b", "stage3", "synth_d query", "synth_d gallery"):
        assert f"{desc}: 100%" in stderr, desc
    assert "<00:00" in stderr  # the ETA column
    list(progress.track(range(3), "quiet"))  # pytest's captured stderr is not a terminal
    assert capsys.readouterr().err == ""


def test_plots_are_written_at_the_end_of_the_run(run):
    save_dir, _ = run
    plots = save_dir / "plots"
    sizes = {name: Image.open(plots / name).size for name in ("losses.png", "cmc.png", "domains.png")}
    assert sizes["losses.png"][0] > 3 * sizes["losses.png"][1]  # four stage panels side by side
    assert sizes["domains.png"][0] > 1.8 * sizes["domains.png"][1]  # before and after stage 3
    assert not list(plots.glob("*.pt"))  # the feature dumps live in features/
    before = torch.load(save_dir / "features" / "domains_before_stage3.pt", weights_only=True)
    after = torch.load(save_dir / "features" / "domains_after_stage3.pt", weights_only=True)
    assert before["domains"] == after["domains"] and set(before["domains"]) == set(TARGETS)
    assert before["unseen"] == after["unseen"] == ["synth_d"]
    assert len(before["features"]) == len(before["domains"])
    assert not torch.equal(before["features"], after["features"])  # stage 3 moved them
    for target in TARGETS:
        pictures = sorted((plots / "visrank" / target).glob("*.png"))
        assert len(pictures) == 4
        picture = np.asarray(Image.open(pictures[0]).convert("RGB"))
        assert picture.shape[0] >= rank_pictures.MIN_HEIGHT  # 64 x 32 crops upscaled
        colours = {tuple(c) for c in picture.reshape(-1, 3)}
        assert rank_pictures.QUERY in colours and colours & {rank_pictures.TRUE_MATCH, rank_pictures.WRONG_MATCH}


def test_a_run_reports_its_diagnostics_in_the_log_and_the_results(run):
    """A healthy-ish run: every measure of the text stages, in range, keyed on the stages that ran."""
    save_dir, _ = run
    found = json.loads((save_dir / "results.json").read_text())["diagnostics"]
    assert set(found) == {"identity_prompts", "domain_prompts", "prompt_cosine", "guide", "test_features", "warnings"}
    for key, stage in (("identity_prompts", "stage2a"), ("domain_prompts", "stage2b")):
        section = found[key]
        assert section["stage"] == stage and section["identities"] == 36  # the tiny sources' 3 x 12
        assert 0 <= section["domain_accuracy"] <= 1 and section["chance"] == pytest.approx(1 / 3)
        assert min(section["moved"].values()) > 0.01  # prompt vectors and classifier trained
    assert -1 <= found["prompt_cosine"]["min"] <= found["prompt_cosine"]["mean"] <= 1
    guide = [r["guide"] for r in read_metrics(str(save_dir)) if r["group"] == "stage3"]
    assert found["guide"]["per_epoch"] == guide and found["guide"]["inert"] == pytest.approx(np.log(2))
    features = found["test_features"]
    assert features["k"] == 10 and 0 < features["chance"] < min(features["before"], features["after"]) <= 1
    (log,) = save_dir.glob("train.log-*")
    block = log.read_text().split(diagnostics.TITLE + "\n")[1].split("#####")[0]
    assert block.splitlines() == [f"   {line}" for line in diagnostics.lines(found)]
    assert block in (save_dir / "results.md").read_text().replace("- ", "   ")


def test_a_baseline_training_run_with_visrank_and_rerank_draws_and_re_ranks_its_tests(tiny_root, tmp_path):
    """torchreid's `Engine.run` raises a ValueError for visrank outside test_only and leaves rerank out
    of the tests it runs while training; the run draws the pictures and re-ranks its table."""
    baseline = CONFIG.replace("fgdi_tiny.yaml", "osnet_ain_x0_25.yaml")
    opts = ["data.sources", "synth_a", "data.targets", "synth_d", "train.max_epoch", "1", "train.batch_size", "24"]
    opts += ["test.plots", "false", "test.visrank_topk", "3", "data.save_dir", str(tmp_path)]
    command = ["--config-file", baseline, "--root", tiny_root, *opts]
    trained = train([*command, "test.visrank", "True", "test.rerank", "True"])
    queries = sorted(os.listdir(os.path.join(tiny_root, "synth_d", "query")))
    pictures = sorted(p.name for p in (tmp_path / "visrank_synth_d").iterdir())
    assert pictures == [os.path.splitext(q)[0] + ".png" for q in queries]
    weights = tmp_path / "model" / "model.pth.tar-1"
    evaluate = [*command, "test.evaluate", "True", "model.load_weights", str(weights)]
    reranked = train([*evaluate, "test.rerank", "True"])["synth_d"]["mAP"]
    plain = train([*evaluate, "test.rerank", "False"])["synth_d"]["mAP"]
    assert trained["synth_d"]["mAP"] == pytest.approx(reranked) and reranked != pytest.approx(plain)
    assert "diagnostics" not in json.loads((tmp_path / "results.json").read_text())  # no text stages


def _query_batch(tiny_root, save_dir):
    extractor = FeatureExtractor(str(save_dir / "checkpoints" / "stage3.pth"), device="cpu")
    kwargs = {**RunSettings.from_config(extractor.cfg).data, "root": tiny_root, "workers": 0, "use_gpu": False}
    datamanager = DomainImageDataManager(**kwargs)
    loader = datamanager.test_loader["synth_d"]["query"]
    return extractor, next(iter(loader)), [item[0] for item in loader.dataset.data[: loader.batch_size]]


def test_feature_extractor_takes_paths_pil_images_arrays_and_tensors(tiny_root, run):
    extractor, batch, paths = _query_batch(tiny_root, run[0])
    from_paths = extractor(paths)
    assert from_paths.shape[0] == len(paths) and torch.allclose(from_paths.norm(dim=1), torch.ones(len(paths)))
    torch.testing.assert_close(extractor(batch["img"]), from_paths)  # the data manager's test pipeline
    torch.testing.assert_close(extractor([Image.open(p) for p in paths]), from_paths)
    torch.testing.assert_close(extractor([np.asarray(Image.open(p).convert("RGB")) for p in paths]), from_paths)
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        extractor(np.zeros((4, 4), dtype=np.uint8))
    extractor.batch_size = 2  # images are read and transformed a batch at a time
    torch.testing.assert_close(extractor(paths), from_paths)


def test_a_checkpoint_model_keeps_the_activation_of_the_clip_it_was_trained_from():
    def kwargs(*opts):
        return checkpoint_model_kwargs(load_config([], ["model.name", "fgdi_vit_b16", *opts]))

    assert kwargs("model.pretrained", "True")["quick_gelu"] is True  # OpenAI's CLIP: QuickGELU
    assert kwargs("fgdi.clip_weights", "laion2b_s34b_b88k")["quick_gelu"] is False  # a GELU tag
    assert kwargs("fgdi.clip_weights", "/the/training/machine/clip.pt")["quick_gelu"] is True  # a file not here
    assert kwargs("fgdi.clip_weights", "laion2b_s34b_b88k")["pretrained"] is False  # weights: the checkpoint's


def test_a_checkpoint_config_loads_on_a_machine_unlike_the_training_one():
    text = load_config([]).dump().replace("test_precision: fp32", "test_precision: fp16")
    assert load_config_text(text).fgdi.test_precision == "fp16"  # trained on CUDA, read on a CPU


def test_search_ranks_a_gallery_folder_and_writes_a_page(run, tiny_root, tmp_path):
    gallery = tmp_path / "gallery"
    shutil.copytree(os.path.join(tiny_root, "synth_d", "bounding_box_test"), gallery / "nested")
    queries = sorted(str(p) for p in (gallery / "nested").glob("*.jpg"))[:2]  # in the gallery: must come first
    out = tmp_path / "out"
    args = ["--query", *queries, "--gallery", str(gallery), "--weights", str(run[0] / "checkpoints" / "stage3.pth")]
    ranking = search_cli.search([*args, "--topk", "5", "--out", str(out), "--device", "cpu"])
    assert [entry["matches"][0]["path"] for entry in ranking] == queries
    assert all(entry["matches"][0]["similarity"] == pytest.approx(1.0, abs=1e-5) for entry in ranking)
    assert all(len(entry["matches"]) == 5 for entry in ranking)
    similarities = [m["similarity"] for m in ranking[0]["matches"]]
    assert similarities == sorted(similarities, reverse=True)
    assert json.loads((out / "ranking.json").read_text()) == ranking
    page = (out / "index.html").read_text()
    assert page.count("data:image/jpeg;base64,") == 2 * 6
    thumbnail = page.split("data:image/jpeg;base64,")[1].split('"')[0]
    assert Image.open(io.BytesIO(base64.b64decode(thumbnail))).size == search.THUMB
    picture = np.asarray(Image.open(out / "ranking.png").convert("RGB"))
    query_frame_rows = (picture == rank_pictures.QUERY).all(axis=2).any(axis=1).astype(int)
    assert np.diff(query_frame_rows, prepend=0).clip(0).sum() == 2  # one framed query per row
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        search.list_images(str(tmp_path / "empty"))


def test_onnx_and_torchscript_exports_match_pytorch(tiny_root, run, tmp_path, monkeypatch):
    extractor, batch, _ = _query_batch(tiny_root, run[0])
    written = export(str(run[0] / "checkpoints" / "stage3.pth"), str(tmp_path))
    images = batch["img"][:3]
    want = extractor(images)
    session = onnxruntime.InferenceSession(written["onnx"], providers=["CPUExecutionProvider"])
    from_onnx = torch.from_numpy(session.run(["features"], {"images": images.numpy()})[0])
    torch.testing.assert_close(from_onnx, want, atol=1e-4, rtol=0)
    from_torchscript = torch.jit.load(written["torchscript"])(images)
    torch.testing.assert_close(from_torchscript, want, atol=1e-5, rtol=0)
    before = open(written["onnx"], "rb").read()
    monkeypatch.setattr(export_module, "TOLERANCE", -1.0)  # every export now "differs"
    with pytest.raises(RuntimeError, match="the onnx export differs from PyTorch .* not written"):
        export(str(run[0] / "checkpoints" / "stage3.pth"), str(tmp_path), ["onnx"])
    assert open(written["onnx"], "rb").read() == before and len(list(tmp_path.iterdir())) == 2
