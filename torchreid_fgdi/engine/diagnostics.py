"""What the text stages did, measured once per run: the block of lines after training, the
``diagnostics`` section of ``results.json`` and ``results.md`` (docs/method.md, "Reading the
diagnostics").

Each number is keyed on the stage table, on the stages that ran (epochs > 0): the identity
prompts' domain classifier when a prompt stage trained one beside them, the domain prompts and
their cosine to the identity prompts when a `domain_prompts` stage ran, the guiding term when
the text-guided stage logged one, the test features before and after that stage. A table with
none of these (stage 1 only) gets no diagnostics, nor do the baselines.

Everything is read from what the run already has: the prompt features the text-guided stage
caches, the epochs' means and the prompt stages' movement in ``metrics.jsonl``, and the domain
features `hooks.DomainFeatures` saved; a prompt stage's starting point is kept in its checkpoints.
So a resumed run (or a finished one tested again) reports what an uninterrupted one does.
"""

from __future__ import annotations

import math
import os.path as osp

import torch
import torch.nn.functional as F
import torchreid

from ..evaluation.domains import NEIGHBOURS, majority_share, near_chance, neighbour_domain_share
from . import artifacts, caches, distributed
from .hooks import Engine, Hook
from .run_log import latest, read_metrics
from .stages import PROMPT, Stage, trained_by

TITLE = "=> Diagnostics of the text stages (docs/method.md#reading-the-diagnostics):"
GUIDE_INERT = math.log(2)  # softplus(0): the guiding term when both prompts are equally near the image
# The guiding term is inert when every epoch's mean stays this close to ln 2: softplus' slope at 0
# is 1/2, so 0.01 is a mean cosine difference of 0.02 between the two prompts, nothing to guide by.
GUIDE_BAND = 0.01
# Two prompt features at this cosine are at most sqrt(2 - 2 x 0.99) = 0.14 apart on the unit
# sphere, which bounds the cosine difference the guiding term reads: it has little to push with.
SAME_PROMPTS = 0.99
# A prompt stage that changed its prompt vectors (or its classifier) by less than this share of
# their norm did not train them: Adam moves each number by about the learning rate per step, so
# even a short stage at the configured rates moves the 0.02-sized initial vectors by far more.
MOVED = 1e-3
PARTS = {"prompts": "prompt vectors", "classifier": "domain classifier"}
# The neighbours' own-domain share moved by less than this between before and after: unchanged.
UNCHANGED = 0.02


class Diagnostics(Hook):
    """Prints the prompts' numbers when the text-guided stage starts (an early warning on a long
    run) and the whole block after the run, before the final test writes it to the results."""

    def __init__(self, save_dir: str, dist_metric: str = "euclidean", normalize_feature: bool = False):
        self.save_dir, self.dist_metric, self.normalize_feature = save_dir, dist_metric, normalize_feature

    def before_stage(self, engine, stage):
        if stage.kind == PROMPT and stage.epochs and engine.stage_epoch == 0 and distributed.is_main():
            engine.stage_start = _parameters(engine, stage)  # kept in the stage's checkpoints, for a resume
        if not (stage.text_guided and engine.stage_epoch == 0 and stage.epochs and distributed.is_main()):
            return
        found = _warned(prompt_diagnostics(engine, engine._text_cache, read_metrics(self.save_dir)))
        if len(found) > 1:  # a section beside the warnings
            print(block(found, f"=> The prompts {stage.name} reads (diagnostics):"))

    def after_stage(self, engine, stage):
        """How far the stage moved its prompt vectors and its domain classifier, each relative to
        where it started (``engine.stage_start``, which a resume restores), into ``metrics.jsonl``
        (group ``<stage>/moved``), where the diagnostics read it at the end."""
        if stage.kind != PROMPT or not engine.stage_start:  # not a prompt stage, or another process
            return
        before, after = engine.stage_start, _parameters(engine, stage)
        engine.stage_start = {}
        moved = {k: float((after[k] - v).norm() / v.norm().clamp_min(1e-12)) for k, v in before.items()}
        engine.run_log.log(f"{stage.name}/moved", moved, stage.epochs)

    def after_run(self, engine):
        engine.diagnostics = measure(engine, self.save_dir, self.dist_metric, self.normalize_feature)
        if engine.diagnostics:
            print(block(engine.diagnostics, TITLE))


def measure(engine: Engine, save_dir: str, dist_metric: str, normalize_feature: bool) -> dict | None:
    """The run's diagnostics (None: no text stage ran, or not the main process). Every process calls
    it: the prompt features of a run that did not cache them are encoded on rank 0 and broadcast."""
    ran = [stage for stage in engine.stages if stage.epochs > 0]
    if not any(stage.kind == PROMPT or stage.text_guided for stage in ran):
        return None
    text = engine._text_cache
    if text is None and any(stage.kind == PROMPT for stage in ran):
        text = engine.prompt_features()
    if not distributed.is_main():
        return None
    metrics = read_metrics(save_dir)
    found = prompt_diagnostics(engine, text, metrics)
    guided = next((stage for stage in ran if stage.text_guided), None)
    if guided is not None:
        found.update(_guide(guided, metrics))
        found.update(_test_features(guided, save_dir, dist_metric, normalize_feature))
    return _warned(found)


def _warned(found: dict) -> dict:
    """`found` with its sections' warnings gathered under ``warnings``, in the sections' order."""
    found["warnings"] = [warning for section in found.values() for warning in section.pop("warnings", [])]
    return found


def _parameters(engine: Engine, stage: Stage) -> dict[str, torch.Tensor]:
    """A prompt stage's trained parameters, flattened: its prompt vectors (the first prefix) and
    its domain classifier (the others, if any)."""
    groups = {"prompts": stage.trains[:1], "classifier": stage.trains[1:]}
    params = {k: list(trained_by(engine.model, prefixes).values()) for k, prefixes in groups.items() if prefixes}
    return {k: torch.cat([p.detach().flatten().float().cpu() for p in v]) for k, v in params.items() if v}


def prompt_diagnostics(engine: Engine, text: tuple[torch.Tensor, torch.Tensor] | None, metrics: list[dict]) -> dict:
    """The identity and domain prompts' sections, and their cosine, from the prompt features
    (`caches.prompt_features`) and how far each prompt stage moved them (``metrics.jsonl``)."""
    ran = [stage for stage in engine.stages if stage.epochs > 0 and stage.kind == PROMPT]
    if text is None or not ran:
        return {}
    n = engine.datamanager.num_train_pids
    invariant, relevant = (t[:n] for t in text)
    dsetids = caches.row_dsetids(engine.train_loader.dataset.train, n).to(invariant.device)
    found = {}
    for stage in ran:
        key = "domain_prompts" if stage.domain_prompts else "identity_prompts"
        found[key] = _prompts(engine, stage, relevant if stage.domain_prompts else invariant, dsetids, metrics)
    if "domain_prompts" in found and "identity_prompts" in found:
        cosine = F.cosine_similarity(invariant, relevant, dim=1)
        found["prompt_cosine"] = {"mean": float(cosine.mean()), "min": float(cosine.min())}
        apart = math.sqrt(2 - 2 * min(found["prompt_cosine"]["mean"], 1.0))
        if found["prompt_cosine"]["mean"] > SAME_PROMPTS:
            found["prompt_cosine"]["verdict"] = "almost the same feature: the guiding term has nothing to push with"
            found["prompt_cosine"]["warnings"] = [
                f"an identity's two prompts give almost the same text feature (mean cosine above {SAME_PROMPTS}): "
                "the guiding term has nothing to push with"
            ]
        else:
            found["prompt_cosine"]["verdict"] = (
                f"they differ: the guiding term reads cosine differences of up to about {apart:.2f}"
            )
    return found


def _prompts(engine: Engine, stage: Stage, text: torch.Tensor, dsetids: torch.Tensor, metrics: list[dict]) -> dict:
    """One prompt stage's section: how far it moved its prompts and classifier (`Diagnostics.after_stage`)
    and its domain classifier's accuracy on the prompts' features, when the stage trained one."""
    section: dict = {"stage": stage.name, "warnings": []}
    what = "domain" if stage.domain_prompts else "identity"
    moved = latest(metrics, f"{stage.name}/moved")
    if moved:
        section["moved"] = {k: v for k, v in moved[-1].items() if k not in ("group", "step")}
        still = [k for k, v in section["moved"].items() if v < MOVED]
        if still:
            section["warnings"].append(
                f"{stage.name} did not move its {' or its '.join(PARTS[k] for k in still)} (by less than {MOVED:g} of "
                f"their norm): its {what} prompts were not trained (fgdi.prompt.lr / classifier_lr too low?)"
            )
    if not stage.domain_classifier:  # the prompt vectors alone: no domain classifier to ask
        return section
    model, training = engine.model, engine.model.training
    model.eval()  # the classifier's batch norm on its running statistics, which it must not update here
    with torch.no_grad():
        logits = model.domain_logits(text, adversarial=not stage.domain_prompts)
    model.train(training)
    found = torchreid.metrics.accuracy(logits, dsetids)[0].item() / 100  # a fraction, as every share here
    chance = majority_share(dsetids.tolist())
    section.update(domain_accuracy=found, chance=chance, identities=len(dsetids))
    close = near_chance(found, chance, len(dsetids))
    if section.get("moved", {}).get("classifier", 1.0) < MOVED:
        section["verdict"] = "says nothing: the classifier did not train"
    elif stage.domain_prompts:
        section["verdict"] = "near chance: not domain-relevant" if close else "above chance: domain-relevant"
        if close:
            section["warnings"].append(
                f"the domain prompts are not domain-relevant: {stage.name}'s domain classifier tells an identity's "
                f"domain from them at {found:.1%}, near chance ({chance:.1%})"
            )
    else:
        section["verdict"] = "near chance: domain-invariant" if close else "above chance: they still tell the domain"
        if not close:
            section["warnings"].append(
                f"the identity prompts are not domain-invariant: {stage.name}'s domain classifier tells an "
                f"identity's domain from its prompt at {found:.1%} (chance {chance:.1%})"
            )
    return section


def _guide(stage: Stage, metrics: list[dict]) -> dict:
    """The guiding term's mean per epoch (from ``metrics.jsonl``) against its inert value ln 2."""
    per_epoch = [row["guide"] for row in latest(metrics, stage.name) if "guide" in row]
    if not per_epoch:
        return {}
    section = {"stage": stage.name, "per_epoch": per_epoch, "inert": GUIDE_INERT, "band": GUIDE_BAND}
    if len(per_epoch) < stage.epochs:
        section["missing"] = f"{stage.epochs - len(per_epoch)} of {stage.epochs} epochs not in metrics.jsonl"
    if max(abs(g - GUIDE_INERT) for g in per_epoch) < GUIDE_BAND:
        section["verdict"] = "inert"
        section["warnings"] = [
            f"the guiding term stayed within {GUIDE_BAND} of ln 2 = {GUIDE_INERT:.3f} (softplus(0), its value when "
            f"both prompts are equally near the image) through {stage.name}: it guided nothing"
        ]
    else:
        section["verdict"] = "away from ln 2: it pushes the image features"
    return {"guide": section}


def _test_features(stage: Stage, save_dir: str, dist_metric: str, normalize_feature: bool) -> dict:
    """Each test image's nearest neighbours' own-domain share before and after `stage`, from the
    features `hooks.DomainFeatures` saved, by the test's distance."""
    distance = dist_metric + (" (normalised)" if normalize_feature else "")
    section: dict = {"stage": stage.name, "k": NEIGHBOURS, "distance": distance}
    for when in ("before", "after"):
        path = artifacts.domain_features_path(save_dir, f"{when} {stage.name}")
        if not osp.isfile(path):
            section.setdefault("missing", []).append(osp.basename(path))
            continue
        saved = torch.load(path, weights_only=True)
        if len(saved["domains"]) <= NEIGHBOURS:
            section["too_few"] = f"{len(saved['domains'])} images, not enough for {NEIGHBOURS} neighbours each"
            continue
        share, chance = neighbour_domain_share(
            saved["features"], saved["domains"], NEIGHBOURS, dist_metric, normalize_feature
        )
        section.update({when: share, "chance": chance, "images": len(saved["domains"])})
    if "before" in section and "after" in section:
        change = section["after"] - section["before"]
        if change > UNCHANGED:
            section["verdict"] = f"more domain-separable after {stage.name} (the method wants less)"
        elif change < -UNCHANGED:
            section["verdict"] = f"less domain-separable after {stage.name}, as the method wants"
        else:
            section["verdict"] = f"about as domain-separable after {stage.name} as before"
    return {"test_features": section}


def lines(found: dict) -> list[str]:
    """The diagnostics as sentences a researcher reads, one per measure, then one per warning."""
    out = []
    for key in ("identity_prompts", "domain_prompts"):
        if key in found:
            s, what = found[key], key.split("_")[0]
            parts = []
            if "domain_accuracy" in s:
                parts.append(
                    f"its domain classifier is right for {s['domain_accuracy']:.1%} of {s['identities']} identities "
                    f"(chance {s['chance']:.1%}, the largest domain's share): {s['verdict']}"
                )
            if "moved" in s:
                moved = ", ".join(f"{PARTS[k]} {v:.2g}" for k, v in s["moved"].items())
                parts.append(f"moved (relative to their norm): {moved}")
            else:
                parts.append(f"how far it moved: not measured (no {s['stage']}/moved in metrics.jsonl)")
            out.append(f"{what} prompts ({s['stage']}): {'; '.join(parts)}")
    if "prompt_cosine" in found:
        s = found["prompt_cosine"]
        out.append(f"an identity's two prompts: mean cosine {s['mean']:.3f} (lowest {s['min']:.3f}): {s['verdict']}")
    if "guide" in found:
        s = found["guide"]
        g = s["per_epoch"]
        furthest = max(abs(v - s["inert"]) for v in g)
        out.append(
            f"guiding term ({s['stage']}): {g[0]:.3f} in epoch 1, {g[-1]:.3f} in epoch {len(g)}, at most "
            f"{furthest:.3f} from its inert value ln 2 = {s['inert']:.3f}: {s['verdict']}"
            + (f" ({s['missing']})" if "missing" in s else "")
        )
    if "test_features" in found:
        s = found["test_features"]
        measured = ", ".join(f"{s[w]:.2f} {w} {s['stage']}" for w in ("before", "after") if w in s)
        if measured:
            out.append(
                f"test images' {s['k']} nearest neighbours from their own domain: {measured} "
                f"(chance {s['chance']:.2f}, {s['images']} images)" + (f": {s['verdict']}" if "verdict" in s else "")
            )
        if "missing" in s:
            out.append(f"test features: not measured without {', '.join(s['missing'])}")
        if "too_few" in s:
            out.append(f"test features: not measured, {s['too_few']}")
    return out + [f"WARNING: {warning}" for warning in found.get("warnings", [])]


def block(found: dict, title: str) -> str:
    """The console's block: `title`, then `lines` indented."""
    return "\n".join([title, *(f"   {line}" for line in lines(found))])


def markdown(found: dict) -> str:
    """``results.md``'s section."""
    return "\n## Diagnostics of the text stages\n\n" + "\n".join(f"- {line}" for line in lines(found)) + "\n"
