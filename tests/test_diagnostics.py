"""The diagnostics of the text stages: their rules, a run whose stage 2 is broken, resume, no text stage."""

import dataclasses
import json
import math

import pytest
import torch

from tests.test_fgdi_engine import _engine, _run
from torchreid_fgdi.engine import artifacts, diagnostics
from torchreid_fgdi.engine.run_log import read_metrics
from torchreid_fgdi.engine.stages import FGDI_STAGES
from torchreid_fgdi.evaluation.domains import majority_share, near_chance, neighbour_domain_share

# Stage 2 that trains nothing: the prompt vectors and both domain classifiers at a rate of 1e-9 (0 is refused)
FROZEN_PROMPTS = ["fgdi.prompt.lr", "1e-9", "fgdi.prompt.classifier_lr", "1e-9"]
FROZEN_PROMPTS += ["fgdi.prompt.warmup_lr", "0", "fgdi.prompt.min_lr", "0"]


def test_neighbour_domain_share_and_its_chance():
    apart = torch.cat([torch.zeros(12, 2), torch.full((12, 2), 100.0), torch.full((6, 2), -100.0)])
    apart += torch.randn(30, 2, generator=torch.Generator().manual_seed(0))
    domains = ["a"] * 12 + ["b"] * 12 + ["c"] * 6
    share, chance = neighbour_domain_share(apart, domains, k=5)
    assert share == 1.0
    assert chance == pytest.approx((12 * 11 + 12 * 11 + 6 * 5) / (30 * 29))
    mixed, _ = neighbour_domain_share(torch.zeros(30, 2) + torch.randn(30, 2), domains, k=5)
    assert mixed < 0.7
    with pytest.raises(ValueError, match="cannot each have 30 nearest neighbours"):
        neighbour_domain_share(apart, domains, k=30)


def test_chance_is_the_largest_domains_share_and_near_it_allows_two_standard_errors():
    assert majority_share([0, 0, 0, 1]) == 0.75 and majority_share([0, 1, 2]) == pytest.approx(1 / 3)
    assert near_chance(0.40, 1 / 3, 36) and not near_chance(0.60, 1 / 3, 36)  # 2 SE of 36 identities: 0.157
    assert near_chance(0.37, 1 / 3, 10**6) and not near_chance(0.39, 1 / 3, 10**6)  # the 5-point floor


@pytest.fixture(scope="module")
def broken(tiny_root, tmp_path_factory):
    """A short run whose stage 2 trains nothing: its engine, save_dir and console."""
    save_dir = tmp_path_factory.mktemp("frozen-prompts")
    engine = _engine(tiny_root, *FROZEN_PROMPTS)
    with pytest.MonkeyPatch.context() as patch:
        printed = []
        patch.setattr("builtins.print", lambda *args, **kwargs: printed.append(" ".join(map(str, args))))
        _run(engine, save_dir)
    return engine, save_dir, "\n".join(printed)


def test_a_stage_2_that_trains_nothing_is_flagged_in_the_log_and_the_results(broken):
    engine, save_dir, console = broken
    found = json.loads((save_dir / "results.json").read_text())["diagnostics"]
    for stage, what in (("stage2a", "identity"), ("stage2b", "domain")):
        warning = (
            f"{stage} did not move its prompt vectors or its domain classifier (by less than 0.001 of their norm): "
            f"its {what} prompts were not trained (fgdi.prompt.lr / classifier_lr too low?)"
        )
        assert warning in found["warnings"] and f"WARNING: {warning}" in console
        section = found[f"{what}_prompts"]
        assert max(section["moved"].values()) < diagnostics.MOVED
        assert section["verdict"] == "says nothing: the classifier did not train"
    assert diagnostics.TITLE in console and "## Diagnostics of the text stages" in (save_dir / "results.md").read_text()


def test_the_verdicts_on_prompts_that_tell_no_domain_or_equal_each_other(broken):
    """Every identity's prompt the same feature: no classifier can tell its domain (near chance, so the
    domain prompts are flagged), and identity and domain prompts the same: the guide has nothing."""
    engine, _, _ = broken
    same = torch.ones(engine.model.classifier.out_features, engine.model.text_encoder.text_projection.shape[1])
    found = diagnostics.prompt_diagnostics(engine, (same, same), metrics=[])  # no movement logged
    assert found["identity_prompts"]["verdict"] == "near chance: domain-invariant"
    assert found["domain_prompts"]["verdict"] == "near chance: not domain-relevant"
    assert found["prompt_cosine"]["mean"] == pytest.approx(1.0)
    warnings = diagnostics._warned(found)["warnings"]
    assert [w.split(":")[0] for w in warnings] == [
        "the domain prompts are not domain-relevant",
        "an identity's two prompts give almost the same text feature (mean cosine above 0.99)",
    ]
    lines = diagnostics.lines(found)
    assert "how far it moved: not measured (no stage2a/moved in metrics.jsonl)" in lines[0]


def test_a_guiding_term_that_stays_at_ln_2_is_inert():
    stage = dataclasses.replace(FGDI_STAGES[-1], epochs=5)
    rows = [{"group": "stage3", "step": e, "guide": math.log(2) + d} for e, d in enumerate((0.004, 0.003, -0.009), 1)]
    inert = diagnostics._guide(stage, rows)["guide"]
    assert inert["verdict"] == "inert" and inert["per_epoch"] == [r["guide"] for r in rows]
    assert inert["warnings"][0].startswith("the guiding term stayed within 0.01 of ln 2 = 0.693")
    rows[-1]["guide"] = math.log(2) - 0.02
    assert diagnostics._guide(stage, rows)["guide"]["verdict"] == "away from ln 2: it pushes the image features"
    assert diagnostics._guide(stage, rows)["guide"]["missing"] == "2 of 5 epochs not in metrics.jsonl"


def test_a_finished_run_tested_again_keeps_its_diagnostics(broken, tiny_root):
    engine, save_dir, _ = broken
    again = _engine(tiny_root, *FROZEN_PROMPTS)
    again.resume(str(save_dir / "checkpoints" / "latest.pth"))
    _run(again, save_dir)
    assert again.diagnostics == engine.diagnostics
    assert json.loads((save_dir / "results.json").read_text())["diagnostics"] == engine.diagnostics
    assert [r for r in read_metrics(str(save_dir)) if r["group"].endswith("/moved")] == [
        {"group": f"{stage}/moved", "step": 2, **engine.diagnostics[key]["moved"]}
        for stage, key in (("stage2a", "identity_prompts"), ("stage2b", "domain_prompts"))
    ]


def test_no_text_stage_no_diagnostics(tiny_root, tmp_path):
    ablation = ["fgdi.stage2a_epochs", "0", "fgdi.stage2b_epochs", "0", "fgdi.stage3_epochs", "0"]
    engine = _engine(tiny_root, *ablation)
    assert diagnostics.measure(engine, str(tmp_path), "euclidean", False) is None


def test_test_features_too_few_or_missing_are_said(tmp_path):
    stage = dataclasses.replace(FGDI_STAGES[-1], epochs=1)
    few = {"features": torch.randn(6, 4), "domains": ["a", "b"] * 3, "unseen": []}
    artifacts.save_domain_features(few, str(tmp_path), "before stage3")
    found = diagnostics._test_features(stage, str(tmp_path), "euclidean", False)
    assert diagnostics.lines(found) == [
        "test features: not measured without domains_after_stage3.pt",
        "test features: not measured, 6 images, not enough for 10 neighbours each",
    ]
