"""torchrun with 2 CPU processes (gloo): all FGDI stages and a torchreid baseline train through
DistributedDataParallel, rank 0 writes checkpoints and evaluates, a distributed run resumes to the
same weights. Rank 0 alone speaks, with the numbers of the whole batch; another rank only of its own errors."""

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from torchreid_fgdi.cli.refusals import LOST_PEER
from torchreid_fgdi.engine.diagnostics import TITLE

# Each test runs torchrun's child processes (each torchrun is given at most 180 s).
# Each test starts torchrun runs of minutes, several times that on a machine other jobs share.
pytestmark = [pytest.mark.distributed, pytest.mark.subprocess, pytest.mark.timeout(1800)]

CONFIG = str(Path(__file__).parents[1] / "configs" / "synthetic" / "fgdi_tiny.yaml")
TINY_CLIP_CONFIG = str(Path(CONFIG).with_name("fgdi_tiny_clip.yaml"))  # fgdi_tiny from the tiny CLIP made on first use
PROBE = str(Path(__file__).with_name("rank_probe.py"))  # torchreid-fgdi, recording what each rank measures
SHORT = ["fgdi.stage1_epochs", "2", "fgdi.stage2a_epochs", "2", "fgdi.stage2b_epochs", "1", "fgdi.stage3_epochs", "2"]
SHORT += ["fgdi.checkpoint_every", "1", "train.batch_size", "24", "fgdi.prompt.batch_size", "32"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(
    root: str, save_dir: Path, *opts: str, config: str = CONFIG, succeeds: bool = True, probe: dict | None = None
) -> subprocess.CompletedProcess:
    """torchreid-fgdi in 2 processes; with `probe` (``RANK_PROBE_*`` variables), through `rank_probe.py`."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port())]
    cmd += [PROBE] if probe is not None else ["-m", "torchreid_fgdi"]
    cmd += ["--config-file", config, "data.root", root, "data.save_dir", str(save_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(probe or {})}
    done = subprocess.run(cmd + list(opts), capture_output=True, text=True, env=env, timeout=900)
    assert (done.returncode == 0) == succeeds, done.stderr[-3000:]
    return done


def _weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _epoch_lines(stdout: str) -> dict[str, dict[str, str]]:
    """{'stage1 1': {'loss': '12.2020', 'acc': '2.78%'}}: the numbers of every epoch line, as printed."""
    found = re.findall(r"^=> (\w+) epoch (\d+)/\d+ .* epoch means: (.*?) \|", stdout, re.M)
    lines = {}
    for stage, epoch, terms in found:
        words = terms.split()
        lines[f"{stage} {epoch}"] = dict(zip(words[::2], words[1::2]))
    return lines


def _recorded_epochs(probe_dir: Path, rank: int) -> dict[str, list[tuple[dict, float]]]:
    """{'stage1 1': [(values, weight) per step]}: what `rank` measured on its own share of each batch."""
    epochs, steps = {}, []
    for line in (probe_dir / f"rank{rank}.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if "epoch" in entry:
            epochs[entry["epoch"]], steps = steps, []
        else:
            steps.append((entry["values"], entry["weight"]))
    return epochs


def _check_one_voice(done: subprocess.CompletedProcess, save_dir: Path, probe_dir: Path) -> None:
    """Each line once and whole, from rank 0, with every epoch's numbers those of both ranks' shares:
    per step the mean weighted by each rank's share of the batch, then the mean over the epoch's steps."""
    out = done.stdout
    for line in ("Show configuration", "=> Trained all stages", "##### synth_d:", "| synth_d | unseen |", TITLE):
        assert out.count(line) == 1, line
    for marker in ("Show configuration", "=> stage", "#####", "=> Trained"):
        assert all(line.count(marker) <= 1 for line in out.splitlines()), f"lines run together at {marker!r}"
    assert "[rank1]" not in done.stderr  # rank 1 had no error of its own
    assert "Warning" not in done.stderr, done.stderr  # nor rank 0 a warning (torch's deprecated all_gather was one)
    logs = [p for p in save_dir.iterdir() if p.name.startswith("train.log")]
    assert len(logs) == 1 and logs[0].read_text().count("=> Trained all stages") == 1  # rank 0's alone

    printed, ranks = _epoch_lines(out), [_recorded_epochs(probe_dir, r) for r in (0, 1)]
    assert set(printed) == set(ranks[0]) == set(ranks[1]) and len(printed) == 7, printed.keys()
    rank0_alone_differs = False
    for epoch, line in printed.items():
        steps = list(zip(ranks[0][epoch], ranks[1][epoch]))
        assert steps and set(line) == set(steps[0][0][0]), (epoch, line)
        for name, printed_value in line.items():
            # as printed: losses with 4 decimals, accuracies in percent with 2
            value, decimals = float(printed_value.rstrip("%")), len(printed_value.rstrip("%").split(".")[1])
            per_step = [sum(v[name] * w for v, w in shares) / sum(w for _, w in shares) for shares in steps]
            assert value == pytest.approx(sum(per_step) / len(per_step), abs=0.6 * 10**-decimals), (epoch, name)
            rank0 = sum(v[name] for (v, _), _ in steps) / len(steps)
            rank0_alone_differs |= abs(rank0 - value) > 1e-3
    assert rank0_alone_differs  # the ranks measured different numbers: the line is not rank 0's own


@pytest.mark.slow
def test_two_processes_train_every_stage_and_resume(tiny_root, tmp_path):
    """From the tiny CLIP made on first use: rank 0 pretrains it, alone (open_clip_train would start
    a second process group inside torchrun's), and shows it, though rank 1 asks for it first."""
    first, probe_dir, cache = tmp_path / "run", tmp_path / "probe", tmp_path / "cache"
    probe_dir.mkdir()
    probe = {"RANK_PROBE_DIR": str(probe_dir), "RANK_PROBE_PRETRAIN": str(cache)}
    done = _torchrun(tiny_root, first, *SHORT, config=TINY_CLIP_CONFIG, probe=probe)
    _check_one_voice(done, first, probe_dir)
    for line in ("=> Pretraining the tiny CLIP", "=> tiny CLIP epoch 1/1: loss", "| attribute |"):
        assert done.stdout.count(line) == 1, line
    assert len(list(cache.glob("synthetic-clip/*/open_clip_tiny.pt"))) == 1
    assert (first / "results.md").read_text().count("| synth_d | unseen |") == 1
    assert json.loads((first / "results.json").read_text())["diagnostics"]["guide"]["per_epoch"]  # rank 0's
    assert {p.name for p in (first / "checkpoints").iterdir()} == {
        "latest.pth",
        "stage1.pth",
        "stage2a.pth",
        "stage2b.pth",
        "stage3.pth",
    }

    resumed = tmp_path / "resumed"
    resume = ["model.resume", str(first / "checkpoints" / "stage2a.pth")]
    done = _torchrun(
        tiny_root, resumed, *SHORT, *resume, config=TINY_CLIP_CONFIG, probe={"RANK_PROBE_PRETRAIN": str(cache)}
    )
    assert "Pretraining" not in done.stdout  # the cached one
    want, got = _weights(first / "checkpoints" / "stage3.pth"), _weights(resumed / "checkpoints" / "stage3.pth")
    for key, value in want.items():
        torch.testing.assert_close(got[key], value, atol=1e-6, rtol=1e-6, msg=key)


@pytest.mark.slow
def test_two_processes_train_a_torchreid_baseline(tiny_root, tmp_path):
    baseline = str(Path(CONFIG).with_name("osnet_ain_x0_25.yaml"))
    done = _torchrun(tiny_root, tmp_path, "train.max_epoch", "2", "train.batch_size", "24", config=baseline)
    assert (tmp_path / "results.md").read_text().count("| synth_d | unseen |") == 1
    for line in ("=> Start training", "=> epoch 1/2 ", "=> epoch 2/2 ", "##### synth_d:"):  # torchreid's and ours
        assert done.stdout.count(line) == 1, line
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 1  # rank 0's TensorBoard alone
    state = _weights(tmp_path / "model" / "model.pth.tar-2")
    assert state and not any(k.startswith("module.") for k in state)  # loads into a plain model


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch(tiny_root, tmp_path):
    """Stage 1 with the ID loss off (the BNNecks, whose batch statistics are per rank, then leave the
    loss path) and no random augmentation: DDP over the ranks' shares, with the triplet loss mined
    on the gathered global batch, gives the single-process weights."""
    from torchreid_fgdi.cli.train import train

    opts = ["fgdi.stage1_epochs", "1", "fgdi.stage2a_epochs", "0", "fgdi.stage2b_epochs", "0"]
    opts += ["fgdi.stage3_epochs", "0", "fgdi.id_weight", "0.0", "data.transforms", "[]", "train.batch_size", "24"]
    train(["--config-file", CONFIG, "data.root", tiny_root, "data.save_dir", str(tmp_path / "one"), *opts])
    _torchrun(tiny_root, tmp_path / "two", *opts)
    one, two = _weights(tmp_path / "one/checkpoints/stage1.pth"), _weights(tmp_path / "two/checkpoints/stage1.pth")
    # Two parameters have an exactly zero gradient here, so Adam turns float noise into full-size
    # steps: the attention key biases (softmax ignores a shift) and ln_post's bias (distances ignore
    # a shift, and the ID loss is off). They are left out; everything else must agree.
    for key in (k for k in one if k.startswith("image_encoder.") and not k.endswith("ln_post.bias")):
        want, got = one[key], two[key]
        if key.endswith("attn.in_proj_bias"):
            third = len(want) // 3
            want, got = torch.cat([want[:third], want[2 * third :]]), torch.cat([got[:third], got[2 * third :]])
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5, msg=key)


def test_sync_bn_is_refused_on_cpu_processes_before_any_training(tiny_root, tmp_path):
    """PyTorch's SyncBatchNorm synchronises only CUDA tensors: two CPU processes would silently train
    with per-process statistics."""
    done = _torchrun(tiny_root, tmp_path, *SHORT, "fgdi.sync_bn", "True", succeeds=False)
    refusal = "error: fgdi.sync_bn needs CUDA devices: PyTorch's SyncBatchNorm does not run on CPU processes"
    lines = done.stderr.splitlines()
    assert sum(line.startswith(refusal) for line in lines) == 1  # rank 0's
    # rank 1's own, marked; torchrun may stop it first when rank 0 refuses sooner (a busy machine)
    assert sum(line.startswith("[rank1]: " + refusal) for line in lines) <= 1
    assert all(line.startswith(("[rank1]: ", refusal)) for line in lines if "fgdi.sync_bn" in line)
    assert "Trained all stages" not in done.stdout
    assert not (tmp_path / "checkpoints").exists()


def test_an_error_of_rank_1_alone_is_its_line_and_rank_0_says_it_stopped_with_it(tiny_root, tmp_path):
    """Rank 1 refuses in the middle of stage 1, while rank 0 waits for it in a collective."""
    done = _torchrun(tiny_root, tmp_path, *SHORT, succeeds=False, probe={"RANK_PROBE_FAIL": "stage1:2"})
    lines = done.stderr.splitlines()
    own = "[rank1]: error: rank 1's own failure at stage1 batch 2 (TORCHREID_FGDI_DEBUG=1 shows the traceback)"
    assert [line for line in lines if line.startswith("[rank1]:")] == [own]
    rank0 = [line for line in lines if line.startswith(("error: ", "[rank0]:"))]
    assert rank0 == ["error: " + LOST_PEER]  # not the traceback of the collective it was waiting in
    assert done.stdout.count("Show configuration") == 1 and "=> Trained all stages" not in done.stdout
