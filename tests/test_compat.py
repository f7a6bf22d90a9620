"""Each torchreid-pip breakage, shown with the fixes reverted and fixed after `compat.apply()`;
`revert()` restores torchreid exactly and `apply()` installs the same fixes again."""

import importlib
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchreid

import torchreid_fgdi  # noqa: F401
from torchreid_fgdi.errors import UnreadableImageError
from torchreid_fgdi.evaluation import torchreid_rank
from torchreid_fgdi.integration import compat

# Runs in a fresh interpreter: which object every torchreid module binds to each name before
# torchreid_fgdi is imported, with its fixes applied, after revert() and after apply() again.
SNAPSHOTS = """
import json, sys, torch, torchreid
from torchreid.reid.data import sampler

def bindings():
    modules = {n: m for n, m in sys.modules.items() if n == "torchreid" or n.startswith("torchreid.")}
    return {(n, a): v for n, m in modules.items() for a, v in vars(m).items()}

def extras():
    aliases = sorted(n for n in sys.modules if n.startswith("torchreid.") and not n.startswith("torchreid.reid"))
    return aliases, set(torch.serialization.get_safe_globals()), list(sampler.AVAI_SAMPLERS)

before, before_extras = bindings(), extras()
import torchreid_fgdi
from torchreid_fgdi import compat
fixed, fixed_extras = bindings(), extras()
changed = sorted(k for k in before if fixed[k] is not before[k])
originals = {id(before[k]) for k in changed if callable(before[k])}
compat.revert()
after, after_extras = bindings(), extras()
compat.apply()
again = bindings()
print(json.dumps({
    "changed": [".".join(k) for k in changed],
    "still_original": [".".join(k) for k, v in fixed.items() if id(v) in originals],
    "fixed_aliases": fixed_extras[0],
    "safe_globals_added": len(fixed_extras[1] - before_extras[1]),
    "fixed_samplers": fixed_extras[2],
    "not_restored": [".".join(k) for k in before if after[k] is not before[k]],
    "extras_restored": [after_extras[0] == before_extras[0], after_extras[1] == before_extras[1],
                        after_extras[2] == before_extras[2]],
    "reapplied": [".".join(k) for k in sorted(k for k in before if again[k] is not before[k])],
    "read_image_fixed": torchreid.utils.read_image is compat.read_image,
}))
"""


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=900)


def _torchreid_state() -> tuple:
    """What revert() puts back besides module attributes: submodule aliases, safe globals, sampler names."""
    aliases = sorted(n for n in sys.modules if n.startswith("torchreid.") and not n.startswith("torchreid.reid"))
    safe = set(torch.serialization.get_safe_globals())
    return aliases, safe, list(torchreid.reid.data.sampler.AVAI_SAMPLERS)


@pytest.mark.subprocess
def test_revert_restores_torchreid_exactly_and_apply_reinstalls_the_fixes():
    run = _python(SNAPSHOTS)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    for public in (
        "torchreid.reid.utils.read_image",
        "torchreid.reid.utils.tools.read_image",
        "torchreid.reid.data.datasets.dataset.read_image",
        "torchreid.reid.utils.save_checkpoint",
        "torchreid.reid.engine.engine.save_checkpoint",
        "torchreid.reid.utils.load_pretrained_weights",
        "torchreid.reid.utils.feature_extractor.load_pretrained_weights",
        "torchreid.reid.models.build_model",
        "torchreid.reid.utils.feature_extractor.build_model",
        "torchreid.reid.metrics.evaluate_rank",
        "torchreid.reid.metrics.rank.evaluate_rank",
        "torchreid.reid.data.sampler.build_train_sampler",
        "torchreid.reid.data.datamanager.build_train_sampler",
        "torchreid.reid.data.transforms.build_transforms",
        "torchreid.reid.data.datamanager.build_transforms",
        "torchreid.reid.data.datasets.image.market1501.glob",
    ):
        assert public in report["changed"], public
    assert report["still_original"] == []  # no name anywhere in torchreid still holds a replaced function
    assert "torchreid.data" in report["fixed_aliases"] and report["safe_globals_added"] > 0
    assert "DomainBalancedIdentitySampler" in report["fixed_samplers"]
    assert report["not_restored"] == [] and report["extras_restored"] == [True, True, True]
    assert report["reapplied"] == report["changed"] and report["read_image_fixed"]


def test_reverted_puts_back_the_aliases_safe_globals_and_sampler_names_then_reapplies():
    fixed = _torchreid_state()
    with compat.reverted():
        aliases, safe, samplers = _torchreid_state()
        assert aliases == [] and "DomainBalancedIdentitySampler" not in samplers
        assert np.dtype not in safe and safe < fixed[1]
        assert torchreid.utils.read_image is torchreid.reid.utils.tools.read_image is not compat.read_image
    assert _torchreid_state() == fixed
    assert torchreid.utils.read_image is compat.read_image


def test_upstream_style_submodule_imports():
    with compat.reverted(), pytest.raises(ModuleNotFoundError, match="No module named 'torchreid.data'"):
        importlib.import_module("torchreid.data")
    from torchreid.utils import FeatureExtractor

    assert FeatureExtractor is torchreid.reid.utils.FeatureExtractor


def _save_torchreid_checkpoint(path) -> str:
    model = torch.nn.Linear(3, 2)
    state = {"state_dict": model.state_dict(), "epoch": 1, "rank1": np.float64(0.5), "optimizer": None}
    torchreid.utils.save_checkpoint(state, str(path), is_best=False)
    return str(path / "model.pth.tar-1")


def test_torchreid_loads_its_own_checkpoints(tmp_path):
    fpath = _save_torchreid_checkpoint(tmp_path)
    with compat.reverted(), pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        torchreid.utils.load_checkpoint(fpath)
    checkpoint = torchreid.utils.load_checkpoint(fpath)
    assert checkpoint["rank1"] == 0.5
    model = torch.nn.Linear(3, 2)
    torchreid.utils.load_pretrained_weights(model, fpath)
    assert torch.equal(model.weight, checkpoint["state_dict"]["weight"])


def test_patched_save_checkpoint_leaves_the_previous_file_when_a_write_fails(tmp_path, monkeypatch):
    fpath = _save_torchreid_checkpoint(tmp_path)
    torchreid.utils.save_checkpoint({**torch.load(fpath, weights_only=True), "epoch": 1}, str(tmp_path), is_best=True)
    before = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}
    assert sorted(before) == ["model-best.pth.tar", "model.pth.tar-1"]

    def torn_save(obj, path):  # half a file written, then the storage goes away
        with open(path, "wb") as f:
            f.write(before["model.pth.tar-1"][: len(before["model.pth.tar-1"]) // 2])
        raise OSError("the file server went away")

    monkeypatch.setattr(torch, "save", torn_save)
    state = {"state_dict": torch.nn.Linear(3, 2).state_dict(), "epoch": 1, "rank1": 0.9, "optimizer": None}
    for save in (torchreid.utils.save_checkpoint, torchreid.reid.engine.engine.save_checkpoint):
        with pytest.raises(OSError):  # the storage's error (a WriteError if the disk is also full)
            save(state, str(tmp_path), is_best=True)
        assert {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)} == before
    monkeypatch.undo()
    assert torchreid.utils.load_checkpoint(fpath)["rank1"] == 0.5


def test_build_model_forwards_model_arguments():
    with compat.reverted(), pytest.raises(TypeError, match="unexpected keyword argument 'x'"):
        torchreid.models.build_model("osnet_x0_25", 3, pretrained=False, x=1)
    model = torchreid.models.build_model("fgdi_tiny", 3, pretrained=False, num_domains=4, image_size=(32, 16))
    assert model.promptlearner.dmctx.shape[0] == 4 and model.image_encoder.grid_size == (4, 2)


def test_rank_metric_on_a_gallery_smaller_than_the_cmc_length():
    rng = np.random.default_rng(0)
    q_pids, q_cams = np.array([0, 1, 2]), np.array([0, 1, 0])
    g_pids, g_cams = np.repeat(np.arange(6), 4), np.tile([0, 1, 1, 1], 6)  # 24 images; 23, 21, 23 usable
    distmat = rng.random((3, 24))
    args = (distmat, q_pids, g_pids, q_cams, g_cams)
    with compat.reverted():
        with pytest.raises(ValueError, match="inhomogeneous shape"):
            torchreid.metrics.evaluate_rank(*args, use_cython=False)
        unpatched = torchreid_rank.evaluate_rank(*args)
    cmc, mAP = torchreid_rank.evaluate_rank(*args)
    assert np.array_equal(unpatched[0], cmc) and unpatched[1] == mAP  # the same with or without the fix
    theirs = torchreid.metrics.evaluate_rank(*args, use_cython=False)
    assert np.array_equal(theirs[0][:21], cmc) and theirs[1] == mAP  # torchreid's engines get the fix too,
    assert len(theirs[0]) == 50 and np.isnan(theirs[0][21:]).all()  # and NaN where the gallery ends
    assert len(cmc) == 21
    ranked = [np.argsort(d) for d in distmat]
    usable = [r[~((g_pids[r] == q_pids[i]) & (g_cams[r] == q_cams[i]))] for i, r in enumerate(ranked)]
    first_hit = [int(np.flatnonzero(g_pids[u] == q_pids[i])[0]) for i, u in enumerate(usable)]
    torch.testing.assert_close(cmc, np.mean([np.arange(21) >= h for h in first_hit], 0).astype(np.float32))
    assert 0 < mAP <= 1


# torchreid's own read_image, in a fresh interpreter with the fixes reverted; "ready" marks the end
# of the imports, so the wait below measures only the read.
UNFIXED_READ = """
import sys
import torchreid, torchreid_fgdi
torchreid_fgdi.integration.compat.revert()
print("ready", flush=True)
torchreid.utils.read_image(sys.argv[1])
print("returned", flush=True)
"""


@pytest.mark.subprocess
@pytest.mark.timeout(600)
def test_a_corrupt_image_fails_with_its_path_instead_of_hanging(tmp_path):
    from PIL import Image

    bad, gray = tmp_path / "0001_c1s1_000151_01.jpg", tmp_path / "gray.png"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    Image.new("L", (4, 8)).save(gray)
    reader = subprocess.Popen(
        [sys.executable, "-u", "-c", UNFIXED_READ, str(bad)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert reader.stdout.readline().strip() == "ready"
        # torchreid retries forever: two retries in a row and still running, however slow the machine
        retries = [reader.stdout.readline() for _ in range(2)]
        assert reader.poll() is None
    finally:
        reader.kill()
        reader.wait()
    retries.append(reader.stdout.read())
    reader.stdout.close()
    assert all(f'IOError incurred when reading "{bad}". Will redo.' in line for line in retries[:2])
    assert "returned" not in "".join(retries)
    dataset = torchreid.data.ImageDataset([(str(bad), 0, 0)], [(str(gray), 0, 0)], [(str(gray), 0, 1)], verbose=False)
    with pytest.raises(UnreadableImageError, match=r'cannot decode image ".*0001_c1s1_000151_01.jpg"'):
        dataset[0]
    assert compat.read_image(str(gray)).mode == "RGB"


def test_a_fix_that_fails_to_install_leaves_none_installed(monkeypatch):
    with compat.reverted():
        original_state, original_read = _torchreid_state(), torchreid.utils.read_image

        def broken() -> None:
            raise RuntimeError("the last fix cannot be installed")

        monkeypatch.setattr(compat, "_dataset_folders_are_paths", broken)
        with pytest.raises(RuntimeError, match="the last fix cannot be installed"):
            compat.apply()
        assert _torchreid_state() == original_state and torchreid.utils.read_image is original_read
        monkeypatch.undo()
    assert torchreid.utils.read_image is compat.read_image  # a later apply() installs every fix again
