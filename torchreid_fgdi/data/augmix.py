"""AugMix as the CLIP-FGDI authors configure it, for ``data.transforms: [clip_fgdi]``.

Their augmentation differs from torchvision's `AugMix` in ways that matter at severity 1: each
operation draws its own level uniformly from [0.1, severity] and scales its maximum by level / 10,
so rotations reach 2 degrees, shears 0.03, translations a tenth of a third of the image side
(7 px at 224) and solarisation thresholds 231-254, where torchvision's first magnitude bin does
nothing. The colour operations of the AugMix paper (colour, contrast, brightness, sharpness) are
not used; the mixing weights come from Dirichlet(0.1) and Beta(0.1, 0.1), and the mixed image is
cut back to 8 bits. Randomness comes from Python's `random`, which torchreid seeds and PyTorch
re-seeds in every DataLoader worker.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageOps

MAX_LEVEL = 10  # a level of 10 reaches each operation's maximum


def _int_scaled(level: float, maximum: float) -> int:
    return int(level * maximum / MAX_LEVEL)


def _signed(value: float, rng: random.Random) -> float:
    return -value if rng.random() > 0.5 else value


def _affine(coefficients: Callable[[float], tuple]) -> Callable[[Image.Image, float], Image.Image]:
    def apply(image: Image.Image, value: float) -> Image.Image:
        return image.transform(image.size, Image.AFFINE, coefficients(value), resample=Image.BILINEAR)

    return apply


# name -> (parameter from (level, image size, rng), operation on (PIL image, parameter)).
OPERATIONS: dict[str, tuple[Callable, Callable]] = {
    "autocontrast": (lambda level, size, rng: None, lambda image, _: ImageOps.autocontrast(image)),
    "equalize": (lambda level, size, rng: None, lambda image, _: ImageOps.equalize(image)),
    "posterize": (lambda level, size, rng: 4 - _int_scaled(level, 4), ImageOps.posterize),  # bits kept
    "rotate": (
        lambda level, size, rng: _signed(_int_scaled(level, 30), rng),  # degrees
        lambda image, degrees: image.rotate(degrees, resample=Image.BILINEAR),
    ),
    "solarize": (lambda level, size, rng: 256 - _int_scaled(level, 256), ImageOps.solarize),  # threshold
    "shear_x": (lambda level, size, rng: _signed(level * 0.3 / MAX_LEVEL, rng), _affine(lambda s: (1, s, 0, 0, 1, 0))),
    "shear_y": (lambda level, size, rng: _signed(level * 0.3 / MAX_LEVEL, rng), _affine(lambda s: (1, 0, 0, s, 1, 0))),
    "translate_x": (  # pixels
        lambda level, size, rng: _signed(_int_scaled(level, size[0] / 3), rng),
        _affine(lambda t: (1, 0, t, 0, 1, 0)),
    ),
    "translate_y": (
        lambda level, size, rng: _signed(_int_scaled(level, size[1] / 3), rng),
        _affine(lambda t: (1, 0, 0, 0, 1, t)),
    ),
}


def sample_parameter(name: str, severity: float, size: tuple[int, int], rng: random.Random = random):
    """The magnitude operation `name` draws for an image of `size` (width, height)."""
    return OPERATIONS[name][0](rng.uniform(0.1, severity), size, rng)


class AuthorsAugMix:
    """With probability `prob`: `width` chains of `depth` random operations, mixed.

    Args:
        prob: probability of augmenting an image (the authors' 0.6).
        severity: the largest operation level (1, of 10).
        width: chains mixed per image.
        depth: operations per chain.
        alpha: concentration of the Dirichlet chain weights and of the Beta mixing weight.
    """

    def __init__(self, prob: float = 0.6, severity: float = 1, width: int = 3, depth: int = 1, alpha: float = 0.1):
        self.prob, self.severity, self.width, self.depth, self.alpha = prob, severity, width, depth, alpha

    def __call__(self, image: Image.Image, rng: random.Random = random) -> Image.Image:
        if rng.random() > self.prob:
            return image
        gammas = [rng.gammavariate(self.alpha, 1.0) for _ in range(self.width)]
        weights = np.float32(gammas) / max(sum(gammas), np.finfo(np.float32).tiny)
        m = np.float32(rng.betavariate(self.alpha, self.alpha))
        mix = np.zeros((image.size[1], image.size[0], 3))
        for weight in weights:
            chain = image
            for _ in range(self.depth):
                name = rng.choice(list(OPERATIONS))
                chain = OPERATIONS[name][1](chain, sample_parameter(name, self.severity, chain.size, rng))
            mix += weight * np.asarray(chain)
        mixed = (1 - m) * np.asarray(image) + m * mix
        return Image.fromarray(mixed.astype(np.uint8))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(prob={self.prob}, severity={self.severity}, width={self.width}, "
            f"depth={self.depth}, alpha={self.alpha})"
        )
