"""The authors' CLIP-FGDI image pipelines, selected with ``data.transforms: [clip_fgdi]``.

They differ from torchreid's: bicubic resize, per-image per-channel standardisation (an
affine-free InstanceNorm) instead of a dataset mean/std, and the authors' own AugMix
(`augmix.AuthorsAugMix`: their operations, magnitudes, mixing weights and probability).
"""

from __future__ import annotations

import torch
import torchvision.transforms as T

from ..errors import ConfigError
from .augmix import AuthorsAugMix

CLIP_FGDI = "clip_fgdi"
# What `data.transforms` may name: torchreid's `build_transforms` options, which it matches
# silently (a misspelt one is dropped), and the authors' whole pipeline.
TRANSFORMS = ("random_flip", "random_crop", "random_patch", "color_jitter", "random_erase", CLIP_FGDI)


class PerImageNorm:
    """Each channel of each image to zero mean, unit variance (``nn.InstanceNorm2d(3)`` on one image)."""

    eps = 1e-5

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(1, 2), keepdim=True)
        var = x.var(dim=(1, 2), unbiased=False, keepdim=True)
        return (x - mean) / torch.sqrt(var + self.eps)


def clip_fgdi_transforms(height: int, width: int) -> tuple[T.Compose, T.Compose]:
    """(train, test) transforms of the authors' code for PIL images."""
    size = (height, width)
    resize = T.Resize(size, interpolation=T.InterpolationMode.BICUBIC)
    train = T.Compose(
        [
            resize,
            T.RandomGrayscale(0.1),
            T.Pad(10),
            T.RandomCrop(size),
            T.RandomHorizontalFlip(0.4),
            T.RandomApply([T.ColorJitter(0.15, 0.1, 0.05, 0.05)], p=0.1),
            AuthorsAugMix(prob=0.6),
            T.ToTensor(),
            PerImageNorm(),
        ]
    )
    test = T.Compose([resize, T.ToTensor(), PerImageNorm()])
    return train, test


def wants_clip_fgdi(transforms: str | list[str] | None) -> bool:
    """Whether ``data.transforms`` names the authors' pipeline (alone: it is a whole pipeline)."""
    transforms = [transforms] if isinstance(transforms, str) else list(transforms or [])
    if CLIP_FGDI not in transforms:
        return False
    if len(transforms) > 1:
        raise ConfigError(f"transforms {CLIP_FGDI!r} is a whole pipeline; do not combine it with {transforms}")
    return True
