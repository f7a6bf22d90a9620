"""Models side by side (the README's main job) and configs that build on a base config."""

import json
import re
from pathlib import Path

import pytest

from torchreid_fgdi.cli.benchmark import benchmark, main, write_tables
from torchreid_fgdi.config import load_config
from torchreid_fgdi.errors import ConfigError, RunFolderError
from torchreid_fgdi.evaluation import results_from_json
from torchreid_fgdi.evaluation.report import paired_difference, rerank_note

CONFIGS = Path(__file__).parents[1] / "configs" / "synthetic"
FGDI, ABLATION = str(CONFIGS / "fgdi_tiny.yaml"), str(CONFIGS / "fgdi_tiny_stage1_only.yaml")
CLIP_REID = str(CONFIGS / "clip_reid_tiny_clip.yaml")
SHORT = ["fgdi.stage1_epochs", "1", "fgdi.stage2a_epochs", "1", "fgdi.stage2b_epochs", "1", "fgdi.stage3_epochs", "1"]


def test_derived_config_keeps_its_base_and_overrides_what_it_says(tmp_path):
    base, derived = load_config(FGDI), load_config(ABLATION)
    assert derived.model.name == base.model.name == "fgdi_tiny"
    assert derived.fgdi.prompt.lr == base.fgdi.prompt.lr and derived.fgdi.image.lr == base.fgdi.image.lr
    assert derived.fgdi.stage1_epochs == 30 and derived.fgdi.stage3_epochs == 0
    assert derived.data.save_dir != base.data.save_dir
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"_BASE_: {FGDI}\nfgdi:\n  stage_3_epochs: 2\n")
    with pytest.raises(ConfigError, match=r"'fgdi.stage_3_epochs' in .*bad.yaml; did you mean fgdi.stage3_epochs"):
        load_config(str(bad))


def test_models_side_by_side_and_collected_again(tiny_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the configs' save_dirs are relative
    out = tmp_path / "bench"
    clip_reid = tmp_path / "clip_reid_tiny.yaml"  # the shipped CLIP-ReID config, short and without pretraining
    clip_reid.write_text(f"_BASE_: {CLIP_REID}\nfgdi:\n  clip_weights: ''\n  prompt_epochs: 1\n  image_epochs: 1\n")
    configs = [FGDI, ABLATION, str(clip_reid)]
    runs = benchmark(["--configs", *configs, "--root", tiny_root, "--out", str(out), *SHORT])
    assert list(runs) == ["fgdi_tiny", "fgdi_tiny_stage1_only", "clip_reid_tiny"]
    table = (out / "benchmark.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| synth_d | unseen |"))
    for column, folder in ((2, "fgdi_tiny"), (6, "clip_reid_tiny_clip")):
        saved = json.loads((tmp_path / "log/synthetic" / folder / "results.json").read_text())
        assert row.split(" | ")[column] == f"{100 * saved['synth_d']['mAP']:.1f}"
    assert (tmp_path / "log/synthetic/clip_reid_tiny_clip/checkpoints/image.pth").is_file()
    csv = (out / "benchmark.csv").read_text().splitlines()
    assert csv[0] == "model,target,domain,mAP,R1,R5,R10" and len(csv) == 1 + 3 * (4 + 1)
    checkpoint = tmp_path / "log/synthetic/fgdi_tiny/checkpoints/stage3.pth"
    written = checkpoint.stat().st_mtime_ns
    benchmark(["--configs", *configs, "--root", tiny_root, "--out", str(out), "--collect", *SHORT])
    assert (out / "benchmark.md").read_text() == table and checkpoint.stat().st_mtime_ns == written


def test_configs_on_different_data_are_refused(tmp_path):
    other = tmp_path / "one_source.yaml"
    other.write_text(f"_BASE_: {FGDI}\ndata:\n  sources: [synth_a]\n  save_dir: {tmp_path / 'other'}\n")
    with pytest.raises(ValueError, match="must train and test on the same data"):
        benchmark(["--configs", FGDI, str(other), "--out", str(tmp_path), "--collect"])


def _seeded_configs(tmp_path, sources="[synth_a, synth_b]"):
    """Two configs on synth_a..d, each with its own save_dir (or both with one when asked)."""
    paths = []
    for name in ("first", "second"):
        path = tmp_path / f"{name}.yaml"
        path.write_text(
            f"_BASE_: {FGDI}\nmodel:\n  name: fgdi_tiny\n"
            f"data:\n  sources: {sources}\n  targets: [synth_a, synth_b, synth_c, synth_d]\n"
            f"  save_dir: {tmp_path / 'log' / name}\n"
        )
        paths.append(str(path))
    return paths


def test_seeded_runs_are_collected_from_their_own_folders_as_mean_and_std(tmp_path):
    configs = _seeded_configs(tmp_path)
    mAPs = {"first": (0.20, 0.30, 0.40), "second": (0.50, 0.52, 0.60)}  # per seed, on synth_c
    for name, per_seed in mAPs.items():
        for seed, mAP in zip((1, 2, 3), per_seed):
            targets = {"synth_a": 0.9, "synth_b": 0.8, "synth_c": mAP, "synth_d": mAP / 2}
            results = {t: {"mAP": m, "cmc": [m + 0.1, m + 0.2]} for t, m in targets.items()}
            folder = tmp_path / "log" / name / f"seed{seed}"
            folder.mkdir(parents=True)
            (folder / "results.json").write_text(json.dumps(results))
    out = tmp_path / "bench"
    runs = benchmark(["--configs", *configs, "--out", str(out), "--collect", "--seeds", "1", "2", "3"])
    assert list(runs) == ["first", "second"] and list(runs["first"]) == [1, 2, 3]  # labels: the file names
    assert runs["second"][3]["synth_d"]["mAP"] == pytest.approx(0.30)
    table = (out / "benchmark.md").read_text().splitlines()
    # first on synth_c: 30.0 ± 10.0 mAP, 40.0 ± 10.0 R1; second: mean 54.0, sample std 5.3
    assert "| synth_c | unseen | 30.0 ± 10.0 | 40.0 ± 10.0 | 54.0 ± 5.3 | 64.0 ± 5.3 |" in table
    # the unseen average of each seed (0.3, 0.45, 0.6 for first), then mean ± std over seeds
    assert "| **average** | unseen | 22.5 ± 7.5 | 32.5 ± 7.5 | 40.5 ± 4.0 | 50.5 ± 4.0 |" in table
    assert "| **average** | source | 85.0 ± 0.0 | 95.0 ± 0.0 | 85.0 ± 0.0 | 95.0 ± 0.0 |" in table
    assert "mAP and R1 in percent: mean ± sample std over 3 seeds." in table
    # second - first per seed on synth_c: 30, 22, 20 -> mean 24.0, std sqrt(28), SE sqrt(28 / 3) = 3.06;
    # 4.30 x 3.06 = 13.1 < 24.0: higher. On synth_d half of that; the unseen average: 22.5, 16.5, 15.
    assert "| synth_c | unseen | +24.0 ± 3.1 higher | +24.0 ± 3.1 higher |" in table
    assert "| synth_d | unseen | +12.0 ± 1.5 higher | +12.0 ± 1.5 higher |" in table
    assert "| **average** | unseen | +18.0 ± 2.3 higher | +18.0 ± 2.3 higher |" in table
    assert "| synth_a | source | +0.0 ± 0.0 tie | +0.0 ± 0.0 tie |" in table
    text = "\n".join(table)
    assert "Difference from first, paired by seed" in text and "(t = 4.30 for 3 seeds)" in text
    csv = (out / "benchmark.csv").read_text().splitlines()
    assert csv[0] == (
        "model,target,domain,seeds,mAP,mAP_std,R1,R1_std,R5,R5_std,R10,R10_std,"
        "versus,mAP_diff,mAP_diff_se,mAP_verdict,R1_diff,R1_diff_se,R1_verdict"
    )
    assert "first,synth_c,unseen,3,30.0,10.0,40.0,10.0,-,-,-,-,-,-,-,-,-,-,-" in csv and len(csv) == 1 + 2 * (4 + 2)
    assert "second,synth_c,unseen,3,54.0,5.3,64.0,5.3,-,-,-,-,first,+24.0,3.1,higher,+24.0,3.1,higher" in csv
    benchmark(
        ["--configs", *configs, "--out", str(out), "--collect", "--seeds", "1", "2", "3", "--reference", "second"]
    )
    assert "| synth_c | unseen | -24.0 ± 3.1 lower | -24.0 ± 3.1 lower |" in (out / "benchmark.md").read_text()
    assert main(["--configs", *configs, "--out", str(out), "--collect", "--seeds", "1", "2", "--reference", "x"]) == 2
    assert main(["--configs", *configs, "--out", str(out), "--collect", "--reference", "first"]) == 2
    seed3 = tmp_path / "log" / "second" / "seed3" / "results.json"
    stale = json.loads(seed3.read_text())
    seed3.write_text(json.dumps({**stale, "synth_d": {**stale["synth_d"], "images": [[80, 208]]}}))
    with pytest.raises(RunFolderError, match=r"synth_d was tested on other query / gallery images in some runs") as err:
        benchmark(["--configs", *configs, "--out", str(out), "--collect", "--seeds", "1", "2", "3"])
    assert "(not recorded (an older results.json) in " in str(err.value) and " and 3 more; " in str(err.value)
    assert str(err.value).split("80 query / 208 gallery images in ")[1].startswith(f"{seed3.parent}):")
    seed3.write_text(json.dumps(stale))
    (tmp_path / "log" / "second" / "seed2" / "results.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"second/seed2/results.json does not exist"):
        benchmark(["--configs", *configs, "--out", str(out), "--collect", "--seeds", "1", "2", "3"])


def test_seeds_do_not_make_a_shared_save_dir_acceptable(tmp_path):
    first, second = _seeded_configs(tmp_path)
    Path(second).write_text(Path(second).read_text().replace("second", "first"))
    with pytest.raises(ValueError, match=r"several runs would write data.save_dir .*first/seed1"):
        benchmark(["--configs", first, second, "--out", str(tmp_path), "--collect", "--seeds", "1", "2"])
    with pytest.raises(ValueError, match="at least two different seeds"):
        benchmark(["--configs", first, "--out", str(tmp_path), "--collect", "--seeds", "4"])


@pytest.mark.subprocess
def test_runs_side_by_side_give_the_table_of_their_own_results(tiny_root, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "bench"
    runs = benchmark(["--configs", FGDI, ABLATION, "--root", tiny_root, "--out", str(out), "--jobs", "2", *SHORT])
    assert list(runs) == ["fgdi_tiny", "fgdi_tiny_stage1_only"]
    for label in runs:
        saved = results_from_json(json.loads((tmp_path / f"log/synthetic/{label}/results.json").read_text()))
        assert {t: r["mAP"] for t, r in runs[label].items()} == {t: r["mAP"] for t, r in saved.items()}
    printed = capsys.readouterr().out
    assert "2 runs, 2 at a time with 1 torch thread(s) each" in printed
    assert "=> [2/2] " in printed and "Show configuration" not in printed  # each run's output is in its log
    (tmp_path / "again").mkdir()
    monkeypatch.chdir(tmp_path / "again")  # fresh save_dirs: only the CLIP file can fail
    missing = ["fgdi.clip_weights", str(tmp_path / "no-such-clip.pt")]
    status = main(["--configs", FGDI, ABLATION, "--root", tiny_root, "--out", str(out), *SHORT, *missing])
    refused = capsys.readouterr().err.splitlines()  # a missing file: refused before any run starts
    assert status == 1 and len(refused) == 1, refused
    assert re.match(r"error: CLIP weights of fgdi_tiny not ready, nothing was started: .*no-such-clip\.pt", refused[0])
    assert not (tmp_path / "again" / "log").exists()
    (tmp_path / "broken-clip.pt").write_bytes(b"not a checkpoint")  # there, but only a run reading it can tell
    broken = ["fgdi.clip_weights", str(tmp_path / "broken-clip.pt")]
    status = main(["--configs", FGDI, ABLATION, "--root", tiny_root, "--out", str(out), "--jobs", "2", *SHORT, *broken])
    refused = capsys.readouterr().err.splitlines()  # one line: the run, its refusal, what became of the other
    assert status == 1 and len(refused) == 1, refused
    assert re.match(
        r"error: fgdi_tiny(_stage1_only)? \(in log/synthetic/fgdi_tiny\S*\) refused: .*broken-clip\.pt", refused[0]
    )
    assert "0 run(s) finished, 0 not started" in refused[0]


def test_the_side_by_side_table_names_the_models_tested_with_re_ranked_distances(tmp_path, capsys):
    results = {
        "synth_a": {"mAP": 0.5, "cmc": [0.5, 0.6, 0.7, 0.8]},
        "synth_d": {"mAP": 0.2, "cmc": [0.2, 0.3, 0.4, 0.5]},
    }
    per_seed = {"plain": {None: results}, "reranked": {None: results}}
    write_tables(per_seed, {"synth_a"}, None, str(tmp_path), reranked=["reranked"])
    table = (tmp_path / "benchmark.md").read_text()
    assert table.rstrip().endswith(rerank_note(["reranked"])) and "distances of reranked (" in table
    write_tables(per_seed, {"synth_a"}, None, str(tmp_path))
    assert "Re-ranked" not in (tmp_path / "benchmark.md").read_text()


def test_a_difference_is_a_tie_unless_its_95_percent_t_interval_excludes_zero():
    # differences 3, 1, 2: mean 2, std 1, SE 1 / sqrt(3) = 0.577; 3.5 SE, yet within t(2) = 4.30 SE: a tie
    mean, se, verdict = paired_difference([13, 11, 12], [10, 10, 10])
    assert (round(mean, 3), round(se, 3), verdict) == (2.0, 0.577, "tie")
    # one more seed at 2: SE sqrt(2 / 3) / 2 = 0.408, t(3) = 3.18 -> 1.30 < 2: higher; the other way round, lower
    assert paired_difference([13, 11, 12, 12], [10] * 4)[2] == "higher"
    assert paired_difference([10] * 4, [13, 11, 12, 12])[2] == "lower"
