"""torchreid-fgdi-search for real use: query folders, --exclude-self, the persistent gallery index
(reused, updated, rebuilt when it cannot be trusted) and the two top-k paths (torch, faiss)."""

import os
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tests.test_inference import BASELINE, save_baseline
from torchreid_fgdi.cli import search as search_cli
from torchreid_fgdi.tools import gallery_index, nearest, search
from torchreid_fgdi.tools.features import FeatureExtractor


def _picture(path, seed: int) -> str:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(90, 40, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return str(path)


@pytest.fixture
def gallery(tmp_path):
    """Ten random people, some in a subfolder."""
    folder = tmp_path / "gallery"
    for i in range(10):
        _picture(folder / ("nested" if i % 2 else "") / f"p{i}.png", seed=i)
    return folder


@pytest.fixture
def weights(tmp_path):
    return save_baseline(tmp_path / "weights")[0]


class Counting(FeatureExtractor):
    """A FeatureExtractor that remembers every image it embedded."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []

    def __call__(self, images):
        self.seen += list(images)
        return super().__call__(images)


def _extractor(weights) -> Counting:
    return Counting(weights, config_file=BASELINE, device="cpu")


def _search(weights, tmp_path, *args) -> list[dict]:
    common = ["--weights", weights, "--config-file", BASELINE, "--device", "cpu", "--out", str(tmp_path / "out")]
    return search_cli.search([*common, "--index", str(tmp_path / "index.pt"), *args])


def test_a_query_folder_stands_for_every_image_under_it_sorted(gallery, weights, tmp_path):
    single = _picture(tmp_path / "elsewhere" / "q.png", seed=50)
    everything = sorted(str(p) for p in gallery.rglob("*.png"))
    assert search.query_images([single, str(gallery)]) == [single, *everything]
    ranking = _search(weights, tmp_path, "--query", str(gallery), "--gallery", str(gallery), "--topk", "3")
    assert [entry["query"] for entry in ranking] == everything
    assert all(entry["matches"][0]["path"] == entry["query"] for entry in ranking)
    with pytest.raises(FileNotFoundError, match="'nowhere.png' does not exist: pass image files or folders"):
        search.query_images(["nowhere.png"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="--query folder .*empty' holds no images"):
        search.query_images([str(tmp_path / "empty")])


def test_exclude_self_leaves_out_the_querys_own_file_under_any_path(gallery, weights, tmp_path):
    link = tmp_path / "link.png"
    link.symlink_to(gallery / "nested" / "p3.png")
    spelled = str(gallery / "nested" / ".." / "nested" / "p3.png")
    kept = _search(weights, tmp_path, "--query", str(link), spelled, "--gallery", str(gallery), "--topk", "5")
    for entry in kept:
        assert entry["matches"][0]["path"] == str(gallery / "nested" / "p3.png")
        assert entry["matches"][0]["similarity"] == pytest.approx(1.0, abs=1e-5)
    args = ["--query", str(link), spelled, "--gallery", str(gallery), "--topk", "4", "--exclude-self"]
    excluded = _search(weights, tmp_path, *args)
    for with_self, without in zip(kept, excluded):
        assert without["matches"] == with_self["matches"][1:]  # the rest in the same order, still 4


def test_a_second_search_embeds_only_the_queries(gallery, weights, tmp_path, capsys, monkeypatch):
    extractors = []
    monkeypatch.setattr(
        search_cli, "FeatureExtractor", lambda *a, **k: extractors.append(Counting(*a, **k)) or extractors[-1]
    )
    query = str(gallery / "p0.png")
    first = _search(weights, tmp_path, "--query", query, "--gallery", str(gallery))
    assert len(extractors[0].seen) == 10 + 1
    assert "10 images, 0 from the index" in capsys.readouterr().out
    second = _search(weights, tmp_path, "--query", query, "--gallery", str(gallery))
    assert extractors[1].seen == [query]
    assert "10 images, 10 from the index" in capsys.readouterr().out
    assert [m["path"] for m in second[0]["matches"]] == [m["path"] for m in first[0]["matches"]]
    assert [m["similarity"] for m in second[0]["matches"]] == pytest.approx(
        [m["similarity"] for m in first[0]["matches"]]
    )


def test_changed_new_removed_and_unreadable_images_update_the_index(gallery, weights, tmp_path):
    index = str(tmp_path / "index.pt")
    paths = search.list_images(str(gallery))
    gallery_index.gallery_features(_extractor(weights), str(gallery), paths, index)
    _picture(gallery / "p2.png", seed=99)  # new content under an old name
    os.remove(gallery / "nested" / "p1.png")
    _picture(gallery / "new" / "p10.png", seed=10)
    (gallery / "broken.jpg").write_bytes(b"")
    paths = search.list_images(str(gallery))
    extractor = _extractor(weights)
    found = gallery_index.gallery_features(extractor, str(gallery), paths, index, skip_unreadable=True)
    assert sorted(extractor.seen) == [str(gallery / "new" / "p10.png"), str(gallery / "p2.png")]
    assert (found.reused, found.embedded, found.removed) == (8, 2, 1)
    assert list(found.skipped) == [str(gallery / "broken.jpg")]
    assert found.paths == [p for p in paths if not p.endswith("broken.jpg")]
    torch.testing.assert_close(found.features, _extractor(weights)(found.paths))  # no stale feature
    again = gallery_index.gallery_features(_extractor(weights), str(gallery), paths, index, skip_unreadable=True)
    assert (again.reused, again.embedded, again.removed, list(again.skipped)) == (10, 0, 0, list(found.skipped))


def test_an_index_of_other_weights_another_folder_or_unreadable_is_rebuilt_with_a_message(
    gallery, weights, tmp_path, capsys
):
    index = tmp_path / "index.pt"
    paths = search.list_images(str(gallery))
    gallery_index.gallery_features(_extractor(weights), str(gallery), paths, str(index))
    other = _extractor(save_baseline(tmp_path / "other", seed=1)[0])
    capsys.readouterr()
    found = gallery_index.gallery_features(other, str(gallery), paths, str(index))
    assert (
        "it was built with other weights, another model or another input size; rebuilding it" in capsys.readouterr().out
    )
    assert len(other.seen) == 10
    torch.testing.assert_close(found.features, other(paths))
    copy = tmp_path / "copy"
    os.rename(gallery, copy)
    gallery_index.gallery_features(other, str(copy), [p.replace(str(gallery), str(copy)) for p in paths], str(index))
    assert f"it indexes another folder ({gallery})" in capsys.readouterr().out
    for damage in (b"", b"not an index", index.read_bytes()[:1000]):
        index.write_bytes(damage)
        rebuilt = _extractor(weights)
        found = gallery_index.gallery_features(rebuilt, str(copy), search.list_images(str(copy)), str(index))
        assert "cannot be read" in capsys.readouterr().out and len(rebuilt.seen) == 10
        torch.testing.assert_close(found.features, rebuilt(found.paths))


def test_an_image_replaced_keeping_its_size_and_modification_time_is_embedded_again(gallery, weights, tmp_path):
    """``cp -p`` of another picture of the same size: only its inode change time tells."""
    replaced, other = _picture(gallery / "same.bmp", seed=20), _picture(tmp_path / "other.bmp", seed=21)
    index, paths, extractor = str(tmp_path / "index.pt"), search.list_images(str(gallery)), _extractor(weights)
    gallery_index.gallery_features(extractor, str(gallery), paths, index)
    before = os.stat(replaced)
    shutil.copy2(other, replaced)
    os.utime(replaced, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(replaced)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    extractor.seen.clear()
    found = gallery_index.gallery_features(extractor, str(gallery), paths, index)
    assert extractor.seen == [replaced] and (found.reused, found.embedded, found.changed) == (10, 1, 1)
    torch.testing.assert_close(found.features, extractor(paths))  # no stale feature


def _flip_a_bit(index) -> None:
    """One bit of one stored feature flipped in the file, as a bad disk or a bad copy does: the highest
    bit of its float32 exponent, so the value becomes ~1e37 (torch.load does not check the zip's CRCs)."""
    raw, row = bytearray(index.read_bytes()), torch.load(index, weights_only=True)["features"][3]
    at = bytes(raw).find(row.numpy().tobytes()) + 4 * int(row.abs().argmax())  # a float32 that is not 0
    raw[at + 3] ^= 0x40  # little-endian: the sign and the exponent's 7 highest bits
    index.write_bytes(raw)
    assert torch.load(index, weights_only=True)["features"][3].abs().max() > 1e30


def test_a_damaged_shuffled_or_old_index_is_rebuilt_with_a_message(gallery, weights, tmp_path, capsys):
    index, paths = tmp_path / "index.pt", search.list_images(str(gallery))
    extractor = _extractor(weights)
    want = gallery_index.gallery_features(extractor, str(gallery), paths, str(index)).features

    def shuffled(saved):
        saved["features"] = saved["features"][torch.arange(10).roll(1)]

    def nan(saved):
        saved["features"][0, 0] = float("nan")

    def old(saved):  # format 1: no change times, no checksum
        saved.update(format=1, sizes=saved["stats"][:, 0], mtimes=saved["stats"][:, 1])
        del saved["stats"], saved["checksum"]

    damages = {
        _flip_a_bit: "1 of its 10 features are not finite unit vectors (a damaged file)",
        shuffled: "its checksum does not match what it holds (a damaged or edited file)",
        nan: "1 of its 10 features are not finite unit vectors (a damaged file)",
        old: "it has format 1, this version reads 2",
    }
    for damage, problem in damages.items():
        if damage is _flip_a_bit:
            damage(index)
        else:
            saved = torch.load(index, weights_only=True)
            damage(saved)
            torch.save(saved, index)
        capsys.readouterr()
        extractor.seen.clear()
        found = gallery_index.gallery_features(extractor, str(gallery), paths, str(index))
        assert capsys.readouterr().out == f"=> Gallery index {index}: {problem}; rebuilding it\n", damage.__name__
        assert len(extractor.seen) == 10
        torch.testing.assert_close(found.features, want)


def test_an_interrupted_build_keeps_what_it_embedded(gallery, weights, tmp_path, monkeypatch):
    monkeypatch.setattr(gallery_index, "SAVE_EVERY", 4)
    index = str(tmp_path / "index.pt")
    paths = search.list_images(str(gallery))

    class Killed(Counting):
        def __call__(self, images):
            if len(self.seen) == 8:
                raise KeyboardInterrupt
            return super().__call__(images)

    with pytest.raises(KeyboardInterrupt):
        gallery_index.gallery_features(Killed(weights, BASELINE, "cpu"), str(gallery), paths, index)
    resumed = _extractor(weights)
    found = gallery_index.gallery_features(resumed, str(gallery), paths, index)
    assert resumed.seen == paths[8:] and (found.reused, found.embedded) == (8, 2)


def test_torch_and_faiss_give_the_same_ranking(monkeypatch):
    generator = torch.Generator().manual_seed(0)
    queries = F.normalize(torch.randn(30, 64, generator=generator), dim=1)
    gallery = F.normalize(torch.randn(3000, 64, generator=generator), dim=1)
    by_torch = nearest.top_k(queries, gallery, 20, "torch")
    by_faiss = nearest.top_k(queries, gallery, 20, "faiss")
    assert torch.equal(by_torch[1], by_faiss[1])
    torch.testing.assert_close(by_torch[0], by_faiss[0])
    one = nearest.top_k(queries[:1], gallery, 20, "faiss")  # faiss's one-query scan, not its BLAS path
    assert torch.equal(one[1], by_torch[1][:1])
    calls = []
    monkeypatch.setattr(nearest, "_faiss_top_k", lambda *args: calls.append(args) or by_faiss)
    monkeypatch.setattr(nearest, "FAISS_FROM", 3000)
    nearest.top_k(queries, gallery[:2999], 20)
    assert not calls  # below the threshold: torch
    nearest.top_k(queries, gallery, 20)
    assert len(calls) == 1
    assert nearest.top_k(queries, gallery[:5], 20, "torch")[1].shape == (30, 5)  # k capped at the gallery
    with pytest.raises(ValueError, match="unknown search backend 'annoy': choose from auto, torch, faiss"):
        nearest.top_k(queries, gallery, 5, "annoy")
