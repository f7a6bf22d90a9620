"""The generated benchmark: synthetic people rendered into styled domains (torchreid datasets), their
captioned corpus, the tiny CLIP pretrained on it and its zero-shot probe, for testing CLIP-FGDI without real data."""

from .datasets import SYNTHETIC_DATASETS, SyntheticDomain

__all__ = ["SYNTHETIC_DATASETS", "SyntheticDomain"]
