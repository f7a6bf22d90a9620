"""Models: the CLIP-FGDI network over open_clip's CLIP, its registered variants and checkpoint loading."""

from .checkpoints import from_authors_state_dict, from_clipreid_state_dict, load_fgdi_checkpoint, to_authors_state_dict
from .clip_weights import create_clip
from .fgdi import FGDI
from .heads import DomainClassifier, GradientReversal
from .hub import WeightsUnavailableError
from .image_encoder import ResNetImageEncoder, ViTImageEncoder, build_image_encoder, resize_pos_embed
from .text import PromptLearner, TextEncoder
from .variants import MODEL_FACTORIES, VARIANTS, build_fgdi

__all__ = [
    "FGDI",
    "MODEL_FACTORIES",
    "VARIANTS",
    "DomainClassifier",
    "GradientReversal",
    "PromptLearner",
    "ResNetImageEncoder",
    "TextEncoder",
    "ViTImageEncoder",
    "WeightsUnavailableError",
    "build_fgdi",
    "build_image_encoder",
    "create_clip",
    "from_authors_state_dict",
    "from_clipreid_state_dict",
    "load_fgdi_checkpoint",
    "resize_pos_embed",
    "to_authors_state_dict",
]
