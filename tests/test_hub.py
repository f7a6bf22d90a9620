"""Released weights: the registry against open_clip's table, downloads into torch's cache, the
offline message and the weights command. The network is a local server or a stubbed reachability
probe, so these give the same result on a machine with or without internet."""

import open_clip
import pytest

from torchreid_fgdi.cli import weights
from torchreid_fgdi.models import VARIANTS, hub

pytestmark = pytest.mark.timeout(300)  # a download that stalls fails here instead of holding the suite


@pytest.fixture
def torch_cache(tmp_path, monkeypatch):
    """torch's checkpoint cache in a temporary folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


@pytest.fixture
def served_weights(served, monkeypatch):
    """A registry entry 'test-weights' whose file a local server holds: (name, payload)."""
    folder, url = served
    payload = b"weights" * 100
    (folder / "w.pth").write_bytes(payload)
    entry = hub.ReleasedWeights(f"{url}/w.pth", hub.sha256sum(str(folder / "w.pth")), "w.pth", 700, "test")
    monkeypatch.setitem(hub.REGISTRY, "test-weights", entry)
    return "test-weights", payload


def test_the_registry_holds_openais_published_file_for_every_pretrained_variant():
    published = {
        open_clip.get_pretrained_cfg(spec["clip"], "openai")["url"]
        for spec in VARIANTS.values()
        if spec["weights"] == "openai"
    }
    assert {entry.url for entry in hub.REGISTRY.values()} == published
    for name, entry in hub.REGISTRY.items():
        assert entry.url.split("/")[-2] == entry.sha256, name  # OpenAI files each archive under its sha256
    assert len({entry.filename for entry in hub.REGISTRY.values()}) == len(hub.REGISTRY)  # no shared cache file


def test_released_weights_are_downloaded_once_into_torchs_cache(torch_cache, served_weights, monkeypatch):
    name, payload = served_weights
    assert hub.get_weights(name, quiet=True) == str(torch_cache / "w.pth")
    assert (torch_cache / "w.pth").read_bytes() == payload
    monkeypatch.setattr(hub, "host_reachable", lambda *args, **kwargs: pytest.fail("fetched again"))
    assert hub.get_weights(name, quiet=True) == str(torch_cache / "w.pth")  # cached and verified
    with pytest.raises(KeyError, match="known: clip-rn101-openai"):
        hub.get_weights("clip-vit-b99")


def test_unreachable_weights_say_which_file_to_fetch_and_where_to_put_it(torch_cache, monkeypatch):
    probed = []
    monkeypatch.setattr(hub, "host_reachable", lambda url, *args, **kwargs: probed.append(url) or False)
    with pytest.raises(hub.WeightsUnavailableError) as err:
        hub.get_weights("clip-vit-b16-openai")
    entry = hub.REGISTRY["clip-vit-b16-openai"]
    assert probed == [entry.url]
    assert f"download {entry.url} by hand and put it at {torch_cache / 'openai-clip-ViT-B-16.pt'}" in str(err.value)
    assert f"(sha256 {entry.sha256})" in str(err.value)
    assert not torch_cache.exists() or not any(torch_cache.iterdir())


def test_weights_command_lists_the_registry_with_cache_state_and_downloads_by_name(torch_cache, served_weights, capsys):
    name, payload = served_weights
    weights.weights([])
    listing = capsys.readouterr().out
    for registered in hub.REGISTRY:
        assert registered in listing
    assert f"{name:<22} not cached" in listing
    weights.weights(["--download", name])
    assert capsys.readouterr().out.strip() == str(torch_cache / "w.pth")
    assert (torch_cache / "w.pth").read_bytes() == payload
    weights.weights([])
    assert f"{name:<22} cached" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        weights.weights(["--no-such-option"])
