import functools
import http.server
import importlib.util
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import open_clip
import pytest
import torch

from torchreid_fgdi.synthetic.render import SyntheticSize, generate
from torchreid_fgdi.tools import gallery_index

TINY = SyntheticSize(train_ids=12, test_ids=8, max_cams_per_id=3, max_images_per_cam=3)


@pytest.fixture(scope="session", autouse=True)
def gallery_indexes_kept_in_the_sessions_folder(tmp_path_factory):
    """A search without ``--index`` keeps its index in the user's cache; the tests' galleries are
    temporary, so theirs go to the session's temporary folder instead."""
    folder = str(tmp_path_factory.mktemp("cache"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gallery_index, "cache_root", lambda: folder)
        yield


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    """The four generated domains at a tiny size, written once per test session."""
    root = tmp_path_factory.mktemp("reid-data")
    generate(str(root), size=TINY, seed=0)
    return str(root)


FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
AUTHORS_FILES = ("authors_weights.py", "authors_fgdi_vitb16_keys.json", "authors_fgdi_vitb16_outputs.pt")


def fixtures_missing(reason: str) -> None:
    """Stops a parity test whose reference is not here: skipped with `reason`, or failed when the
    environment variable CI is set (CI must run every parity test, so there a missing or unusable
    fixture is an error, never a quiet skip)."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: a parity test fails instead of skipping)", pytrace=False)
    pytest.skip(reason)


def require_fixtures(*names: str) -> Path:
    """The parity fixtures' folder (``../shared/fixtures`` beside the clone), once every one of
    `names` is in it; otherwise `fixtures_missing` says which are not."""
    missing = [name for name in names or (".",) if not (FIXTURES / name).exists()]
    if missing:
        fixtures_missing(f"parity fixtures missing: {', '.join(str(FIXTURES / name) for name in missing)}")
    return FIXTURES


def parity(*names: str) -> pytest.MarkDecorator:
    """Marks a test that compares against the fixtures `names` (see `require_fixtures`)."""
    return pytest.mark.parity(*names)


needs_fixtures = parity(*AUTHORS_FILES)


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "parity(*names): compares against shared/fixtures/<name> (CI: fail if missing)")


def pytest_runtest_setup(item) -> None:
    for mark in item.iter_markers("parity"):
        require_fixtures(*mark.args)


@pytest.fixture(scope="session")
def authors():
    """The authors' model run (shared/fixtures): its state dict, inputs and outputs."""
    require_fixtures(*AUTHORS_FILES)
    spec = importlib.util.spec_from_file_location("authors_weights", FIXTURES / "authors_weights.py")
    weights = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(weights)
    state = weights.make_state_dict(str(FIXTURES / "authors_fgdi_vitb16_keys.json"), seed=0)
    expected = torch.load(FIXTURES / "authors_fgdi_vitb16_outputs.pt", weights_only=False)
    return SimpleNamespace(state=state, inputs=weights.make_inputs(0), expected=expected)


def tiny_clip() -> open_clip.CLIP:
    """A random CLIP small enough for CPU tests (ViT tower, 8-pixel patches)."""
    return open_clip.CLIP(
        embed_dim=16,
        vision_cfg=open_clip.CLIPVisionCfg(layers=2, width=32, head_width=16, patch_size=8, image_size=32),
        text_cfg=open_clip.CLIPTextCfg(layers=1, width=16, heads=2, context_length=77),
        quick_gelu=True,
    )


def killed_write(path: Path) -> Path:
    """The temporary file a write of `path` leaves when its process is killed mid-write: a real process
    writes ``<path>.tmp<its pid>`` as `utils.atomic` names it and dies by SIGKILL."""
    write = "import os, sys; f = open(f'{sys.argv[1]}.tmp{os.getpid()}', 'wb'); f.write(b'half a file'); f.flush()"
    done = subprocess.run([sys.executable, "-c", f"{write}; os.kill(os.getpid(), 9)", str(path)])
    assert done.returncode == -signal.SIGKILL
    (temporary,) = path.parent.glob(f"{path.name}.tmp*")
    return temporary


@pytest.fixture
def served(tmp_path):
    """A folder served over HTTP on localhost: the real gdown path without the internet."""
    folder = tmp_path / "served"
    folder.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
