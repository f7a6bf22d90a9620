"""Loading FGDI weights from our checkpoints, the authors' (Qi5Lei/CLIP-FGDI) and CLIP-ReID's.

The three layouts differ only in names and in the position embedding's grid (it follows each
run's input size), so loading is: detect the layout, rename, resample the grid, load strictly.
Our state dicts also record their model (``_extra_state``, `FGDI.get_extra_state`): its variant,
which is checked, and its grid, which is then known.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping

import torch
from torch import nn

from ..utils.checkpoint import CheckpointError, check_finite, read_checkpoint
from .image_encoder import resize_pos_embed

_AUTHORS_IMAGE, _OURS_IMAGE = "image_encoder.", "image_encoder.visual."
_CLIPREID_PROMPTS = {"prompt_learner.cls_ctx": "promptlearner.clsctx"}
_POS_EMBEDS = ("image_encoder.visual.positional_embedding", "image_encoder.visual.attnpool.positional_embedding")
RECORD_KEY = "_extra_state"  # where an FGDI state dict records its model (torch's name for a module's extra state)
RECORD_FORMAT = 1  # the layout of the record (`FGDI.get_extra_state`); a newer one is refused
_VIT_BLOCK = re.compile(r"image_encoder\.visual\.transformer\.resblocks\.(\d+)\.")
# FGDI parts a CLIP-ReID model does not have: they keep their initial values.
_NOT_IN_CLIPREID = (
    "promptlearner.dmctx",
    "promptlearner.token_prefix_domain",
    "promptlearner.token_intermediate_domain",
    "promptlearner.token_suffix_domain",
    "dc.",
    "dcgrl.",
)


def _swap_prefix(state: Mapping, old: str, new: str) -> dict:
    return {(new + k[len(old) :] if k.startswith(old) else k): v for k, v in state.items()}


def from_authors_state_dict(state: Mapping) -> dict:
    """The authors' checkpoint keys in this model's layout.

    Only the image tower differs: theirs is ``image_encoder.*``, ours keeps open_clip's module
    under ``image_encoder.visual.*``.
    """
    return _swap_prefix(state, _AUTHORS_IMAGE, _OURS_IMAGE)


def to_authors_state_dict(state: Mapping) -> dict:
    """This model's state dict in the authors' key layout (the inverse of `from_authors_state_dict`),
    without its record, which the authors' code would refuse as an unexpected key."""
    return _swap_prefix({k: v for k, v in state.items() if k != RECORD_KEY}, _OURS_IMAGE, _AUTHORS_IMAGE)


def from_clipreid_state_dict(state: Mapping) -> dict:
    """A CLIP-ReID (Syliz517/CLIP-ReID) checkpoint in this model's layout.

    Besides the image prefix, CLIP-ReID names the prompt learner ``prompt_learner`` and its
    vectors ``cls_ctx``; its optional camera embedding ``cv_embed`` keeps its name.
    """
    renamed = {}
    for key, value in from_authors_state_dict(state).items():
        key = _CLIPREID_PROMPTS.get(key, key)
        renamed["promptlearner." + key[len("prompt_learner.") :] if key.startswith("prompt_learner.") else key] = value
    return renamed


def detect_layout(state: Mapping) -> str:
    """``'fgdi'`` (ours), ``'authors'`` or ``'clipreid'``."""
    if any(k.startswith("prompt_learner.") for k in state):
        return "clipreid"
    if any(k.startswith(_OURS_IMAGE) for k in state):
        return "fgdi"
    if any(k.startswith(_AUTHORS_IMAGE) for k in state):
        return "authors"
    raise CheckpointError("not an FGDI, CLIP-FGDI or CLIP-ReID checkpoint: no image_encoder.* keys")


def record_tensor(record: Mapping) -> torch.Tensor:
    """An FGDI model's record as its state dict keeps it: the bytes of its JSON text, a tensor like every
    other entry (so ``torch.equal``, ``.to()``, safetensors and torchreid's shape checks take it)."""
    return torch.tensor(list(json.dumps(dict(record)).encode()), dtype=torch.uint8)


def decode_record(value: torch.Tensor) -> dict:
    """The record `record_tensor` made; `CheckpointError` for anything else, or a newer format."""
    try:
        record = json.loads(bytes(value.tolist()).decode())
        newer = record["format"] > RECORD_FORMAT
    except (AttributeError, TypeError, ValueError, KeyError) as err:
        raise CheckpointError(f"the state dict's {RECORD_KEY} is not an FGDI model's record ({err})") from err
    if newer:
        raise CheckpointError(
            f"the state dict's record has format {record['format']}, newer than this torchreid-fgdi's "
            f"({RECORD_FORMAT}): upgrade torchreid-fgdi to read it"
        )
    return record


def read_record(state: Mapping) -> dict | None:
    """The model an FGDI state dict records (`FGDI.get_extra_state`), or None: saved before records existed."""
    return decode_record(state[RECORD_KEY]) if RECORD_KEY in state else None


def another_variant(theirs: str, ours: str, how: str, fix: str = "") -> CheckpointError:
    """The refusal of `theirs` weights by a model of variant `ours`; `how` says where `theirs` was read,
    `fix` what to do (by default: build `theirs`, as torchreid does)."""
    torchreid = f"FeatureExtractor(model_name='{theirs}', ...), build_model('{theirs}', ...)"
    fix = fix or f"build {theirs} instead (torchreid: {torchreid})"
    return CheckpointError(
        f"the checkpoint holds {theirs} weights ({how}), but the model being loaded is {ours}: {fix}"
    )


def check_variant(model: nn.Module, theirs: str | None, how: str) -> None:
    """Refuses weights of variant `theirs` (read as `how` says) for a model built as another variant."""
    ours = getattr(model, "variant", None)
    if theirs and ours and theirs != ours:
        raise another_variant(theirs, ours, how)


def _tower(weights: Mapping) -> str | None:
    """The image tower of FGDI weights (this model's layout) in words: what tells the variants apart."""
    vit = "image_encoder.visual."
    if vit + "class_embedding" in weights:
        blocks = {m.group(1) for k in weights if (m := _VIT_BLOCK.match(k))}
        width, patch = weights[vit + "class_embedding"].shape[0], weights[vit + "conv1.weight"].shape[-1]
        return f"a ViT of width {width} with {len(blocks)} blocks and {patch}-pixel patches"
    if vit + "attnpool.k_proj.weight" in weights:
        stages = [len({k.split(".")[3] for k in weights if k.startswith(f"{vit}layer{i}.")}) for i in range(1, 5)]
        width = weights[vit + "attnpool.k_proj.weight"].shape[1]
        return f"a ResNet with {stages} blocks per stage and an attention pool of width {width}"
    return None


def check_tower(model: nn.Module, state: Mapping) -> None:
    """Refuses another variant's weights by the image towers' shapes, naming both: what a state dict
    that records nothing (saved before the record existed, or without a config) still tells."""
    theirs, ours = _tower(state), _tower(dict(model.named_parameters()))
    if theirs and ours and theirs != ours:
        name = getattr(model, "variant", None) or type(model).__name__
        raise CheckpointError(
            f"the checkpoint's image tower is {theirs}, this {name} model's is {ours}: the weights are another "
            "variant's; build the variant they were saved from (torchreid: FeatureExtractor(model_name=...))"
        )


_CONVERTERS = {"fgdi": dict, "authors": from_authors_state_dict, "clipreid": from_clipreid_state_dict}


def _grid_of(rows: int, ckpt_grid: tuple[int, int] | None, key: str) -> tuple[int, int]:
    if ckpt_grid is not None:
        if ckpt_grid[0] * ckpt_grid[1] + 1 != rows:
            raise CheckpointError(f"{key} has {rows - 1} grid rows, which is not ckpt_grid={tuple(ckpt_grid)}")
        return tuple(ckpt_grid)
    side = math.isqrt(rows - 1)
    if side * side != rows - 1:
        raise CheckpointError(
            f"{key} holds a non-square grid of {rows - 1} positions (the checkpoint's input size differs from this "
            "model's); pass ckpt_grid=(rows, cols) of the checkpoint, e.g. (16, 8) for 256x128 at stride 16"
        )
    return side, side


def read_state_dict(source: str | Mapping, where: str = "") -> dict:
    """A state dict from a file or a mapping: torchreid / CLIP-ReID files wrap it or not, DataParallel
    prefixes ``module.``."""
    state = source if isinstance(source, Mapping) else read_checkpoint(source)
    if "state_dict" in state:
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    check_finite(state, where or (source if isinstance(source, str) else "the state dict"))
    return state


def fit_position_embeddings(model: nn.Module, state: Mapping, ckpt_grid: tuple[int, int] | None = None) -> dict:
    """`state` with its position embeddings resampled from the checkpoint's grid (`ckpt_grid`, or
    square) to `model`'s."""
    state, own = dict(state), model.state_dict()
    for key in _POS_EMBEDS:
        if key in state and key in own and state[key].shape != own[key].shape:
            old = _grid_of(state[key].shape[0], ckpt_grid, key)
            state[key] = resize_pos_embed(state[key], old, model.image_encoder.grid_size)
    return state


def load_fgdi_checkpoint(
    model: nn.Module, source: str | Mapping, ckpt_grid: tuple[int, int] | None = None
) -> list[str]:
    """Loads an FGDI, authors' or CLIP-ReID checkpoint (file or state dict) into `model`.

    Position embeddings are resampled from the checkpoint's grid (`ckpt_grid`, else the one its state
    dict records, else square) to the model's; everything else must match exactly. The model keeps
    its own stride, activation and eval feature (the recipe it was built with: weights to train
    from). Returns the keys the checkpoint lacks by design and that keep their initial values
    (CLIP-ReID has no domain prompts or domain classifiers).

    Raises:
        ValueError: naming every mismatched key and what to change.
    """
    state = read_state_dict(source)
    record = read_record(state)
    state.pop(RECORD_KEY, None)
    if record:
        check_variant(model, record["variant"], "as its state dict records")
        ckpt_grid = ckpt_grid or tuple(record["grid"])
    layout = detect_layout(state)
    state = _CONVERTERS[layout](state)
    check_tower(model, state)
    state = fit_position_embeddings(model, state, ckpt_grid)
    own = {k: v for k, v in model.state_dict().items() if k != RECORD_KEY}
    kept = [k for k in own if k not in state and layout == "clipreid" and k.startswith(_NOT_IN_CLIPREID)]
    problems = [f"missing: {k}" for k in own if k not in state and k not in kept]
    problems += [f"unexpected: {k}" for k in state if k not in own]
    problems += [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    if problems:
        hint = (
            "build the model with the checkpoint's backbone, num_classes (classifier rows), num_domains (dmctx rows)"
            " and, for CLIP-ReID's camera embedding (cv_embed), num_cameras"
        )
        raise CheckpointError(f"{layout} checkpoint does not fit this model ({hint}):\n  " + "\n  ".join(problems))
    model.load_state_dict(state, strict=False)
    return kept


def load_torchreid_checkpoint(
    model: nn.Module, source: str | Mapping, skip_classifier: bool = False, where: str = ""
) -> list[str]:
    """Loads a torchreid model's checkpoint into `model`, every weight or nothing.

    torchreid's `load_pretrained_weights` skips whatever does not fit with a warning on stderr,
    so another model's file gives a random network and a normal-looking table. Here a missing,
    unexpected or differently shaped weight is an error; only the ID classifier may differ when
    `skip_classifier` (weights trained on other identities: unused at test time, re-initialised
    for training, as torchreid does). Returns the skipped keys. `where` names a state dict passed
    as a mapping in messages (the file it came from).
    """
    where = where or (source if isinstance(source, str) else "the state dict")
    state = read_state_dict(source, where)
    own = model.state_dict()
    problems = {k: "missing" for k in own if k not in state}
    problems.update({k: "unexpected" for k in state if k not in own})
    problems.update(
        {
            k: f"checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
            for k, v in state.items()
            if k in own and v.shape != own[k].shape
        }
    )
    skipped = [k for k in problems if skip_classifier and k.startswith("classifier")]
    shown = [f"{k}: {why}" for k, why in problems.items() if k not in skipped]
    if shown:
        listed = "\n  ".join(shown[:10]) + (f"\n  ... {len(shown) - 10} more" if len(shown) > 10 else "")
        raise CheckpointError(f"{where} does not fit {type(model).__name__} (another model's checkpoint?):\n  {listed}")
    model.load_state_dict({k: v for k, v in state.items() if k not in problems}, strict=False)
    return skipped
