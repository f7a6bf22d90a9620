"""`FeatureExtractor(config_file=...)` on a torchreid baseline's checkpoint, which records no config:
the model and test transform come from the config given with it, the weights from the checkpoint.
Its fingerprint, and the metadata an export carries for a deployment without this package."""

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
import torch.nn.functional as F
import torchreid
import torchvision
from PIL import Image

from torchreid_fgdi.cli import export as export_cli
from torchreid_fgdi.cli import search as search_cli
from torchreid_fgdi.config import load_config
from torchreid_fgdi.integration.registry import transform_registry
from torchreid_fgdi.models.checkpoints import RECORD_KEY
from torchreid_fgdi.tools import features as inference
from torchreid_fgdi.tools.export import TORCHSCRIPT_METADATA, export
from torchreid_fgdi.tools.features import FeatureExtractor, preprocessing
from torchreid_fgdi.utils.checkpoint import CheckpointError

BASELINE = str(Path(__file__).parents[1] / "configs" / "synthetic" / "osnet_ain_x0_25.yaml")


def save_baseline(folder: Path, seed: int = 0) -> tuple[str, torch.nn.Module]:
    """A checkpoint as torchreid's engines save it (no config inside) and the model it holds (eval)."""
    torch.manual_seed(seed)
    model = torchreid.models.build_model("osnet_ain_x0_25", 7, loss="triplet", pretrained=False)
    for module in model.modules():  # batch-norm statistics away from their initial values
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    torchreid.utils.save_checkpoint({"state_dict": model.state_dict(), "epoch": 3, "rank1": 0.5}, str(folder))
    return str(folder / "model.pth.tar-3"), model.eval()


@pytest.fixture
def baseline(tmp_path):
    return save_baseline(tmp_path)


def _person(seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(90, 40, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def test_a_baseline_checkpoint_gives_its_models_features_through_the_configs_transform(baseline, monkeypatch):
    path, model = baseline
    loaded, load = [], torch.load
    monkeypatch.setattr(
        torch, "load", lambda source, *args, **kwargs: loaded.append(source) or load(source, *args, **kwargs)
    )
    extractor = FeatureExtractor(path, config_file=BASELINE, device="cpu")
    assert loaded == [path]  # the checkpoint is read once
    assert type(extractor.model) is type(model) and not extractor.model.training
    assert extractor.model.classifier.out_features == 7  # classes read off the weights
    # The config's test transform: torchreid's resize to 64 x 32 and ImageNet mean / std.
    transform = torchreid.data.transforms.build_transforms(64, 32, transforms=None)[1]
    images = [_person(0), _person(1)]
    with torch.no_grad():
        want = F.normalize(model(torch.stack([transform(image) for image in images])), dim=1)
    torch.testing.assert_close(extractor(images), want)


def _refusal(command, argv: list[str], capsys) -> str:
    """The one ``error:`` line `command` refuses `argv` with (exit status 1)."""
    assert command(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_a_baseline_checkpoint_without_a_config_file_says_to_pass_one(baseline, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TORCHREID_FGDI_DEBUG", raising=False)
    path, _ = baseline
    fix = "does not record its config (the checkpoints of this package's runs do): pass --config-file <the training"
    with pytest.raises(CheckpointError, match=r"does not record its config .*pass --config-file <the training config>"):
        FeatureExtractor(path, device="cpu")
    image = tmp_path / "gallery" / "a.png"
    image.parent.mkdir()
    _person(0).save(image)
    out = ["--weights", path, "--out", str(tmp_path / "out")]
    assert f"error: {path} {fix}" in _refusal(export_cli.main, [*out, "--format", "torchscript"], capsys)
    search_argv = [*out, "--query", str(image), "--gallery", str(image.parent), "--index", str(tmp_path / "i.pt")]
    assert f"error: {path} {fix}" in _refusal(search_cli.main, search_argv, capsys)
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_of_another_input_size_than_its_config_says_which_config_to_pass(tmp_path, capsys, monkeypatch):
    """A ViT's position embedding that fits the config's size, the variant's default size and a square
    grid alike badly: the config is not the training one (the fix is not the Python-only ckpt_grid=)."""
    monkeypatch.delenv("TORCHREID_FGDI_DEBUG", raising=False)
    model = torchreid.models.build_model("fgdi_tiny", 7, num_domains=3, pretrained=False, image_size=(128, 64))
    state = {k: v for k, v in model.state_dict().items() if k != RECORD_KEY}  # as saved before records existed
    torchreid.utils.save_checkpoint({"state_dict": state, "epoch": 1, "rank1": 0.5}, str(tmp_path))
    path, config = str(tmp_path / "model.pth.tar-1"), str(Path(BASELINE).with_name("fgdi_tiny.yaml"))
    err = _refusal(export_cli.main, ["--weights", path, "--config-file", config, "--out", str(tmp_path / "x")], capsys)
    assert err.startswith(
        f"error: {path}: its position embedding holds 128 patches, which fit fgdi_tiny neither at data.height x "
        "data.width 64x32 nor at its default size, nor as a square grid: the weights were trained with another "
        "config; pass --config-file <the training config> (its model.name, data.height and data.width)"
    )
    assert "ckpt_grid" not in err and not (tmp_path / "x").exists()

    torch.save({"state_dict": model.state_dict(), "epoch": 1}, path)  # a state dict that records its model
    err = _refusal(export_cli.main, ["--weights", path, "--config-file", config, "--out", str(tmp_path / "x")], capsys)
    assert err.startswith(
        f"error: {path}: its weights record another model than the config gives (data.height x data.width "
        "128x64 -> 64x32): set these keys as the weights record them, or leave out the config file"
    )
    assert not (tmp_path / "x").exists()


def test_a_baseline_checkpoint_with_another_models_config_is_refused(baseline, tmp_path):
    path, _ = baseline
    other = tmp_path / "osnet_x0_25.yaml"
    other.write_text(f"_BASE_: {BASELINE}\nmodel:\n  name: osnet_x0_25\n")
    with pytest.raises(CheckpointError, match="does not fit OSNet .*another model's checkpoint") as refused:
        FeatureExtractor(path, config_file=str(other), device="cpu")
    assert str(refused.value).startswith(f"{path} does not fit")  # before: every weight printed in place of the name


def test_the_extractor_prints_nothing_and_its_fingerprint_follows_the_weights_and_input_size(
    baseline, tmp_path, capsys
):
    path, _ = baseline
    capsys.readouterr()
    extractor = FeatureExtractor(path, config_file=BASELINE, device="cpu")
    assert capsys.readouterr().out == ""  # torchreid's "Building train transforms ..." is not shown
    assert FeatureExtractor(path, config_file=BASELINE, device="cpu").fingerprint == extractor.fingerprint
    other_weights, _ = save_baseline(tmp_path / "other", seed=1)
    assert FeatureExtractor(other_weights, config_file=BASELINE, device="cpu").fingerprint != extractor.fingerprint
    taller = tmp_path / "taller.yaml"
    taller.write_text(f"_BASE_: {BASELINE}\ndata:\n  height: 128\n")
    assert FeatureExtractor(path, config_file=str(taller), device="cpu").fingerprint != extractor.fingerprint


def _deployed_input(meta: dict, image: Image.Image) -> np.ndarray:
    """The 3 x H x W input the metadata describes, made with PIL and numpy alone."""
    filters = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
    size = (int(meta["input_width"]), int(meta["input_height"]))
    assert meta["pixel_scale"] == "1/255"
    x = np.asarray(image.convert("RGB").resize(size, filters[meta["resize"]]), dtype=np.float32) / 255
    if meta["normalization"] == "mean_std":
        x = (x - np.float32(json.loads(meta["norm_mean"]))) / np.float32(json.loads(meta["norm_std"]))
    else:
        x = (x - x.mean(axis=(0, 1))) / np.sqrt(x.var(axis=(0, 1)) + np.float32(meta["norm_eps"]))
    return x.transpose(2, 0, 1)


def test_an_export_carries_what_a_deployment_needs_in_its_metadata(baseline, tmp_path):
    path, _ = baseline
    written = export(path, str(tmp_path / "export"), config_file=BASELINE)
    meta = {prop.key: prop.value for prop in onnx.load(written["onnx"]).metadata_props}
    assert (meta["model_name"], meta["input_height"], meta["input_width"]) == ("osnet_ain_x0_25", "64", "32")
    assert (meta["resize"], meta["normalization"], meta["dynamic_axes"]) == ("bilinear", "mean_std", "batch")
    images = [_person(0), _person(1), _person(2)]
    session = onnxruntime.InferenceSession(written["onnx"], providers=["CPUExecutionProvider"])
    batch = np.stack([_deployed_input(meta, image) for image in images])
    (features,) = session.run([meta["output_name"]], {meta["input_name"]: batch})
    assert features.shape == (3, int(meta["feature_dim"])) == (3, 512)
    want = FeatureExtractor(path, config_file=BASELINE, device="cpu")(images)
    torch.testing.assert_close(torch.from_numpy(features), want, atol=1e-4, rtol=0)
    taller = np.zeros((1, 3, 128, 32), dtype=np.float32)
    with pytest.raises(onnxruntime.capi.onnxruntime_pybind11_state.InvalidArgument, match="invalid dimensions"):
        session.run([meta["output_name"]], {meta["input_name"]: taller})  # height and width are fixed
    extra = {TORCHSCRIPT_METADATA: ""}
    torch.jit.load(written["torchscript"], _extra_files=extra)
    assert json.loads(extra[TORCHSCRIPT_METADATA]) == meta


def test_the_extractor_builds_the_test_transform_where_torchreids_data_managers_do(monkeypatch):
    """One owner of what ``data.transforms`` means: a pipeline registered under a name is the one a
    FeatureExtractor applies, as torchreid's data managers do (it picked the authors' pipeline itself)."""
    test = torchvision.transforms.Compose([torchvision.transforms.ToTensor()])
    monkeypatch.setitem(transform_registry(), "clip_fgdi", lambda height, width: (test, test))
    assert inference.test_transform(load_config([], ["data.transforms", "clip_fgdi"])) is test
    assert torchreid.data.transforms.build_transforms(64, 32, transforms=["clip_fgdi"])[1] is test
    default = inference.test_transform(load_config([], ["data.transforms", "['random_flip', 'color_jitter']"]))
    assert [type(t).__name__ for t in default.transforms] == ["Resize", "ToTensor", "Normalize"]


def test_the_per_image_preprocessing_metadata_reproduces_the_authors_test_transform():
    cfg = load_config([], ["data.transforms", "clip_fgdi", "data.height", "64", "data.width", "32"])
    meta = preprocessing(cfg)
    assert (meta["resize"], meta["normalization"]) == ("bicubic", "per_image")
    image = _person(3)
    want = inference.test_transform(cfg)(image).numpy()
    np.testing.assert_allclose(_deployed_input(meta, image), want, atol=1e-5, rtol=0)
