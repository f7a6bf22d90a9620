"""The CLIP towers against the authors' model run on known weights (shared/fixtures)."""

import importlib.util
from pathlib import Path

import open_clip
import pytest
import torch

from torchreid_fgdi.models.image_encoder import ViTImageEncoder, resize_pos_embed

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"


def _fixture_module():
    spec = importlib.util.spec_from_file_location("authors_weights", FIXTURES / "authors_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="shared/fixtures is not beside this clone")
def test_vit_b16_features_match_the_authors_model():
    weights = _fixture_module()
    state = weights.make_state_dict(str(FIXTURES / "authors_fgdi_vitb16_keys.json"), seed=0)
    images, _, _ = weights.make_inputs(0)
    expected = torch.load(FIXTURES / "authors_fgdi_vitb16_outputs.pt", weights_only=False)

    clip = open_clip.create_model("ViT-B-16-quickgelu", pretrained=None)
    visual = {k[len("image_encoder.") :]: v for k, v in state.items() if k.startswith("image_encoder.")}
    clip.visual.load_state_dict(visual, strict=False)
    encoder = ViTImageEncoder(clip.visual, image_size=(224, 224)).eval()
    with torch.no_grad():
        x11, x12, xproj = encoder(images)
    assert x11.shape == (2, 768) and x12.shape == (2, 768) and xproj.shape == (2, 512)
    torch.testing.assert_close(torch.cat([x12, xproj], 1), expected["feat"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(xproj, expected["img_proj"], atol=1e-4, rtol=1e-4)


def test_position_embedding_unchanged_when_grid_matches_and_resampled_otherwise():
    pos = torch.randn(1 + 14 * 14, 32)
    assert resize_pos_embed(pos, (14, 14), (14, 14)) is pos
    resized = resize_pos_embed(pos, (14, 14), (16, 8))
    assert resized.shape == (1 + 16 * 8, 32)
    assert torch.equal(resized[0], pos[0])


@pytest.mark.parametrize("size,stride,grid", [((64, 32), None, (8, 4)), ((64, 32), 6, (10, 5))])
def test_any_input_size_and_overlapping_stride(size, stride, grid):
    clip = open_clip.CLIP(
        embed_dim=16,
        vision_cfg=open_clip.CLIPVisionCfg(layers=2, width=32, head_width=16, patch_size=8, image_size=32),
        text_cfg=open_clip.CLIPTextCfg(layers=1, width=16, heads=2, context_length=77),
        quick_gelu=True,
    )
    encoder = ViTImageEncoder(clip.visual, image_size=size, stride=stride)
    assert encoder.grid_size == grid
    assert clip.visual.positional_embedding.shape == (1 + grid[0] * grid[1], 32)
    x11, x12, xproj = encoder(torch.randn(3, 3, *size))
    assert x11.shape == (3, 32) and x12.shape == (3, 32) and xproj.shape == (3, 16)
    xproj.sum().backward()
    assert clip.visual.conv1.weight.grad.abs().sum() > 0


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="shared/fixtures is not beside this clone")
def test_text_features_match_the_authors_model():
    from torchreid_fgdi.models.text import PromptLearner, TextEncoder

    weights = _fixture_module()
    state = weights.make_state_dict(str(FIXTURES / "authors_fgdi_vitb16_keys.json"), seed=0)
    _, pids, dsetids = weights.make_inputs(0)
    expected = torch.load(FIXTURES / "authors_fgdi_vitb16_outputs.pt", weights_only=False)

    clip = open_clip.create_model("ViT-B-16-quickgelu", pretrained=None)
    prompts = PromptLearner(10, 4, clip.token_embedding, open_clip.get_tokenizer("ViT-B-16"))
    text = TextEncoder(clip)
    for module, prefix in ((prompts, "promptlearner."), (text, "text_encoder.")):
        sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        module.load_state_dict(sub)  # strict: every key of the authors' layout, nothing else
    with torch.no_grad():
        identity = text(*prompts(pids))
        domain = text(*prompts(pids, dsetids))
    torch.testing.assert_close(identity, expected["text_identity"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(domain, expected["text_domain"], atol=1e-4, rtol=1e-4)
