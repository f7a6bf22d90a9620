"""Models: the CLIP-FGDI network over open_clip's CLIP (in progress: the image encoder so far)."""

from .image_encoder import ViTImageEncoder, resize_pos_embed

__all__ = ["ViTImageEncoder", "resize_pos_embed"]
