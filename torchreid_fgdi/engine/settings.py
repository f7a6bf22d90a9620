"""The config's ``fgdi`` training keys as frozen, typed settings: what the engine reads.

`config.py` owns the keys, their defaults and their checks; these classes only give the engine
explicit, typed values instead of a mutable yacs node. A field is named as its key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

from ..evaluation.rerank import DEFAULT_MEMORY_GIB

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class ImageOptimSettings:
    """``fgdi.image``: the Adam and schedule of the image stages (1 and 3)."""

    lr: float
    bias_lr_factor: float
    weight_decay: float
    milestones: tuple[int, ...]
    gamma: float
    warmup_factor: float
    warmup_epochs: int


@dataclasses.dataclass(frozen=True)
class PromptSettings:
    """``fgdi.prompt``: stage 2 on cached image features."""

    batch_size: int
    lr: float
    classifier_lr: float
    weight_decay: float
    warmup_epochs: int
    warmup_lr: float
    min_lr: float
    omega: float
    temperature: float
    reshuffle: bool


@dataclasses.dataclass(frozen=True)
class FGDISettings:
    """``fgdi``: epochs per stage, loss weights, precision and checkpointing."""

    epochs: Mapping[str, int]  # stage name -> epochs (the keys fgdi.<stage>_epochs), read-only
    label_smooth: float
    id_weight: float
    triplet_weight: float
    beta: float
    guide_direction: str
    precision: str
    test_precision: str
    sync_bn: bool
    grad_checkpointing: bool
    checkpoint_every: int
    image: ImageOptimSettings
    prompt: PromptSettings

    @classmethod
    def from_node(cls, fgdi: Mapping[str, Any], stages: Iterable[str]) -> FGDISettings:
        """From a config's ``fgdi`` section (`config.get_default_config().fgdi` has the paper's values)
        with the epochs of each of `stages` (``fgdi.<stage>_epochs``)."""
        epochs = MappingProxyType({name: int(fgdi[f"{name}_epochs"]) for name in stages})
        return cls(
            epochs=epochs,
            image=_fields(ImageOptimSettings, fgdi["image"]),
            prompt=_fields(PromptSettings, fgdi["prompt"]),
            **{f.name: fgdi[f.name] for f in dataclasses.fields(cls) if f.name not in ("epochs", "image", "prompt")},
        )


@dataclasses.dataclass(frozen=True)
class TestSettings:
    """``test``: how the engines evaluate (the evaluator, re-ranking memory) and what they draw."""

    evaluator: str = "fast"
    rerank_memory_gib: float = DEFAULT_MEMORY_GIB
    plots: bool = True
    plot_queries: int = 4


@dataclasses.dataclass(frozen=True)
class LossSettings:
    """``loss``: the baseline engines' loss (``loss.name``) and its options."""

    name: str = "softmax"
    label_smooth: bool = True
    margin: float = 0.3
    weight_t: float = 1.0
    weight_x: float = 0.0


def _fields(kind: type[T], node: Mapping[str, Any]) -> T:
    values = {f.name: node[f.name] for f in dataclasses.fields(kind)}
    return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
