"""Each torchreid-pip breakage, shown without the fix (fresh interpreter) and fixed after import."""

import subprocess
import sys

import numpy as np
import pytest
import torch
import torchreid

import torchreid_fgdi  # noqa: F401
from torchreid_fgdi import compat

SUBMODULE_IMPORTS = "import torchreid.data, torchreid.utils; from torchreid.utils import FeatureExtractor"


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_upstream_style_submodule_imports():
    assert "No module named 'torchreid.data'" in _python(SUBMODULE_IMPORTS).stderr
    fixed = _python("import torchreid_fgdi\n" + SUBMODULE_IMPORTS + "\nprint(FeatureExtractor.__name__)")
    assert fixed.returncode == 0, fixed.stderr
    assert fixed.stdout.strip() == "FeatureExtractor"


def _save_torchreid_checkpoint(path) -> str:
    model = torch.nn.Linear(3, 2)
    state = {"state_dict": model.state_dict(), "epoch": 1, "rank1": np.float64(0.5), "optimizer": None}
    torchreid.utils.save_checkpoint(state, str(path), is_best=False)
    return str(path / "model.pth.tar-1")


def test_torchreid_loads_its_own_checkpoints(tmp_path):
    fpath = _save_torchreid_checkpoint(tmp_path)
    unfixed = _python(f"import torchreid; torchreid.utils.load_checkpoint({fpath!r})")
    assert "Weights only load failed" in unfixed.stderr
    checkpoint = torchreid.utils.load_checkpoint(fpath)
    assert checkpoint["rank1"] == 0.5
    model = torch.nn.Linear(3, 2)
    torchreid.utils.load_pretrained_weights(model, fpath)
    assert torch.equal(model.weight, checkpoint["state_dict"]["weight"])


def test_build_model_forwards_model_arguments():
    unfixed = _python("import torchreid; torchreid.models.build_model('osnet_x0_25', 3, pretrained=False, x=1)")
    assert "unexpected keyword argument 'x'" in unfixed.stderr
    model = torchreid.models.build_model("fgdi_tiny", 3, pretrained=False, num_domains=4, image_size=(32, 16))
    assert model.promptlearner.dmctx.shape[0] == 4 and model.image_encoder.grid_size == (4, 2)


def test_rank_metric_on_a_gallery_smaller_than_the_cmc_length():
    rng = np.random.default_rng(0)
    q_pids, q_cams = np.array([0, 1, 2]), np.array([0, 1, 0])
    g_pids, g_cams = np.repeat(np.arange(6), 4), np.tile([0, 1, 1, 1], 6)  # 24 images; 23, 21, 23 usable
    distmat = rng.random((3, 24))
    unfixed = _python(
        "import numpy as np, torchreid\n"
        f"d = np.array({distmat.tolist()})\n"
        f"torchreid.metrics.evaluate_rank(d, np.array({q_pids.tolist()}), np.array({g_pids.tolist()}), "
        f"np.array({q_cams.tolist()}), np.array({g_cams.tolist()}), use_cython=False)"
    )
    assert "inhomogeneous shape" in unfixed.stderr
    cmc, mAP = compat.evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams)
    theirs = torchreid.metrics.evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams, use_cython=False)
    assert np.array_equal(theirs[0][:21], cmc) and theirs[1] == mAP  # torchreid's engines get the fix too,
    assert len(theirs[0]) == 50 and np.isnan(theirs[0][21:]).all()  # and NaN where the gallery ends
    assert len(cmc) == 21
    ranked = [np.argsort(d) for d in distmat]
    usable = [r[~((g_pids[r] == q_pids[i]) & (g_cams[r] == q_cams[i]))] for i, r in enumerate(ranked)]
    first_hit = [int(np.flatnonzero(g_pids[u] == q_pids[i])[0]) for i, u in enumerate(usable)]
    torch.testing.assert_close(cmc, np.mean([np.arange(21) >= h for h in first_hit], 0).astype(np.float32))
    assert 0 < mAP <= 1


def test_a_corrupt_image_fails_with_its_path_instead_of_hanging(tmp_path):
    from PIL import Image

    bad, gray = tmp_path / "0001_c1s1_000151_01.jpg", tmp_path / "gray.png"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    Image.new("L", (4, 8)).save(gray)
    code = f"import torchreid; torchreid.reid.data.datasets.dataset.read_image({str(bad)!r})"
    try:
        subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=5)
        raise AssertionError("torchreid's read_image returned on a corrupt file")
    except subprocess.TimeoutExpired:
        pass  # torchreid retries forever
    dataset = torchreid.data.ImageDataset([(str(bad), 0, 0)], [(str(gray), 0, 0)], [(str(gray), 0, 1)], verbose=False)
    with pytest.raises(compat.UnreadableImageError, match=r'cannot decode image ".*0001_c1s1_000151_01.jpg"'):
        dataset[0]
    assert compat.read_image(str(gray)).mode == "RGB"
