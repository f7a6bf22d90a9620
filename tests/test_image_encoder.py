"""The ResNet tower's attention-pool position embedding: resampled bilinearly from CLIP's grid to the
input size's when the encoder is built, and again on the fly for inputs of another size. Expected
embeddings are worked out row by row here, not with the resampling code under test."""

import copy

import torch

from tests.test_fgdi_variants import TINY_RN  # a random CLIP ResNet for 64 x 64 inputs: a 2 x 2 pool grid
from torchreid_fgdi.models import build_image_encoder, create_clip


def _doubled(rows: torch.Tensor) -> torch.Tensor:
    """Bilinear 2x upsampling along the first axis (half-pixel centres, edges clamped): output 2k
    sits a quarter of a step before input k, output 2k+1 a quarter after."""
    before = torch.cat([rows[:1], rows[:-1]])  # row k-1, clamped at the first
    after = torch.cat([rows[1:], rows[-1:]])  # row k+1, clamped at the last
    out = torch.empty(2 * len(rows), *rows.shape[1:], dtype=rows.dtype)
    out[0::2] = 0.25 * before + 0.75 * rows
    out[1::2] = 0.75 * rows + 0.25 * after
    return out


def _grid(embedding: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    return embedding[1:].reshape(rows, cols, -1)  # open_clip flattens the grid row by row


def _tiny_resnet():
    torch.manual_seed(0)
    clip, _ = create_clip(TINY_RN)
    return clip.visual


def test_the_encoder_resamples_clips_grid_to_the_input_sizes_when_built():
    visual = _tiny_resnet()
    native = visual.attnpool.positional_embedding.detach().clone()  # 1 + 2 x 2 rows
    encoder = build_image_encoder(visual, (64, 32))  # layer4 at stride 16: a 4 x 2 grid
    assert encoder.grid_size == (4, 2)
    got = encoder.visual.attnpool.positional_embedding.detach()
    torch.testing.assert_close(got[0], native[0])  # the class position is kept
    want = _doubled(_grid(native, 2, 2))  # rows 2 -> 4; columns 2 -> 2 unchanged
    torch.testing.assert_close(_grid(got, 4, 2), want)


def test_an_input_of_another_size_meets_the_embedding_resampled_to_its_grid():
    encoder = build_image_encoder(_tiny_resnet(), (64, 32)).eval()
    kept = encoder.visual.attnpool.positional_embedding.detach()
    resampled = _doubled(_doubled(_grid(kept, 4, 2)).transpose(0, 1)).transpose(0, 1)  # 4 x 2 -> 8 x 4
    reference = copy.deepcopy(encoder)  # built for the larger grid, holding that embedding
    reference.visual.attnpool.positional_embedding = torch.nn.Parameter(torch.cat([kept[:1], resampled.flatten(0, 1)]))
    reference.grid_size = (8, 4)
    images = torch.randn(2, 3, 128, 64)
    with torch.no_grad():
        got, want = encoder(images), reference(images)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)
    assert torch.equal(encoder.visual.attnpool.positional_embedding.detach(), kept)  # the parameter stays as built
