"""The CLIP-FGDI network: CLIP image and text towers, prompts, BNNecks and classifiers."""

from __future__ import annotations

import torch
from open_clip.transformer import QuickGELU
from torch import nn

from ..errors import CheckpointError
from ..utils import config_yaml
from .checkpoints import (
    RECORD_FORMAT,
    RECORD_KEY,
    check_tower,
    check_variant,
    decode_record,
    read_record,
    record_tensor,
)
from .heads import DomainClassifier, GradientReversal, bnneck, id_classifier
from .image_encoder import ViTImageEncoder, build_image_encoder
from .text import PromptLearner, TextEncoder

# torchreid's model contract for a training forward: 'softmax' -> ID logits, 'triplet' -> (logits,
# features); lists stand for deep supervision (two classifiers, three features).
LOSSES = ("softmax", "triplet")
NECK_FEATS = ("before", "after")  # the eval feature: before (authors) or after the BNNecks
_ACTIVATIONS = (nn.GELU, QuickGELU)


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
        variant: the registered name it was built as (`build_fgdi` passes it), recorded with the weights.

    The state dict records what reading the weights takes beyond their tensors (``_extra_state``,
    `get_extra_state`): variant, patch grid and stride, input sizes, activation, eval feature.
    Loading a state dict makes the model the one that was saved (`set_extra_state`); one without the
    record (saved before it existed) loads as before.
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
        variant: str | None = None,
    ):
        super().__init__()
        if neck_feat not in NECK_FEATS:
            raise ValueError(f"neck_feat must be one of {', '.join(NECK_FEATS)}, got {neck_feat!r}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)} (torchreid's model contract), got {loss!r}")
        self.loss = loss
        self.neck_feat = neck_feat
        self.variant = variant
        self.trained_size: tuple[int, int] | None = None  # the input size of the last training step
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
        self.register_load_state_dict_pre_hook(_own_record_if_none)

    def forward(self, x: torch.Tensor, camids: torch.Tensor | None = None):
        if self.training:
            self.trained_size = tuple(x.shape[-2:])
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

    def get_extra_state(self) -> torch.Tensor:
        """What reading these weights takes beyond their tensors, saved by ``state_dict()`` under
        ``_extra_state`` (as the bytes of its JSON text: `checkpoints.record_tensor`; `record` reads
        it): a model built at other defaults (torchreid's `FeatureExtractor` builds at the variant's
        size) adopts it on loading.

        ``image_size`` is the input size the position grid was made for, ``trained_size`` that of the
        last training step (torchreid's ``scripts/main.py`` builds at the variant's size and trains
        at the data's), ``None`` if the model was not trained since it was built or loaded."""
        return record_tensor(self.record)

    @property
    def record(self) -> dict:
        """This model's record (`get_extra_state`), as a dict."""
        encoder = self.image_encoder
        return {
            "format": RECORD_FORMAT,
            "variant": self.variant,
            "grid": list(encoder.grid_size),
            "stride": encoder.stride,
            "image_size": list(encoder.image_size),
            "trained_size": list(self.trained_size) if self.trained_size else None,
            "quick_gelu": self.quick_gelu,
            "neck_feat": self.neck_feat,
        }

    def set_extra_state(self, state: torch.Tensor) -> None:
        """Becomes the model the record (`get_extra_state`'s) describes: patch stride and grid (the
        position embedding loaded next then fits as it is), input sizes, activation and eval feature.
        Another variant's record is refused, naming both."""
        record = decode_record(state)
        check_variant(self, record["variant"], "as its state dict records")
        encoder = self.image_encoder
        if record["stride"] and isinstance(encoder, ViTImageEncoder):
            encoder.use_stride(record["stride"])
        encoder.use_grid(tuple(record["grid"]))
        encoder.image_size = tuple(record["image_size"])
        self.trained_size = tuple(record["trained_size"]) if record["trained_size"] else None
        self.quick_gelu = record["quick_gelu"]
        self.neck_feat = record["neck_feat"]

    @property
    def quick_gelu(self) -> bool:
        """Whether the CLIP towers run QuickGELU (OpenAI's CLIP) rather than GELU."""
        return any(isinstance(m, QuickGELU) for m in self.modules())

    @quick_gelu.setter
    def quick_gelu(self, quick: bool) -> None:
        for parent in list(self.modules()):
            for name, child in parent.named_children():
                if isinstance(child, _ACTIVATIONS) and isinstance(child, QuickGELU) != quick:
                    setattr(parent, name, QuickGELU() if quick else nn.GELU())

    def fit_checkpoint(self, state: dict, config_text: str | None = None) -> dict:
        """Makes this model take a state dict saved at another input size or patch stride, or with
        another activation or eval feature (`compat` routes torchreid's ``load_pretrained_weights`` of
        FGDI models here: it would drop the position embedding as a shape mismatch and keep this
        model's, silently giving other features). Returns the state dict to load.

        A state dict that records its model (`get_extra_state`) is adopted as recorded. One saved
        before the record existed: the image encoder adopts the stride of the recorded `config_text`
        and the position-embedding grid of its recorded input size, else its own if the sizes agree,
        else a square one, and resamples on the fly at forward. Another variant's weights are refused,
        naming both (from the record, the recorded config, or the image towers' shapes).
        """
        state = {k.removeprefix("module."): v for k, v in state.items()}
        record = read_record(state)
        saved = state.pop(RECORD_KEY, None)
        recorded = config_yaml.parse_mapping(config_text, "the checkpoint's recorded config") if config_text else {}
        if record:
            theirs, how = record["variant"], "as its state dict records"
        else:
            theirs, how = recorded.get("model", {}).get("name"), "as its recorded config says"
        check_variant(self, theirs, how)
        check_tower(self, state)
        if record:
            self.set_extra_state(saved)
            return state
        encoder = self.image_encoder
        key = "image_encoder." + encoder.position_key
        if key not in state:
            return state
        data = recorded.get("data", {})
        if isinstance(encoder, ViTImageEncoder) and "stride" in recorded.get("fgdi", {}):
            encoder.use_stride(recorded["fgdi"]["stride"] or encoder.visual.conv1.kernel_size[0])
        rows = state[key].shape[0] - 1
        side = int(round(rows**0.5))
        candidates = [encoder.grid_for((data["height"], data["width"]))] if "height" in data and "width" in data else []
        candidates += [encoder.grid_size, (side, side)]
        grid = next((g for g in candidates if g[0] * g[1] == rows), None)
        if grid is None:
            raise CheckpointError(
                f"the checkpoint's position embedding has {rows} grid cells, which fit neither its recorded input "
                "size nor a square grid, and its state dict records no grid (saved by an older torchreid-fgdi): "
                "load it with torchreid_fgdi.models.load_fgdi_checkpoint(..., ckpt_grid=(rows, cols)) and save "
                "the model's state_dict() again: it records its grid then"
            )
        encoder.use_grid(grid)
        return state

    def text_features(self, pids: torch.Tensor, dsetids: torch.Tensor | None = None) -> torch.Tensor:
        """Identity-prompt features of ``pids``, or domain-prompt features of (pids, dsetids)."""
        return self.text_encoder(*self.promptlearner(pids, dsetids))

    def domain_logits(self, text: torch.Tensor, adversarial: bool) -> torch.Tensor:
        """``dcgrl`` behind the gradient reversal (identity prompts), or ``dc`` on detached features."""
        return self.dcgrl(self.grl(text)) if adversarial else self.dc(text.detach())


def _own_record_if_none(module: FGDI, state: dict, prefix: str, *_) -> None:
    """A state dict saved before FGDI models recorded themselves loads as before, strictly too: the
    model keeps its own record."""
    state.setdefault(prefix + RECORD_KEY, module.get_extra_state())
