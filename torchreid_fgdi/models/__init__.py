"""Models: the CLIP-FGDI network over open_clip's CLIP (torchreid registration still to come)."""

from .fgdi import FGDI, from_authors_state_dict, to_authors_state_dict
from .heads import DomainClassifier, GradientReversal
from .image_encoder import ViTImageEncoder, resize_pos_embed
from .text import PromptLearner, TextEncoder

__all__ = [
    "FGDI",
    "DomainClassifier",
    "GradientReversal",
    "PromptLearner",
    "TextEncoder",
    "ViTImageEncoder",
    "from_authors_state_dict",
    "resize_pos_embed",
    "to_authors_state_dict",
]
