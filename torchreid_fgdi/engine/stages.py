"""CLIP-FGDI, and CLIP-ReID, as tables of stages, from which the engine derives its loop, parameters,
optimizers, schedules, checkpoints and logs (docs/method.md).

A stage is one row; a method is a table (`TABLES`, by the method's name); a model trains with the
table of the method its registered variant names (`model_table`, `models.variants.variant_method`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping

import torch

from ..errors import ConfigError
from ..models.variants import variant_method
from . import schedules
from .settings import FGDISettings

IMAGE = "image"  # batches of augmented images through the image encoder (torchreid's train loop)
PROMPT = "prompt"  # the prompts on image features extracted once, un-augmented
DONE = "done"  # the stage a finished run stands at
IMAGE_ENCODER = ("image_encoder.", "bottleneck", "classifier", "cv_embed")


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of a method: what it trains, on what, with which optimizer (see the module doc)."""

    name: str
    kind: str  # IMAGE or PROMPT
    trains: tuple[str, ...]  # prefixes of the parameter names it trains; every other one is frozen
    optimizer: str  # stages naming the same optimizer share it and its schedule (the authors' 1 and 3)
    text_guided: bool = False  # IMAGE: adds the i2t cross-entropy against every identity's prompt feature
    # IMAGE, text-guided: adds CLIP-FGDI's domain guidance, beta x guide beside (1 - beta) x i2t; without it the
    # i2t term weighs 1, as in CLIP-ReID's code
    domain_guidance: bool = False
    domain_prompts: bool = False  # PROMPT: the domain prompts (plain classifier), else the identity prompts (GRL)
    # PROMPT: adds omega x the domain classifier's cross-entropy (its parameters: the prefixes of `trains` after
    # the prompt vectors'); without it the stage is SupCon alone, as CLIP-ReID's
    domain_classifier: bool = False
    epochs: int = 0


FGDI_STAGES = (
    Stage("stage1", IMAGE, IMAGE_ENCODER, optimizer="image"),
    Stage("stage2a", PROMPT, ("promptlearner.clsctx", "dcgrl."), optimizer="stage2a", domain_classifier=True),
    Stage("stage2b", PROMPT, ("promptlearner.dmctx", "dc."), "stage2b", domain_prompts=True, domain_classifier=True),
    Stage("stage3", IMAGE, IMAGE_ENCODER, optimizer="image", text_guided=True, domain_guidance=True),
)
# CLIP-ReID (Li, Sun, Li, AAAI 2023): the identity prompts with both towers frozen, then the image
# encoder guided by the prompts' text features; no domain prompts, classifier or guidance.
CLIP_REID_STAGES = (
    Stage("prompt", PROMPT, ("promptlearner.clsctx",), optimizer="prompt"),
    Stage("image", IMAGE, IMAGE_ENCODER, optimizer="image", text_guided=True),
)
FGDI, CLIP_REID = "fgdi", "clip_reid"
TABLES = {FGDI: FGDI_STAGES, CLIP_REID: CLIP_REID_STAGES}  # method name -> its stages
STAGE_NAMES = tuple(stage.name for stage in FGDI_STAGES)
ALL_STAGE_NAMES = tuple(dict.fromkeys(stage.name for table in TABLES.values() for stage in table))
# fgdi.* keys read only through a row that sets the field (every other fgdi.* key, every table reads)
FIELD_KEYS = {
    "domain_guidance": ("fgdi.beta", "fgdi.guide_direction"),
    "domain_classifier": ("fgdi.grl_scale", "fgdi.prompt.omega", "fgdi.prompt.classifier_lr"),
}


def epoch_key(stage: str) -> str:
    """The config key of stage `stage`'s epochs."""
    return f"fgdi.{stage}_epochs"


def epoch_keys(table: Iterable[Stage]) -> tuple[str, ...]:
    return tuple(epoch_key(stage.name) for stage in table)


EPOCH_KEYS = epoch_keys(FGDI_STAGES)  # CLIP-FGDI's stages' epoch keys
ALL_EPOCH_KEYS = tuple(epoch_key(name) for name in ALL_STAGE_NAMES)


def model_table(variant: str | None) -> tuple[Stage, ...]:
    """The stages a model of registered variant `variant` trains with: its method's table (a model
    built without a variant name, `FGDI(...)` directly, is CLIP-FGDI's)."""
    return TABLES[variant_method(variant)] if variant else FGDI_STAGES


def unread_keys(table: Iterable[Stage]) -> tuple[str, ...]:
    """The fgdi.* keys that some table reads and `table` does not: other tables' epochs, and the keys of
    `FIELD_KEYS` none of its rows sets the field of."""
    table = tuple(table)
    read = set(epoch_keys(table))
    for field, keys in FIELD_KEYS.items():
        if any(getattr(stage, field) for stage in table):
            read.update(keys)
    some = (*ALL_EPOCH_KEYS, *(key for keys in FIELD_KEYS.values() for key in keys))
    return tuple(key for key in some if key not in read)


def with_epochs(table: Iterable[Stage], epochs: Mapping[str, int]) -> tuple[Stage, ...]:
    """`table` with each stage's epochs from the settings (``fgdi.<stage>_epochs``)."""
    missing = [stage.name for stage in table if stage.name not in epochs]
    if missing:
        raise ConfigError(f"no epochs set for stage(s) {', '.join(missing)}: give the settings an epoch count for each")
    return tuple(dataclasses.replace(stage, epochs=int(epochs[stage.name])) for stage in table)


def run_epoch(stages: Iterable[Stage], name: str, epoch: int) -> int:
    """Epoch `epoch` of stage `name` (DONE: the end) counted over the run, every stage's epochs in
    table order, prompt stages included: the logs' 'run epoch'."""
    stages = tuple(stages)
    names = [stage.name for stage in stages]
    at = names.index(name) if name != DONE else len(names)
    return sum(stage.epochs for stage in stages[:at]) + epoch


def trained_by(
    model: torch.nn.Module, prefixes: Iterable[str], frozen: Collection[str] = frozenset()
) -> dict[str, torch.nn.Parameter]:
    """The parameters a stage with these name prefixes trains (never those frozen when built)."""
    prefixes = tuple(prefixes)
    return {n: p for n, p in model.named_parameters() if n.startswith(prefixes) and n not in frozen}


def build_optimizers(
    model: torch.nn.Module, stages: tuple[Stage, ...], settings: FGDISettings, frozen: Collection[str] = frozenset()
) -> tuple[dict[str, torch.optim.Optimizer], dict[str, torch.optim.lr_scheduler.LRScheduler]]:
    """One Adam and schedule per optimizer name, as the authors build them: the image stages'
    with a doubled bias rate and a warm-up multi-step schedule counted over all their epochs;
    each prompt stage's with the prompt vectors and its domain classifier at separate rates and
    a warm-up cosine over the stage."""
    optimizers, schedulers = {}, {}
    for name in dict.fromkeys(stage.optimizer for stage in stages):
        sharing = [stage for stage in stages if stage.optimizer == name]
        kind = {stage.kind for stage in sharing}
        if len(kind) != 1 or len({stage.trains for stage in sharing}) != 1:
            raise ConfigError(
                f"optimizer {name!r} is shared by stages ({', '.join(s.name for s in sharing)}) that train different "
                "parameters or are of different kinds: stages share an optimizer only to continue one another"
            )
        for stage in sharing:
            if stage.kind == PROMPT and bool(stage.trains[1:]) != stage.domain_classifier:
                raise ConfigError(
                    f"prompt stage {stage.name!r} trains {', '.join(stage.trains)} with domain_classifier "
                    f"{stage.domain_classifier}: a prompt stage lists its domain classifier after its prompt vectors "
                    "exactly when it has one"
                )
        params = trained_by(model, sharing[0].trains, frozen)
        if kind == {IMAGE}:
            optimizers[name], schedulers[name] = _image_optimizer(params, settings)
        else:
            epochs = sum(stage.epochs for stage in sharing)
            optimizers[name], schedulers[name] = _prompt_optimizer(params, sharing[0].trains, settings, epochs)
    return optimizers, schedulers


# Each kind's optimizer groups in the order the builders below make them, as the logs label them;
# the first group runs at the configured rate (fgdi.image.lr, fgdi.prompt.lr).
LR_GROUPS = {IMAGE: ("lr", "bias"), PROMPT: ("lr", "classifier")}


FUSED_ADAM_DEVICES = ("cpu", "cuda")  # where torch's Adam has a fused kernel


def _adam(groups: list[dict], weight_decay: float) -> torch.optim.Adam:
    """torch's Adam, fused into one kernel where the parameters' device has it: the same update
    (to float rounding) in one pass over the tensors instead of a dozen per tensor, which is three
    times faster for a ViT-B/16 tower's 86M parameters on CPU."""
    devices = {p.device.type for group in groups for p in group["params"]}
    fused = devices <= set(FUSED_ADAM_DEVICES) or None
    return torch.optim.Adam(groups, weight_decay=weight_decay, fused=fused)


def _image_optimizer(params: dict, settings: FGDISettings):
    s = settings.image
    groups = [
        {"params": [p for n, p in params.items() if "bias" not in n], "lr": s.lr},
        {"params": [p for n, p in params.items() if "bias" in n], "lr": s.lr * s.bias_lr_factor},
    ]
    optimizer = _adam(groups, s.weight_decay)
    return optimizer, schedules.image_scheduler(optimizer, s.milestones, s.gamma, s.warmup_factor, s.warmup_epochs)


def _prompt_optimizer(params: dict, trains: tuple[str, ...], settings: FGDISettings, epochs: int):
    """The first prefix names the prompt vectors, the rest (if any) their domain classifier."""
    s = settings.prompt
    vectors, classifier = trains[0], trains[1:]
    groups = [{"params": [p for n, p in params.items() if n.startswith(vectors)], "lr": s.lr}]
    if classifier:
        groups.append({"params": [p for n, p in params.items() if n.startswith(classifier)], "lr": s.classifier_lr})
    optimizer = _adam(groups, s.weight_decay)
    return optimizer, schedules.prompt_scheduler(optimizer, epochs, s.warmup_epochs, s.warmup_lr, s.min_lr)
