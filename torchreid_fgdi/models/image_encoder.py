"""CLIP's image tower read at the depths CLIP-FGDI uses, over open_clip's own modules."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def resize_pos_embed(pos_embed: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]) -> torch.Tensor:
    """Class row kept, patch rows resampled bilinearly to `new_grid`, as the authors do at load time.

    Unchanged (the same tensor) when the grids match.
    """
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    cls, grid = pos_embed[:1], pos_embed[1:]
    grid = grid.reshape(1, *old_grid, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=tuple(new_grid), mode="bilinear", align_corners=False)
    return torch.cat([cls, grid.permute(0, 2, 3, 1).reshape(new_grid[0] * new_grid[1], -1)])


class ViTImageEncoder(nn.Module):
    """open_clip's VisionTransformer, returning the CLS tokens of METHOD.md's three features.

    - ``x11``: after block L-1 (no LayerNorm), ``x12``: after the last block and ``ln_post``,
      ``xproj``: ``x12 @ proj``. open_clip's modules are kept as they are (their state-dict keys
      and pretrained weights load unchanged); only their intermediate outputs are read.
    - Any input size and patch stride (overlapping patches when stride < patch size): the
      position embedding is resampled once, here, to the new grid.

    Args:
        visual: ``open_clip.CLIP(...).visual`` (a ViT).
        image_size: (height, width) of the inputs.
        stride: patch stride; ``None`` keeps the patch size.
    """

    def __init__(self, visual: nn.Module, image_size: tuple[int, int], stride: int | None = None):
        super().__init__()
        self.visual = visual
        patch = visual.conv1.kernel_size
        stride = (stride, stride) if stride else visual.conv1.stride
        visual.conv1.stride = stride
        old_grid = visual.grid_size
        self.grid_size = tuple((size - p) // s + 1 for size, p, s in zip(image_size, patch, stride))
        with torch.no_grad():
            resized = resize_pos_embed(visual.positional_embedding.data, old_grid, self.grid_size)
        visual.positional_embedding = nn.Parameter(resized)
        visual.grid_size = self.grid_size
        self.width = visual.class_embedding.shape[0]
        self.output_dim = visual.proj.shape[1]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        v = self.visual
        x = v.conv1(x).flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = v.ln_pre(torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype))
        batch_first = getattr(v.transformer, "batch_first", True)
        if not batch_first:
            x = x.transpose(0, 1)
        *blocks, last = v.transformer.resblocks
        for block in blocks:
            x = block(x)
        x11, x12 = x, last(x)
        if not batch_first:
            x11, x12 = x11.transpose(0, 1), x12.transpose(0, 1)
        x12_cls = v.ln_post(x12[:, 0])
        return x11[:, 0], x12_cls, x12_cls @ v.proj
