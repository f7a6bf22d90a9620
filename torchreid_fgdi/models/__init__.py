"""Models: the CLIP-FGDI network over open_clip's CLIP (in progress: the image and text towers)."""

from .image_encoder import ViTImageEncoder, resize_pos_embed
from .text import PromptLearner, TextEncoder

__all__ = ["PromptLearner", "TextEncoder", "ViTImageEncoder", "resize_pos_embed"]
