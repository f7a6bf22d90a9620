"""The CLIP-FGDI network: CLIP image and text towers, prompts, BNNecks and classifiers."""

from __future__ import annotations

import torch
from torch import nn

from ..utils import config_yaml
from .heads import DomainClassifier, GradientReversal, bnneck, id_classifier
from .image_encoder import ViTImageEncoder, build_image_encoder
from .text import PromptLearner, TextEncoder

# torchreid's model contract for a training forward: 'softmax' -> ID logits, 'triplet' -> (logits,
# features); lists stand for deep supervision (two classifiers, three features).
LOSSES = ("softmax", "triplet")
NECK_FEATS = ("before", "after")  # the eval feature: before (authors) or after the BNNecks


class FGDI(nn.Module):
    """CLIP-FGDI (Zhao, Qi, Geng, TIFS 2025) over an open_clip CLIP.

    Eval mode returns the re-ID feature, so torchreid's ``Engine.test`` and ``FeatureExtractor``
    work unchanged: concat(CLS of x12, CLS of xproj) before the BNNecks (``neck_feat='before'``,
    the authors' setting) or after them (``'after'``). Train mode follows torchreid's contract
    for ``loss``: ``'softmax'`` returns the two classifiers' logits (a list, which torchreid's
    engines treat as deep supervision); ``'triplet'`` returns ``(scores, feats)``, the logits and
    the CLS features (x11, x12, xproj; for ResNet towers pooled layer3, pooled layer4, attention
    pool), which is also what `ImageFGDIEngine` trains on.

    Args:
        clip: an ``open_clip.CLIP`` with a ViT or ModifiedResNet image tower (its modules are
            reused, not copied).
        tokenizer: the CLIP tokenizer.
        num_classes: identities over all sources.
        num_domains: source domains.
        image_size: (height, width) of inputs.
        stride: patch stride (``None``: the patch size).
        grl_scale: gradient-reversal scale epsilon (paper: 0.1).
        neck_feat: ``'before'`` or ``'after'`` the BNNecks for the eval feature.
        num_cameras: > 0 adds CLIP-ReID's camera embedding (SIE, ``cv_embed``), used when
            ``forward`` is given ``camids``; only for loading CLIP-ReID models trained with it.
        sie_coe: CLIP-ReID's scale on the camera embedding.
        loss: ``'softmax'`` or ``'triplet'``, as torchreid's ``build_model(..., loss=...)``.
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
        num_cameras: int = 0,
        sie_coe: float = 3.0,
        loss: str = "triplet",
    ):
        super().__init__()
        if neck_feat not in NECK_FEATS:
            raise ValueError(f"neck_feat must be one of {', '.join(NECK_FEATS)}, got {neck_feat!r}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)} (torchreid's model contract), got {loss!r}")
        self.loss = loss
        self.neck_feat = neck_feat
        self.image_encoder = build_image_encoder(clip.visual, image_size, stride)
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
        self.sie_coe = sie_coe
        if num_cameras:
            if not isinstance(self.image_encoder, ViTImageEncoder):
                raise ValueError("num_cameras (CLIP-ReID's camera embedding) exists for ViT backbones only")
            self.cv_embed = nn.Parameter(torch.empty(num_cameras, width))
            nn.init.trunc_normal_(self.cv_embed, std=0.02)

    def forward(self, x: torch.Tensor, camids: torch.Tensor | None = None):
        if camids is not None and hasattr(self, "cv_embed"):
            x11, x12, xproj = self.image_encoder(x, self.sie_coe * self.cv_embed[camids])
        else:
            x11, x12, xproj = self.image_encoder(x)
        if not self.training and self.neck_feat == "before":
            return torch.cat([x12, xproj], 1)
        feat, feat_proj = self.bottleneck(x12), self.bottleneck_proj(xproj)
        if not self.training:
            return torch.cat([feat, feat_proj], 1)
        scores = [self.classifier(feat), self.classifier_proj(feat_proj)]
        return scores if self.loss == "softmax" else (scores, [x11, x12, xproj])

    def fit_checkpoint(self, state: dict, config_text: str | None = None) -> dict:
        """Makes this model take a state dict trained at another input size or patch stride: the image
        encoder adopts the checkpoint's stride (from its recorded `config_text`) and position-embedding
        grid (that of the recorded input size, else its own if the sizes agree, else a square one) and
        resamples on the fly at forward.

        torchreid's ``load_pretrained_weights`` would drop the embedding as a shape mismatch and keep
        this model's, silently giving other features (`compat` routes FGDI models through here).
        """
        state = {k.removeprefix("module."): v for k, v in state.items()}
        encoder = self.image_encoder
        key = "image_encoder." + encoder.position_key
        if key not in state:
            return state
        recorded = config_yaml.parse_mapping(config_text, "the checkpoint's recorded config") if config_text else {}
        data = recorded.get("data", {})
        if isinstance(encoder, ViTImageEncoder) and "stride" in recorded.get("fgdi", {}):
            encoder.use_stride(recorded["fgdi"]["stride"] or encoder.visual.conv1.kernel_size[0])
        rows = state[key].shape[0] - 1
        side = int(round(rows**0.5))
        candidates = [encoder.grid_for((data["height"], data["width"]))] if "height" in data and "width" in data else []
        candidates += [encoder.grid_size, (side, side)]
        grid = next((g for g in candidates if g[0] * g[1] == rows), None)
        if grid is None:
            raise ValueError(
                f"the checkpoint's position embedding has {rows} grid cells, which fit neither its recorded input "
                "size nor a square grid: load it with torchreid_fgdi.models.load_fgdi_checkpoint(..., ckpt_grid=)"
            )
        encoder.use_grid(grid)
        return state

    def text_features(self, pids: torch.Tensor, dsetids: torch.Tensor | None = None) -> torch.Tensor:
        """Identity-prompt features of ``pids``, or domain-prompt features of (pids, dsetids)."""
        return self.text_encoder(*self.promptlearner(pids, dsetids))

    def domain_logits(self, text: torch.Tensor, adversarial: bool) -> torch.Tensor:
        """``dcgrl`` behind the gradient reversal (identity prompts), or ``dc`` on detached features."""
        return self.dcgrl(self.grl(text)) if adversarial else self.dc(text.detach())
