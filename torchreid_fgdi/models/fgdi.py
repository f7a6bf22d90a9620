"""The CLIP-FGDI network: CLIP image and text towers, prompts, BNNecks and classifiers."""

from __future__ import annotations

import torch
from torch import nn

from .heads import DomainClassifier, GradientReversal, bnneck, id_classifier
from .image_encoder import ViTImageEncoder
from .text import PromptLearner, TextEncoder


class FGDI(nn.Module):
    """CLIP-FGDI (Zhao, Qi, Geng, TIFS 2025) over an open_clip CLIP.

    Eval mode returns the re-ID feature, so torchreid's ``Engine.test`` and ``FeatureExtractor``
    work unchanged: concat(CLS of x12, CLS of xproj) before the BNNecks (``neck_feat='before'``,
    the authors' setting) or after them (``'after'``). Train mode returns
    ``(scores, feats)``: the two classifiers' logits and the CLS features (x11, x12, xproj).

    Args:
        clip: an ``open_clip.CLIP`` with a ViT image tower (its modules are reused, not copied).
        tokenizer: the CLIP tokenizer.
        num_classes: identities over all sources.
        num_domains: source domains.
        image_size: (height, width) of inputs.
        stride: patch stride (``None``: the patch size).
        grl_scale: gradient-reversal scale epsilon (paper: 0.1).
        neck_feat: ``'before'`` or ``'after'`` the BNNecks for the eval feature.
    """

    def __init__(
        self,
        clip: nn.Module,
        tokenizer,
        num_classes: int,
        num_domains: int,
        image_size: tuple[int, int] = (224, 224),
        stride: int | None = None,
        grl_scale: float = 0.1,
        neck_feat: str = "before",
    ):
        super().__init__()
        if neck_feat not in ("before", "after"):
            raise ValueError(f"neck_feat must be 'before' or 'after', got {neck_feat!r}")
        self.neck_feat = neck_feat
        self.image_encoder = ViTImageEncoder(clip.visual, image_size, stride)
        self.text_encoder = TextEncoder(clip)
        self.promptlearner = PromptLearner(num_classes, num_domains, clip.token_embedding, tokenizer)
        width, proj_dim = self.image_encoder.width, self.image_encoder.output_dim
        text_dim = self.text_encoder.text_projection.shape[1]
        self.bottleneck = bnneck(width)
        self.bottleneck_proj = bnneck(proj_dim)
        self.classifier = id_classifier(width, num_classes)
        self.classifier_proj = id_classifier(proj_dim, num_classes)
        self.grl = GradientReversal(grl_scale)
        self.dcgrl = DomainClassifier(text_dim, num_domains)
        self.dc = DomainClassifier(text_dim, num_domains)

    def forward(self, x: torch.Tensor):
        x11, x12, xproj = self.image_encoder(x)
        if not self.training and self.neck_feat == "before":
            return torch.cat([x12, xproj], 1)
        feat, feat_proj = self.bottleneck(x12), self.bottleneck_proj(xproj)
        if not self.training:
            return torch.cat([feat, feat_proj], 1)
        return [self.classifier(feat), self.classifier_proj(feat_proj)], [x11, x12, xproj]

    def text_features(self, pids: torch.Tensor, dsetids: torch.Tensor | None = None) -> torch.Tensor:
        """Identity-prompt features of ``pids``, or domain-prompt features of (pids, dsetids)."""
        return self.text_encoder(*self.promptlearner(pids, dsetids))

    def domain_logits(self, text: torch.Tensor, adversarial: bool) -> torch.Tensor:
        """``dcgrl`` behind the gradient reversal (identity prompts), or ``dc`` on detached features."""
        return self.dcgrl(self.grl(text)) if adversarial else self.dc(text.detach())


_AUTHORS_IMAGE, _OURS_IMAGE = "image_encoder.", "image_encoder.visual."


def _swap_prefix(state: dict, old: str, new: str) -> dict:
    return {(new + k[len(old) :] if k.startswith(old) else k): v for k, v in state.items()}


def from_authors_state_dict(state: dict) -> dict:
    """The authors' (Qi5Lei/CLIP-FGDI) checkpoint keys in this model's layout.

    Only the image tower differs: theirs is ``image_encoder.*``, ours keeps open_clip's module
    under ``image_encoder.visual.*``.
    """
    return _swap_prefix(state, _AUTHORS_IMAGE, _OURS_IMAGE)


def to_authors_state_dict(state: dict) -> dict:
    """This model's state dict in the authors' key layout (the inverse of `from_authors_state_dict`)."""
    return _swap_prefix(state, _OURS_IMAGE, _AUTHORS_IMAGE)
