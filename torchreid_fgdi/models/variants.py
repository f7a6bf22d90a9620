"""The registered FGDI models: a table of backbones (configs as data) and one builder.

Every name builds through `build_fgdi`, which torchreid reaches as
``torchreid.models.build_model(name, num_classes, num_domains=..., pretrained=..., ...)``.
Each backbone is registered twice: ``fgdi*`` trains with CLIP-FGDI's stages, ``clip_reid*`` (the
same network, its domain prompts and classifiers unused) with CLIP-ReID's; the variant's
``method`` names the stage table (`engine.stages.TABLES`), and a model records its variant.
"""

from __future__ import annotations

import functools

from torch import nn

from .clip_weights import create_clip, find_weights, made_weights, ready_made_weights, tag_uses_quick_gelu
from .fgdi import FGDI

# A random CLIP small enough to train on a CPU: for tests and the synthetic demo.
TINY_CLIP = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}

# Backbones by the name suffix of their variants ("": the method's default, ViT-B/16).
_BACKBONES: dict[str, dict] = {
    "": {"clip": "ViT-B-16", "weights": "openai", "image_size": (224, 224)},
    "_vit_b16": {"clip": "ViT-B-16", "weights": "openai", "image_size": (224, 224)},
    "_vit_b32": {"clip": "ViT-B-32", "weights": "openai", "image_size": (224, 224)},
    "_vit_l14": {"clip": "ViT-L-14", "weights": "openai", "image_size": (224, 224)},
    "_rn50": {"clip": "RN50", "weights": "openai", "image_size": (224, 224)},
    "_rn101": {"clip": "RN101", "weights": "openai", "image_size": (224, 224)},
    "_tiny": {"clip": TINY_CLIP, "weights": None, "image_size": (64, 32)},
}
METHODS = ("fgdi", "clip_reid")  # the methods a variant trains with, each the prefix of its variants' names
VARIANTS: dict[str, dict] = {
    method + suffix: {**spec, "method": method} for method in METHODS for suffix, spec in _BACKBONES.items()
}


def variant_method(variant: str) -> str:
    """The method `variant` trains with (its stage table's name: `engine.stages.TABLES`)."""
    return VARIANTS[variant]["method"]


def variant_weights(variant: str, pretrained: bool | str | None) -> str | None:
    """The CLIP weights `pretrained` means for `variant` (``True``: its default; falsy: none)."""
    return VARIANTS[variant]["weights"] if pretrained is True else (pretrained or None)


def check_variant_weights(variant: str, pretrained: bool | str | None, cache_dir: str | None = None) -> str:
    """Where `variant` built from `pretrained` (as `build_fgdi` takes them) reads its CLIP weights,
    checked before any work and without downloading: a local file, the weights' name and
    "downloaded on first use", or "none (random init)"; refused, with what to do, when they cannot
    be had from here."""
    weights = variant_weights(variant, pretrained)
    if not weights:
        return "none (random init)"
    if made_weights(weights):
        return ready_made_weights(weights) or f"{weights!r}, made on first use"
    return find_weights(VARIANTS[variant]["clip"], weights, cache_dir) or f"{weights!r}, downloaded on first use"


def variant_quick_gelu(variant: str, pretrained: bool | str | None, quick_gelu: bool | None = None) -> bool:
    """Whether `variant` built from `pretrained` with `quick_gelu` (as `build_fgdi` takes them) runs
    QuickGELU: ``None`` follows the weights (`tag_uses_quick_gelu`). Weights that came from a
    checkpoint need the activation they were trained with, which these decided."""
    if quick_gelu is not None:
        return quick_gelu
    return tag_uses_quick_gelu(VARIANTS[variant]["clip"], variant_weights(variant, pretrained))


def build_fgdi(
    variant: str,
    num_classes: int,
    num_domains: int = 1,
    pretrained: bool | str | None = True,
    image_size: tuple[int, int] | None = None,
    stride: int | None = None,
    neck_feat: str = "before",
    grl_scale: float = 0.1,
    quick_gelu: bool | None = None,
    num_cameras: int = 0,
    cache_dir: str | None = None,
    loss: str = "triplet",
    use_gpu: bool = True,
) -> FGDI:
    """Builds a registered FGDI model.

    Args:
        variant: a key of `VARIANTS`.
        num_classes: identities over all sources.
        num_domains: source domains.
        pretrained: ``True`` for the variant's default CLIP weights (OpenAI's; ``fgdi_tiny`` has
            none and stays random), ``False``/``None`` for random init, or an open_clip tag or a
            local file (OpenAI JIT archive, open_clip checkpoint, state dict).
        image_size: (height, width); the variant's default when ``None``.
        stride: ViT patch stride (``None``: the patch size; 12 for CLIP-ReID's overlapping patches).
        neck_feat: eval feature ``'before'`` (authors) or ``'after'`` the BNNecks.
        grl_scale: gradient-reversal scale (paper's epsilon).
        quick_gelu: ``None`` follows the weights (QuickGELU for OpenAI's and for random init).
        num_cameras: CLIP-ReID's camera embedding rows (only to load CLIP-ReID SIE checkpoints).
        cache_dir: download cache for tags.
        loss: the training forward's outputs, by torchreid's contract: ``'softmax'`` (ID logits,
            for torchreid's ``ImageSoftmaxEngine``) or ``'triplet'`` (logits and features, for
            ``ImageTripletEngine`` and `ImageFGDIEngine`).
        use_gpu: accepted for torchreid's ``build_model`` signature; the engine decides the device.
    """
    spec = VARIANTS[variant]
    clip, tokenizer = create_clip(spec["clip"], variant_weights(variant, pretrained), quick_gelu, cache_dir)
    return FGDI(
        clip,
        tokenizer,
        num_classes,
        num_domains,
        image_size=tuple(image_size or spec["image_size"]),
        stride=stride or None,
        grl_scale=grl_scale,
        neck_feat=neck_feat,
        num_cameras=num_cameras,
        loss=loss,
        variant=variant,
    )


# name -> builder, for torchreid's model table.
MODEL_FACTORIES: dict[str, functools.partial[nn.Module]] = {
    name: functools.partial(build_fgdi, name) for name in VARIANTS
}
