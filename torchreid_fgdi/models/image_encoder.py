"""CLIP's image tower read at the depths CLIP-FGDI uses, over open_clip's own modules.

Both encoders return three features per image (docs/method.md): ``(last_but_one, last, projected)``.
open_clip's modules are kept as they are, so their state-dict keys and pretrained weights load
unchanged; only their intermediate outputs are read.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


def resize_pos_embed(pos_embed: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]) -> torch.Tensor:
    """Class row kept, grid rows resampled bilinearly to `new_grid`, as the authors do at load time.

    Unchanged (the same tensor) when the grids match.
    """
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    cls, grid = pos_embed[:1], pos_embed[1:]
    grid = grid.reshape(1, *old_grid, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=tuple(new_grid), mode="bilinear", align_corners=False)
    return torch.cat([cls, grid.permute(0, 2, 3, 1).reshape(new_grid[0] * new_grid[1], -1)])


def _resized(param: nn.Parameter, old_grid: tuple[int, int], new_grid: tuple[int, int]) -> nn.Parameter:
    with torch.no_grad():
        return nn.Parameter(resize_pos_embed(param.data, old_grid, new_grid))


class _PositionGrid:
    """The patch grid the position embedding is kept at; inputs of another size get it resampled on
    the fly, and a checkpoint of another grid can be adopted as it is (`use_grid`)."""

    grid_size: tuple[int, int]
    position_key: str  # the embedding's name under this encoder

    def _position_owner(self) -> nn.Module:
        owner = self
        for part in self.position_key.split(".")[:-1]:
            owner = getattr(owner, part)
        return owner

    def use_grid(self, grid: tuple[int, int]) -> None:
        """Keeps the position embedding at `grid` from now on (to take a checkpoint's as it is).

        The parameter is replaced when the grid changes, so build an optimizer after this call."""
        if tuple(grid) == self.grid_size:
            return
        owner, name = self._position_owner(), self.position_key.rsplit(".", 1)[-1]
        setattr(owner, name, _resized(getattr(owner, name), self.grid_size, grid))
        self.grid_size = tuple(grid)


class ViTImageEncoder(_PositionGrid, nn.Module):
    """open_clip's VisionTransformer, returning the CLS tokens of the three features in docs/method.md.

    - ``x11``: after block L-1 (no LayerNorm), ``x12``: after the last block and ``ln_post``,
      ``xproj``: ``x12 @ proj``. The last block runs at the class token alone, as nothing else
      of it is read (`_class_token_block`).
    - Any input size and patch stride (overlapping patches when stride < patch size): the
      position embedding is resampled once, here, to the grid of `image_size`; inputs of another
      size get it resampled again, on the fly, to their grid (so a model built at torchreid's
      defaults, as its `FeatureExtractor` and `scripts/main.py` build it, runs at the data's size).
    - ``cls_offset`` (CLIP-ReID's camera embedding) is added to the class token before the
      position embedding.

    Args:
        visual: ``open_clip.CLIP(...).visual`` (a ViT).
        image_size: (height, width) of the inputs.
        stride: patch stride; ``None`` keeps the patch size.
    """

    def __init__(self, visual: nn.Module, image_size: tuple[int, int], stride: int | None = None):
        super().__init__()
        self.visual = visual
        stride = (stride, stride) if stride else visual.conv1.stride
        visual.conv1.stride = stride
        self.image_size = tuple(image_size)
        self.grid_size = self.grid_for(image_size)
        visual.positional_embedding = _resized(visual.positional_embedding, visual.grid_size, self.grid_size)
        visual.grid_size = self.grid_size
        self.width = visual.class_embedding.shape[0]
        self.output_dim = visual.proj.shape[1]

    position_key = "visual.positional_embedding"

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in backward instead of keeping them (open_clip's switch,
        honoured by `forward`, which runs the blocks itself): less memory, one more forward per step."""
        self.visual.set_grad_checkpointing(enable)

    @property
    def stride(self) -> int:
        """The patch stride."""
        return self.visual.conv1.stride[0]

    def use_stride(self, stride: int) -> None:
        """Patches at `stride` from now on (a checkpoint trained with overlapping patches)."""
        self.visual.conv1.stride = (stride, stride)

    def grid_for(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """The patch grid of an input of `image_size` (height, width)."""
        patch, stride = self.visual.conv1.kernel_size, self.visual.conv1.stride
        return tuple((size - p) // s + 1 for size, p, s in zip(image_size, patch, stride))

    def forward(
        self, x: torch.Tensor, cls_offset: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        v = self.visual
        x = v.conv1(x)
        position = resize_pos_embed(v.positional_embedding, self.grid_size, tuple(x.shape[-2:]))
        x = x.flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        if cls_offset is not None:
            cls = cls + cls_offset.to(x.dtype).unsqueeze(1)
        x = v.ln_pre(torch.cat([cls, x], dim=1) + position.to(x.dtype))
        batch_first = getattr(v.transformer, "batch_first", True)
        if not batch_first:
            x = x.transpose(0, 1)
        run = _checkpointed if v.transformer.grad_checkpointing and torch.is_grad_enabled() else _plain
        *blocks, last = v.transformer.resblocks
        for block in blocks:
            x = run(block, x)
        x11, x12 = x, run(partial(_class_token_block, last) if _reads_class_token_alone(last) else last, x)
        if not batch_first:
            x11, x12 = x11.transpose(0, 1), x12.transpose(0, 1)
        x12_cls = v.ln_post(x12[:, 0])
        return x11[:, 0], x12_cls, x12_cls @ v.proj


class ResNetImageEncoder(_PositionGrid, nn.Module):
    """open_clip's ModifiedResNet as CLIP-ReID and the authors use it.

    - ``layer4`` runs at stride 1 (last-stride-1, a 16x downsampling overall), and the attention
      pool's position embedding is resampled to the resulting grid.
    - Features: global average of ``layer3``'s map, global average of ``layer4``'s map, and the
      attention-pool output (the projected, mean-token query).

    Args:
        visual: ``open_clip.CLIP(...).visual`` (a ModifiedResNet).
        image_size: (height, width) of the inputs, multiples of 16.
    """

    def __init__(self, visual: nn.Module, image_size: tuple[int, int]):
        super().__init__()
        if any(size % 16 for size in image_size):
            raise ValueError(f"ResNet CLIP encoders need height and width divisible by 16, got {tuple(image_size)}")
        self.visual = visual
        first = visual.layer4[0]
        first.stride = 1
        first.avgpool = nn.Identity()
        setattr(first.downsample, "-1", nn.Identity())
        pool = visual.attnpool
        native = visual.image_size if isinstance(visual.image_size, (tuple, list)) else (visual.image_size,) * 2
        self.image_size = tuple(image_size)
        self.grid_size = (image_size[0] // 16, image_size[1] // 16)
        old_grid = (native[0] // 32, native[1] // 32)
        pool.positional_embedding = _resized(pool.positional_embedding, old_grid, self.grid_size)
        self.width = pool.k_proj.in_features
        self.output_dim = visual.output_dim

    position_key = "visual.attnpool.positional_embedding"
    stride = None  # no patches: the grid follows the input size alone

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        raise ValueError(
            "fgdi.grad_checkpointing needs a ViT image tower (open_clip's ModifiedResNet has no such switch): "
            "set it False for ResNet backbones"
        )

    def grid_for(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """The ``layer4`` grid of an input of `image_size` (height, width)."""
        return (image_size[0] // 16, image_size[1] // 16)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        v = self.visual
        x3 = v.layer3(v.layer2(v.layer1(v.stem(x))))
        x4 = v.layer4(x3)
        pool = v.attnpool
        position = resize_pos_embed(pool.positional_embedding, self.grid_size, tuple(x4.shape[-2:]))
        pooled = torch.func.functional_call(pool, {"positional_embedding": position}, (x4,))
        return x3.mean(dim=(2, 3)), x4.mean(dim=(2, 3)), pooled


def _plain(block: Callable, x: torch.Tensor) -> torch.Tensor:
    return block(x)


def _checkpointed(block: Callable, x: torch.Tensor) -> torch.Tensor:
    return checkpoint(block, x, use_reentrant=False)


def _reads_class_token_alone(block: nn.Module) -> bool:
    """Whether `block` is open_clip's plain self-attention block, whose query side can be cut to one
    token (a cross-attention block normalises keys apart; other block types are run whole)."""
    return (
        isinstance(getattr(block, "attn", None), nn.MultiheadAttention)
        and hasattr(block, "attention")
        and not hasattr(block, "ln_1_kv")
    )


def _class_token_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The last block's output at the class token only, the one token every feature reads.

    Keys and values still come from every token; the query, the attention output, the MLP and
    their gradients are computed for one token instead of all of them (about a twelfth of the
    tower's work). Equal to ``block(x)[:, :1]`` up to float rounding.
    """
    seq_dim = 1 if block.attn.batch_first else 0
    normed = block.ln_1(x)
    query = normed.narrow(seq_dim, 0, 1)
    y = x.narrow(seq_dim, 0, 1) + block.ls_1(block.attention(q_x=query, k_x=normed, v_x=normed))
    return y + block.ls_2(block.mlp(block.ln_2(y)))


def build_image_encoder(visual: nn.Module, image_size: tuple[int, int], stride: int | None = None) -> nn.Module:
    """The encoder for open_clip's image tower: ViT or ModifiedResNet."""
    if hasattr(visual, "attnpool"):
        if stride:
            raise ValueError(f"stride={stride} applies to ViT patches only; ResNet encoders take stride=None")
        return ResNetImageEncoder(visual, image_size)
    if hasattr(visual, "conv1") and hasattr(visual, "class_embedding"):
        return ViTImageEncoder(visual, image_size, stride)
    raise TypeError(f"unsupported CLIP image tower {type(visual).__name__}: expected a ViT or a ModifiedResNet")
