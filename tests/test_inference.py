"""`FeatureExtractor(config_file=...)` on a torchreid baseline's checkpoint, which records no config:
the model and test transform come from the config given with it, the weights from the checkpoint."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchreid
from PIL import Image

from torchreid_fgdi.checkpoint_file import CheckpointError
from torchreid_fgdi.inference import FeatureExtractor

BASELINE = str(Path(__file__).parents[1] / "configs" / "synthetic" / "osnet_ain_x0_25.yaml")


@pytest.fixture
def baseline(tmp_path):
    """A checkpoint as torchreid's engines save it (no config inside) and the model it holds (eval)."""
    torch.manual_seed(0)
    model = torchreid.models.build_model("osnet_ain_x0_25", 7, loss="triplet", pretrained=False)
    for module in model.modules():  # batch-norm statistics away from their initial values
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    torchreid.utils.save_checkpoint({"state_dict": model.state_dict(), "epoch": 3, "rank1": 0.5}, str(tmp_path))
    return str(tmp_path / "model.pth.tar-3"), model.eval()


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


def test_a_baseline_checkpoint_without_a_config_file_says_to_pass_one(baseline):
    path, _ = baseline
    with pytest.raises(ValueError, match="does not record its config .*pass the training config file"):
        FeatureExtractor(path, device="cpu")


def test_a_baseline_checkpoint_with_another_models_config_is_refused(baseline, tmp_path):
    path, _ = baseline
    other = tmp_path / "osnet_x0_25.yaml"
    other.write_text(f"_BASE_: {BASELINE}\nmodel:\n  name: osnet_x0_25\n")
    with pytest.raises(CheckpointError, match="does not fit OSNet .*another model's checkpoint"):
        FeatureExtractor(path, config_file=str(other), device="cpu")
