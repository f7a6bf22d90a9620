"""OpenAI's CLIP file put by hand where the offline error says, then read through torchreid's own
keys (``model.pretrained True``): by torchreid's ``scripts/main.py`` and by ``torchreid-fgdi``.

The file is a tiny CLIP standing in for ViT-B/16 (open_clip's ViT-B-16 config swapped for a tiny
one, the registry's sha256 for the file's): the path and the lookup are the real ones."""

import dataclasses

import pytest
import torch

from tests.test_dropin import ONE_EPOCH_EACH, _upstream, needs_upstream, patient
from tests.test_fgdi_engine import CONFIG
from tests.test_hub import accept_as_published, offline, stand_in_backbone
from torchreid_fgdi.cli import train
from torchreid_fgdi.models import create_clip, hub
from torchreid_fgdi.models.variants import TINY_CLIP

NAME = "clip-vit-b16-openai"
SMALL = [
    "data.height",
    "64",
    "data.width",
    "32",
    "data.sources",
    "['synth_a', 'synth_b']",
    "data.targets",
    "['synth_d']",
]


@pytest.fixture
def openai_file_by_hand(tmp_path, monkeypatch):
    """An OpenAI-format CLIP (a TorchScript archive) at the path the offline error names, under a
    temporary TORCH_HOME: (path, the CLIP it holds)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    path = tmp_path / "torch" / "hub" / "checkpoints" / hub.REGISTRY[NAME].filename
    assert str(path) == hub.weights_path(NAME)
    source, _ = create_clip(TINY_CLIP)
    source = source.half().eval()  # OpenAI ships fp16
    images, tokens = torch.randn(1, 3, 64, 64).half(), torch.zeros(1, 77, dtype=torch.long)
    path.parent.mkdir(parents=True)
    torch.jit.trace(source, (images, tokens), check_trace=False).save(str(path))
    return path, source.float()


def _same_text_tower(state: dict, source) -> bool:
    saved = source.transformer.state_dict()
    return all(torch.equal(state[f"text_encoder.transformer.{key}"].float(), saved[key]) for key in saved)


def test_torchreid_fgdi_trains_fgdi_from_the_file_with_model_pretrained_true(
    openai_file_by_hand, tiny_root, tmp_path, monkeypatch
):
    path, source = openai_file_by_hand
    offline(monkeypatch)
    stand_in_backbone("ViT-B-16", monkeypatch)
    accept_as_published(NAME, path, monkeypatch)
    save_dir = tmp_path / "run"
    argv = ["--config-file", CONFIG, "--root", tiny_root, "data.save_dir", str(save_dir), *ONE_EPOCH_EACH, *SMALL]
    assert train.main([*argv, "model.name", "fgdi", "model.pretrained", "True"]) == 0
    state = torch.load(save_dir / "checkpoints" / "stage3.pth", map_location="cpu", weights_only=True)
    assert _same_text_tower(state["state_dict"], source)  # the frozen text tower is the file's


@needs_upstream
@patient
@pytest.mark.subprocess
def test_torchreids_main_trains_fgdi_from_the_file_with_its_default_model_pretrained(
    openai_file_by_hand, tiny_root, tmp_path
):
    path, source = openai_file_by_hand
    entry = dataclasses.replace(hub.REGISTRY[NAME], sha256=hub.sha256sum(str(path)))
    preamble = (  # in torchreid's process, what the fixtures above do in this one
        "import open_clip, torchreid_fgdi.models.hub as hub, torchreid_fgdi.models.clip_weights as clip_weights\n"
        f"open_clip.factory._MODEL_CONFIGS['ViT-B-16'] = {TINY_CLIP!r}\n"
        f"hub.REGISTRY[{NAME!r}] = hub.{entry!r}\n"
        "hub.host_reachable = clip_weights.host_reachable = lambda *args, **kwargs: False\n"
    )
    save_dir = tmp_path / "upstream"
    _upstream(tiny_root, save_dir, "model.name", "fgdi", *SMALL, "loss.name", "softmax", preamble=preamble)
    state = torch.load(save_dir / "model" / "model.pth.tar-1", map_location="cpu", weights_only=True)
    assert _same_text_tower(state["state_dict"], source)
