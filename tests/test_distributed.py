"""torchrun with 2 CPU processes (gloo): all FGDI stages and a torchreid baseline train through
DistributedDataParallel, rank 0 writes checkpoints and evaluates, a distributed run resumes to the
same weights."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# Each test runs torchrun's child processes (each torchrun is given at most 180 s).
# Each test starts torchrun runs of minutes, several times that on a machine other jobs share.
pytestmark = [pytest.mark.distributed, pytest.mark.subprocess, pytest.mark.timeout(1800)]

CONFIG = str(Path(__file__).parents[1] / "configs" / "synthetic" / "fgdi_tiny.yaml")
SHORT = ["fgdi.stage1_epochs", "2", "fgdi.stage2a_epochs", "2", "fgdi.stage2b_epochs", "1", "fgdi.stage3_epochs", "2"]
SHORT += ["fgdi.checkpoint_every", "1", "train.batch_size", "24", "fgdi.prompt.batch_size", "32"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(
    root: str, save_dir: Path, *opts: str, config: str = CONFIG, succeeds: bool = True
) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port())]
    cmd += ["-m", "torchreid_fgdi", "--config-file", config, "data.root", root, "data.save_dir", str(save_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd + list(opts), capture_output=True, text=True, env=env, timeout=900)
    assert (done.returncode == 0) == succeeds, done.stderr[-3000:]
    return done


def _weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.slow
def test_two_processes_train_every_stage_and_resume(tiny_root, tmp_path):
    first = tmp_path / "run"
    done = _torchrun(tiny_root, first, *SHORT)
    assert done.stdout.count("Trained all stages") == 2  # both ranks finished, with equal replicas
    assert (first / "results.md").read_text().count("| synth_d | unseen |") == 1
    assert {p.name for p in (first / "checkpoints").iterdir()} == {
        "latest.pth",
        "stage1.pth",
        "stage2a.pth",
        "stage2b.pth",
        "stage3.pth",
    }
    assert any(p.name.endswith("-rank1") for p in first.iterdir())  # each rank logs to its own file

    resumed = tmp_path / "resumed"
    _torchrun(tiny_root, resumed, *SHORT, "model.resume", str(first / "checkpoints" / "stage2a.pth"))
    want, got = _weights(first / "checkpoints" / "stage3.pth"), _weights(resumed / "checkpoints" / "stage3.pth")
    for key, value in want.items():
        torch.testing.assert_close(got[key], value, atol=1e-6, rtol=1e-6, msg=key)


@pytest.mark.slow
def test_two_processes_train_a_torchreid_baseline(tiny_root, tmp_path):
    baseline = str(Path(CONFIG).with_name("osnet_ain_x0_25.yaml"))
    _torchrun(tiny_root, tmp_path, "train.max_epoch", "2", "train.batch_size", "24", config=baseline)
    assert (tmp_path / "results.md").read_text().count("| synth_d | unseen |") == 1
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
    assert "fgdi.sync_bn needs CUDA devices: PyTorch's SyncBatchNorm does not run on CPU processes" in done.stderr
    assert "Trained all stages" not in done.stdout
    assert not (tmp_path / "checkpoints").exists()
