"""The authors' CLIP-FGDI image pipelines, selected with ``data.transforms: [clip_fgdi]``.

They differ from torchreid's: bicubic resize, per-image per-channel standardisation (an
affine-free InstanceNorm) instead of a dataset mean/std, and the authors' own AugMix
(`augmix.AuthorsAugMix`: their operations, magnitudes, mixing weights and probability).
`import torchreid_fgdi` registers `PIPELINES` where torchreid builds its transforms, so every
torchreid data manager builds them by name.
"""

from __future__ import annotations

from collections.abc import Container

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

    def __repr__(self) -> str:
        return f"{type(self).__name__}(each channel of each image to mean 0, std 1; eps={self.eps})"


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


# Whole (train, test) pipelines by name, each built as ``builder(height, width)``.
PIPELINES = {CLIP_FGDI: clip_fgdi_transforms}


def whole_pipeline(transforms: str | list[str] | None, pipelines: Container[str]) -> str | None:
    """The one of `pipelines` that ``data.transforms`` names, alone (a whole pipeline replaces
    torchreid's list), or None if it names none of them."""
    transforms = [t.lower() for t in ([transforms] if isinstance(transforms, str) else transforms or [])]
    named = [t for t in transforms if t in pipelines]
    if not named:
        return None
    if len(transforms) > 1:
        raise ConfigError(f"transforms {named[0]!r} is a whole pipeline; do not combine it with {transforms}")
    return named[0]


def print_pipelines(name: str, train: T.Compose, test: T.Compose) -> None:
    """Lists the transforms `train` and `test` apply, in torchreid's layout: what the log says is what runs."""
    for kind, pipeline in (("train", train), ("test", test)):
        print(f"Building {kind} transforms ({name}) ...")
        for transform in pipeline.transforms:
            one_line = " ".join(repr(transform).split()).replace("( ", "(").replace(" )", ")")
            print(f"+ {one_line}")
