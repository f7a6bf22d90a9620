"""The CLIP towers against the authors' model run on known weights (shared/fixtures)."""

import open_clip
import pytest
import torch

from torchreid_fgdi.models.image_encoder import ViTImageEncoder, resize_pos_embed
from torchreid_fgdi.models.text import PromptLearner, TextEncoder

from .conftest import needs_fixtures, tiny_clip


def _sub(state: dict, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


@needs_fixtures
def test_vit_b16_features_match_the_authors_model(authors):
    images, _, _ = authors.inputs
    clip = open_clip.create_model("ViT-B-16-quickgelu", pretrained=None)
    clip.visual.load_state_dict(_sub(authors.state, "image_encoder."), strict=False)
    encoder = ViTImageEncoder(clip.visual, image_size=(224, 224)).eval()
    with torch.no_grad():
        x11, x12, xproj = encoder(images)
    assert x11.shape == (2, 768) and x12.shape == (2, 768) and xproj.shape == (2, 512)
    torch.testing.assert_close(torch.cat([x12, xproj], 1), authors.expected["feat"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(xproj, authors.expected["img_proj"], atol=1e-4, rtol=1e-4)


@needs_fixtures
def test_text_features_match_the_authors_model(authors):
    _, pids, dsetids = authors.inputs
    clip = open_clip.create_model("ViT-B-16-quickgelu", pretrained=None)
    prompts = PromptLearner(10, 4, clip.token_embedding, open_clip.get_tokenizer("ViT-B-16"))
    text = TextEncoder(clip)
    prompts.load_state_dict(_sub(authors.state, "promptlearner."))  # strict: the authors' layout exactly
    text.load_state_dict(_sub(authors.state, "text_encoder."))
    with torch.no_grad():
        identity = text(*prompts(pids))
        domain = text(*prompts(pids, dsetids))
    torch.testing.assert_close(identity, authors.expected["text_identity"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(domain, authors.expected["text_domain"], atol=1e-4, rtol=1e-4)


def test_position_embedding_unchanged_when_grid_matches_and_resampled_otherwise():
    pos = torch.randn(1 + 14 * 14, 32)
    assert resize_pos_embed(pos, (14, 14), (14, 14)) is pos
    resized = resize_pos_embed(pos, (14, 14), (16, 8))
    assert resized.shape == (1 + 16 * 8, 32)
    assert torch.equal(resized[0], pos[0])


@pytest.mark.parametrize("size,stride,grid", [((64, 32), None, (8, 4)), ((64, 32), 6, (10, 5))])
def test_any_input_size_and_overlapping_stride(size, stride, grid):
    clip = tiny_clip()
    encoder = ViTImageEncoder(clip.visual, image_size=size, stride=stride)
    assert encoder.grid_size == grid
    assert clip.visual.positional_embedding.shape == (1 + grid[0] * grid[1], 32)
    x11, x12, xproj = encoder(torch.randn(3, 3, *size))
    assert x11.shape == (3, 32) and x12.shape == (3, 32) and xproj.shape == (3, 16)
    xproj.sum().backward()
    assert clip.visual.conv1.weight.grad.abs().sum() > 0
