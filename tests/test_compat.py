"""Each torchreid-pip breakage, shown without the fix (fresh interpreter) and fixed after import."""

import subprocess
import sys

import numpy as np
import torch
import torchreid

import torchreid_fgdi  # noqa: F401

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
