"""Released weights: the registry against open_clip's table, downloads into torch's cache, the
offline message and the weights command. The network is a local server or a stubbed reachability
probe, so these give the same result on a machine with or without internet."""

import dataclasses
import re
from pathlib import Path

import open_clip
import pytest
import torch
import torchreid

from tests.test_fgdi_variants import TINY_RN
from torchreid_fgdi.cli import weights
from torchreid_fgdi.models import VARIANTS, clip_weights, create_clip, hub
from torchreid_fgdi.models.variants import TINY_CLIP

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
    assert f"-> {torch_cache / 'w.pth'}\n" in listing  # where to put it by hand: the path it is read from
    weights.weights(["--download", name])
    assert capsys.readouterr().out.strip() == str(torch_cache / "w.pth")
    assert (torch_cache / "w.pth").read_bytes() == payload
    weights.weights([])
    assert f"{name:<22} cached" in capsys.readouterr().out
    (torch_cache / "w.pth").write_bytes(b"another file")  # put there by hand: read, it would be refused
    weights.weights([])
    assert f"{name:<22} wrong file" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        weights.weights(["--no-such-option"])


def offline(monkeypatch) -> None:
    """Every download host unreachable: nothing is fetched, and a missing file is refused at once."""
    for module in (hub, clip_weights):
        monkeypatch.setattr(module, "host_reachable", lambda *args, **kwargs: False)


def stand_in_backbone(arch: str, monkeypatch) -> dict:
    """open_clip's config of `arch` swapped for a tiny one of the same family, so a file of its
    weights is a few hundred kilobytes and builds in a moment: the lookup is by name, as for the real one."""
    tiny = TINY_RN if arch.startswith("RN") else TINY_CLIP
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, arch, tiny)
    return tiny


def accept_as_published(name: str, path: Path, monkeypatch) -> None:
    """The registry entry `name` given the sha256 of the test's file at `path`, which stands in for
    OpenAI's (whose sha256 the registry holds: a test cannot make a file with that one)."""
    monkeypatch.setitem(hub.REGISTRY, name, dataclasses.replace(hub.REGISTRY[name], sha256=hub.sha256sum(str(path))))


def published_stand_in(name: str, arch: str, path: Path, monkeypatch):
    """OpenAI's file put by hand, as a test can make it: a tiny CLIP of `arch`'s family
    (`stand_in_backbone`) saved at `path` and accepted as the registry's `name`. The CLIP it holds."""
    source, _ = create_clip(stand_in_backbone(arch, monkeypatch))
    path.parent.mkdir(parents=True)
    torch.save(source.state_dict(), path)
    accept_as_published(name, path, monkeypatch)
    return source


# clip_reid* variants read the same weights as their fgdi* twins
PRETRAINED = [variant for variant, spec in VARIANTS.items() if spec["weights"] == "openai" and spec["method"] == "fgdi"]


@pytest.mark.parametrize("variant", PRETRAINED)
def test_the_file_the_offline_error_names_is_the_one_pretrained_true_reads(variant, torch_cache, monkeypatch):
    arch = VARIANTS[variant]["clip"]
    name = hub.registered_name(open_clip.get_pretrained_cfg(arch, "openai")["url"])
    offline(monkeypatch)
    with pytest.raises(hub.WeightsUnavailableError) as missing:
        torchreid.models.build_model(variant, 3, pretrained=True)
    named = Path(re.search(r"put it at (\S+) \(sha256", str(missing.value)).group(1))
    assert named == Path(hub.weights_path(name)) == torch_cache / hub.REGISTRY[name].filename
    assert "pretrained=True and torchreid's model.pretrained True" in str(missing.value)
    source, _ = create_clip(stand_in_backbone(arch, monkeypatch))
    named.parent.mkdir(parents=True)
    torch.save(source.state_dict(), named)
    with pytest.raises(hub.ChecksumError, match=f"{re.escape(str(named))} has sha256 .* a different or damaged file"):
        torchreid.models.build_model(variant, 3, pretrained=True)  # read from there, and checked
    accept_as_published(name, named, monkeypatch)
    model = torchreid.models.build_model(variant, 3, pretrained=True)
    assert torch.equal(model.text_encoder.text_projection, source.text_projection)
    loaded, saved = model.text_encoder.transformer.state_dict(), source.transformer.state_dict()
    assert all(torch.equal(loaded[key], saved[key]) for key in saved)
