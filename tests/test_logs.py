"""What a run prints and leaves for scripts: the console lines, results.md / results.json, and one rounding."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.test_fgdi_engine import CONFIG, _engine
from torchreid_fgdi.cli.train import train
from torchreid_fgdi.config import load_config
from torchreid_fgdi.engine import progress
from torchreid_fgdi.engine.baselines import EpochMeansMixin
from torchreid_fgdi.engine.run_log import latest, read_metrics
from torchreid_fgdi.engine.schedules import warmup_multistep
from torchreid_fgdi.engine.stages import FGDI_STAGES, IMAGE, PROMPT, with_epochs
from torchreid_fgdi.evaluation import (
    as_stored,
    compare_tables,
    format_table,
    results_from_json,
    results_to_json,
)
from torchreid_fgdi.evaluation.report import RERANKED, RESERVED, rerank_note

ONE_EACH = [
    "fgdi.stage1_epochs",
    "1",
    "fgdi.stage2a_epochs",
    "1",
    "fgdi.stage2b_epochs",
    "1",
    "fgdi.stage3_epochs",
    "1",
]
ONE_EACH += ["fgdi.prompt.batch_size", "32", "train.print_freq", "1", "test.plots", "False"]
TERMS = {
    "stage1": ("loss", "id", "triplet", "acc"),
    "stage2a": ("loss", "i2t", "t2i", "domain", "domain_acc"),
    "stage2b": ("loss", "i2t", "t2i", "domain", "domain_acc"),
    "stage3": ("loss", "id", "triplet", "i2t", "guide", "acc"),
}
SOURCES = ("synth_a", "synth_b", "synth_c")
RUN_EPOCH = re.compile(r"^(=> )?(stage\w+) epoch 1/1 \(run epoch (\d)/4\)")


@pytest.fixture(scope="module")
def run(tiny_root, tmp_path_factory):
    """One epoch per stage through the command line, a console line per batch: (save_dir, log lines)."""
    save_dir = tmp_path_factory.mktemp("logs")
    train(["--config-file", CONFIG, "--root", tiny_root, "data.save_dir", str(save_dir), *ONE_EACH])
    (log,) = save_dir.glob("train.log-*")
    return save_dir, log.read_text().splitlines()


def test_a_runs_log_lists_the_transforms_it_applies_once(tiny_root, tmp_path):
    opts = ["data.save_dir", str(tmp_path), "data.transforms", "['clip_fgdi']", "-t", "synth_d"]
    untrained = ["test.evaluate", "True", "test.allow_untrained", "True"]  # no training: the data is what matters
    train(["--config-file", CONFIG, "--root", tiny_root, *opts, *untrained])
    (log,) = tmp_path.glob("test.log-*")
    text = log.read_text()
    assert text.count("Building train transforms") == text.count("Building test transforms") == 1
    assert "Building train transforms (clip_fgdi) ...\n+ Resize(size=(64, 32), interpolation=bicubic" in text
    assert "+ AuthorsAugMix(prob=0.6" in text and "+ ToTensor()\n+ PerImageNorm(each channel of each image" in text
    assert "normalization (mean=" not in text  # torchreid's list, which did not run, is not printed
    assert "##### synth_d: mAP " in text and "recorded in checkpoints" not in text  # an evaluation writes none


def test_a_refused_runs_log_ends_with_its_refusal(tiny_root, tmp_path):
    """The error goes to stderr; the run's log must not just stop without it."""
    missing = str(tmp_path / "no-such-clip.pt")
    with pytest.raises(FileNotFoundError):
        train(
            ["--config-file", CONFIG, "--root", tiny_root, "data.save_dir", str(tmp_path), "fgdi.clip_weights", missing]
        )
    (log,) = tmp_path.glob("train.log-*")
    last = log.read_text().splitlines()[-1]
    assert last.startswith(f"error: CLIP weights file {missing!r} does not exist"), last


def test_a_training_run_says_which_targets_the_rank1_of_its_checkpoints_averages(run):
    _, lines = run
    assert "=> Rank-1 recorded in checkpoints (torchreid's 'rank1'): the mean over synth_d" in lines


def _epoch_lines(lines: list[str]) -> dict[str, str]:
    return {RUN_EPOCH.match(line)[2]: line for line in lines if line.startswith("=> stage")}


def test_every_stage_ends_each_epoch_with_the_means_of_all_its_terms_and_its_rates(run):
    save_dir, lines = run
    ends = _epoch_lines(lines)
    assert list(ends) == list(TERMS)
    rows = read_metrics(str(save_dir))
    for stage, names in TERMS.items():
        (row,) = latest(rows, stage)
        means = progress.terms({name: row[name] for name in names})  # the epoch's, as metrics.jsonl has them
        assert f" epoch means: {means} | lr {row['lr']:.2e} (" in ends[stage], stage
    assert f"(bias {2 * latest(rows, 'stage3')[0]['lr']:.2e})" in ends["stage3"]  # fgdi.image.bias_lr_factor 2
    assert re.search(r"\| lr \S+ \(classifier \d\.\d\de-\d\d\) \|", ends["stage2b"])


def test_one_epoch_numbering_and_an_eta_over_all_stages(run):
    _, lines = run
    numbered = [RUN_EPOCH.match(line) for line in lines if RUN_EPOCH.match(line)]
    ends = [(m[2], int(m[3])) for m in numbered if m[1]]
    assert ends == [("stage1", 1), ("stage2a", 2), ("stage2b", 3), ("stage3", 4)]
    batches = [line for line in lines if line.startswith("stage3 epoch 1/1 (run epoch 4/4) batch ")]
    assert batches and batches[-1].split(" batch ")[1].startswith("{0}/{0}, means so far: ".format(len(batches)))
    last_means = batches[-1].split("means so far: ")[1].split(" |")[0]
    assert f"epoch means: {last_means} |" in _epoch_lines(lines)["stage3"]  # the last running mean is the epoch's
    assert not any(line.startswith("epoch: [") for line in lines)  # torchreid's image-epoch numbering is gone
    ends = _epoch_lines(lines)
    assert ends["stage1"].endswith(" + 2 prompt epochs not timed yet")  # stage 1 cannot know their time yet
    assert re.search(r"\| eta \d:\d\d:\d\d$", ends["stage2a"])  # all kinds timed: one figure for the rest
    assert ends["stage3"].endswith("| eta 0:00:00")


def test_tensorboard_and_torchreids_batch_curve_show_the_configured_rate(run):
    save_dir, _ = run
    events = EventAccumulator(str(save_dir))
    events.Reload()
    stage3 = latest(read_metrics(str(save_dir)), "stage3")[0]["lr"]
    assert stage3 == pytest.approx(1e-3)  # fgdi_tiny's fgdi.image.lr, warm from image epoch 2
    assert events.Scalars("Train/lr")[-1].value == pytest.approx(stage3)  # not the biases' 2e-3
    assert events.Scalars("stage3/lr")[-1].value == pytest.approx(stage3)


def test_each_target_prints_its_real_query_and_gallery_sizes(run, tiny_root):
    _, lines = run
    for target in ("synth_a", "synth_d"):
        query, gallery = (len(os.listdir(os.path.join(tiny_root, target, d))) for d in ("query", "bounding_box_test"))
        (line,) = [line for line in lines if line.startswith(f"##### {target}: mAP ")]
        assert line.endswith(
            f"| Rank-20 {line.split('Rank-20 ')[1].split()[0]} ({query} query / {gallery} gallery images)"
        )
    assert not any(line.startswith("# query") for line in lines)
    saved = json.loads((run[0] / "results.json").read_text())  # what --collect compares across runs
    assert saved["synth_d"]["images"] == [[query, gallery]]


def test_results_files_have_every_configured_rank_the_domains_and_the_averages(run):
    save_dir, _ = run
    table = (save_dir / "results.md").read_text()
    assert table.splitlines()[0] == "| target | domain | mAP | R1 | R5 | R10 | R20 |"  # test.ranks [1, 5, 10, 20]
    assert all(len(line.split(" | ")) == 7 for line in table.splitlines() if line.startswith("| synth_"))
    saved = json.loads((save_dir / "results.json").read_text())
    assert {name: saved[name]["domain"] for name in saved if name not in RESERVED} == {
        **dict.fromkeys(SOURCES, "source"),
        "synth_d": "unseen",
    }
    averages = saved["averages"]
    assert averages["source"]["targets"] == list(SOURCES) and averages["unseen"]["targets"] == ["synth_d"]
    assert averages["source"]["mAP"] == pytest.approx(np.mean([saved[n]["mAP"] for n in SOURCES]))
    assert averages["unseen"]["cmc"] == saved["synth_d"]["cmc"]
    collected = results_from_json(saved)
    assert list(collected) == [*SOURCES, "synth_d"]
    assert "diagnostics" in saved and table.count("\n## Diagnostics of the text stages\n") == 1
    assert format_table(collected, SOURCES, ranks=(1, 5, 10, 20)) == table.split("\n## Diagnostics")[0]  # --collect's


def test_re_ranked_numbers_say_so_in_the_table_and_in_results_json(tiny_root, tmp_path, capsys):
    """A re-ranked mAP is not comparable with a plain one: the table a reader copies says which it is."""
    engine = _engine(tiny_root)
    engine.test(save_dir=str(tmp_path), rerank=True)
    table = (tmp_path / "results.md").read_text()
    assert table.rstrip().endswith(rerank_note()) and rerank_note() in capsys.readouterr().out
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved[RERANKED] == {"k1": 20, "k2": 6, "lambda": 0.3}
    assert list(results_from_json(saved)) == list(engine.test_results)  # --collect reads the targets alone
    assert format_table(results_from_json(saved), SOURCES, ranks=(1, 5, 10, 20), reranked=True) == table
    engine.test(save_dir=str(tmp_path))
    assert rerank_note() not in (tmp_path / "results.md").read_text()
    assert RERANKED not in json.loads((tmp_path / "results.json").read_text())


def test_a_table_rebuilt_from_results_json_rounds_as_the_runs_did():
    """48 queries, Rank-1 hits 1, 22, 22: in float32 the mean is 31.25 (-> 31.2), in float64 of the
    same float32 values 31.2500007 (-> 31.3). The run's table and --collect's once differed so."""
    hits = {"synth_a": 1, "synth_b": 22, "synth_c": 22, "synth_d": 5}
    raw = {n: {"mAP": h / 50, "cmc": np.array([h, 40, 48], dtype=np.float32) / np.float32(48)} for n, h in hits.items()}
    collected = results_from_json(json.loads(json.dumps(results_to_json(raw, SOURCES))))
    assert "| **average** | source | 30.0 | 31.2 |" in format_table(raw, SOURCES)  # the float32 average
    assert "| **average** | source | 30.0 | 31.3 |" in format_table(collected, SOURCES)
    run = {n: as_stored(r) for n, r in raw.items()}  # what the engine now keeps and tables
    assert format_table(run, SOURCES) == format_table(collected, SOURCES)
    assert compare_tables({"m": [run]}, SOURCES) == compare_tables({"m": [collected]}, SOURCES)
    assert results_from_json({"synth_a": {"mAP": 0.5, "cmc": [0.5]}})["synth_a"]["mAP"] == 0.5  # a file from before
    with pytest.raises(ValueError, match="may not be named 'averages'"):
        results_to_json({"averages": raw["synth_a"]}, SOURCES)


def test_the_run_clock_numbers_epochs_over_all_stages_and_times_what_is_left():
    stages = with_epochs(FGDI_STAGES, {"stage1": 2, "stage2a": 3, "stage2b": 1, "stage3": 2})
    clock = progress.RunClock(stages, batches=4)
    assert clock.epoch("stage1", 2) == "stage1 epoch 2/2 (run epoch 2/8)"
    assert clock.epoch("stage3", 1) == "stage3 epoch 1/2 (run epoch 7/8)"
    clock.seconds[IMAGE], clock.steps[IMAGE] = 10.0, 5  # 2 s a batch
    # after batch 2 of 4 of stage 1's first epoch: 6 + 8 batches, and 4 prompt epochs without a time
    assert clock.eta("stage1", 1, 2) == "eta 0:00:28 + 4 prompt epochs not timed yet"
    clock.seconds[PROMPT], clock.steps[PROMPT] = 6.0, 2  # 3 s a prompt epoch
    assert clock.eta("stage1", 1, 2) == "eta 0:00:40"
    assert clock.eta("stage2a", 2) == "eta 0:00:22"  # stage2a's 3rd, stage2b's epoch, stage 3's 8 batches


def test_baselines_end_each_epoch_with_its_means(capsys):
    class Loop:
        def forward_backward(self, data):
            return data

        def train(self):
            for loss in (1.0, 2.0, 6.0):
                self.forward_backward({"loss": loss, "acc": 50.0})

    class Baseline(EpochMeansMixin, Loop):
        epoch, max_epoch = 0, 30

        def get_current_lr(self):
            return 0.003

    Baseline().train()
    printed = capsys.readouterr().out.strip()
    assert re.fullmatch(r"=> epoch 1/30 in \d+ s, epoch means: loss 3\.0000 acc 50\.00% \| lr 3\.00e-03", printed)


def test_the_fgdi_engine_gives_accuracy_in_percent_as_the_baselines(tiny_root, capsys):
    """torchreid's engines report ``acc`` in percent (its `metrics.accuracy`); the FGDI engine's
    console, TensorBoard and metrics.jsonl once had a fraction under the same name."""
    engine = _engine(tiny_root)
    batch = next(iter(engine.train_loader))
    right = torch.nn.functional.one_hot(batch["pid"], engine.model.classifier.out_features).float()
    right[: len(right) // 4] = right[: len(right) // 4].roll(1, dims=1)  # a quarter of the batch wrong
    engine.model.classifier.register_forward_hook(lambda module, args, out: out * 0 + 10 * right)
    engine.enter("stage1")
    assert engine.forward_backward(batch)["acc"] == pytest.approx(75.0)
    assert progress.terms({"loss": 1.5, "acc": 75.0, "domain_acc": 12.5}) == "loss 1.5000 acc 75.00% domain_acc 12.50%"


def test_fgdi_tiny_config_comments_say_what_its_schedule_does():
    cfg = load_config(CONFIG)
    image = cfg.fgdi.image
    assert cfg.fgdi.stage1_epochs + cfg.fgdi.stage3_epochs == 30 == image.milestones[0]
    rates = [
        warmup_multistep(e, image.milestones, image.gamma, image.warmup_factor, image.warmup_epochs)
        for e in range(1, 31)
    ]
    assert rates[0] == pytest.approx(0.55) and rates[1:29] == [1.0] * 28 and rates[29] == pytest.approx(0.1)
    text = open(CONFIG).read()
    assert "the 30th, the last, runs at gamma (0.1) x lr" in text and "image epoch 1 at 0.55 x lr" in text


@pytest.mark.subprocess
def test_importing_the_plugin_hides_torchreids_cython_warning_and_nothing_else():
    message = "Cython evaluation (very fast so highly recommended) is unavailable, now use python evaluation."
    code = (
        "import warnings, torchreid_fgdi; "
        f"warnings.warn_explicit({message!r}, UserWarning, 'rank.py', 11, module='torchreid.reid.metrics.rank')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    # only the warning raised after the import shows: the filter covered torchreid's import alone
    assert done.stderr.startswith(f"rank.py:11: UserWarning: {message}") and done.stderr.count("Cython") == 1
