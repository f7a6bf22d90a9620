"""A checkpoint's recipe: the settings, beyond its weights, that decide the features it gives an image.

A checkpoint used under another recipe than the one it was trained and tested with loads and runs,
and gives other features: evaluating a model trained with the authors' per-image normalisation
(``data.transforms [clip_fgdi]``) under torchreid's mean / std gave mAP 26.6 instead of 33.7, with no
word. So wherever a checkpoint makes features under a config other than its own (an evaluation, a
search or export given ``--config-file``), the config must agree with the one the checkpoint records
on these keys, or say ``test.allow_recipe_change True``. Settings that rank the same features
otherwise (``test.dist_metric``, ``test.normalize_feature``, ``test.rerank``, ...) may change: they
are what an evaluation chooses.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping

from yacs.config import CfgNode as CN

from ..data.transforms import CLIP_FGDI
from ..errors import ConfigError
from ..models import VARIANTS
from ..models.variants import variant_quick_gelu
from ..utils.checkpoint import read_checkpoint
from .checks import get, normalised_by_mean_std
from .loading import load_config_text
from .settings import clip_weights

ALLOW_KEY = "test.allow_recipe_change"


def _always(cfg: CN) -> bool:
    return True


def _fgdi(cfg: CN) -> bool:
    return cfg.model.name in VARIANTS


# Each key that decides the features, and when it does (it is compared where it does in both configs).
FEATURE_KEYS: dict[str, Callable[[CN], bool]] = {
    "data.height": _always,  # the test resize, and a ViT's position-embedding grid
    "data.width": _always,
    "data.transforms": _always,  # as the test transform it selects (clip_fgdi or torchreid's); the rest train only
    "data.norm_mean": normalised_by_mean_std,
    "data.norm_std": normalised_by_mean_std,
    "fgdi.neck_feat": _fgdi,  # the eval feature: before or after the BNNecks
    "fgdi.stride": _fgdi,  # the ViT's patch stride
    "fgdi.quick_gelu": _fgdi,  # the activation the weights were trained with, as resolved (None follows the CLIP)
    "fgdi.test_precision": _fgdi,  # the engine's extraction (FeatureExtractor and export run in fp32)
}


def _meant(cfg: CN, key: str) -> object:
    """The value of `key` as the model and data take it: ``fgdi.quick_gelu`` None is the activation the
    CLIP weights resolve to (True and None mean one model under OpenAI's weights)."""
    value = get(cfg, key)
    if key == "fgdi.quick_gelu":
        return variant_quick_gelu(cfg.model.name, clip_weights(cfg), value)
    return value


def _compared(cfg: CN, key: str) -> object:
    return CLIP_FGDI in get(cfg, key) if key == "data.transforms" else _meant(cfg, key)


def recipe_changes(recorded: CN, cfg: CN, ignore: Collection[str] = ()) -> dict[str, tuple]:
    """{key: (recorded value, value in `cfg`)} for each key of `FEATURE_KEYS` (`ignore` aside) that
    decides the features under both configs and makes other ones under `cfg`; values as `_meant`."""
    return {
        key: (_meant(recorded, key), _meant(cfg, key))
        for key, applies in FEATURE_KEYS.items()
        if key not in ignore and applies(recorded) and applies(cfg) and _compared(recorded, key) != _compared(cfg, key)
    }


def check_recipe(
    cfg: CN, checkpoint: str, state: Mapping | None = None, ignore: Collection[str] = (), fix: str = ""
) -> dict[str, tuple]:
    """The recipe changes (`recipe_changes`) of `cfg` against the config the checkpoint (its `state`,
    read from the file if not given) records, said in the log; `ConfigError` naming each one unless
    `cfg` sets ``test.allow_recipe_change``. A checkpoint that records no config (torchreid's own
    ``scripts/main.py`` saves none) cannot be checked: the log says so. `fix`: another way out, named
    in the refusal."""
    state = read_checkpoint(checkpoint, mmap=True) if state is None else state
    text = state.get("config")
    if not text:
        print(
            f"=> {checkpoint} records no config (torchreid's own checkpoints do not): whether its input size, "
            "test transform and normalisation are this config's cannot be checked"
        )
        return {}
    changes = recipe_changes(load_config_text(text, f"the config recorded in {checkpoint}"), cfg, ignore)
    listing = ", ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changes.items())
    if changes and not get(cfg, ALLOW_KEY):
        raise ConfigError(
            f"{checkpoint} was trained and tested under another recipe than this config's ({listing}): its "
            "features, and every number made from them, would not be those of its own results; set these keys "
            f"as the checkpoint records them{fix}, or {ALLOW_KEY} True to use this recipe on purpose"
        )
    if changes:
        print(f"=> {checkpoint} is used under another recipe than it was trained with ({ALLOW_KEY}): {listing}")
    return changes
