import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from torchreid_fgdi.cli.synthetic import synthesize
from torchreid_fgdi.data.folders import parse_market_name
from torchreid_fgdi.synthetic import SYNTHETIC_DATASETS, render
from torchreid_fgdi.synthetic.render import DOMAIN_STYLES, STAMP, SyntheticSize, generate, generate_domain

SMALL = SyntheticSize(train_ids=5, test_ids=4)


def _digest(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*.jpg"))
    }


def test_generator_is_deterministic_per_seed(tmp_path):
    a = _digest(Path(generate_domain(str(tmp_path / "1"), "synth_b", SMALL, seed=3)))
    b = _digest(Path(generate_domain(str(tmp_path / "2"), "synth_b", SMALL, seed=3)))
    c = _digest(Path(generate_domain(str(tmp_path / "3"), "synth_b", SMALL, seed=4)))
    assert a == b and len(a) > 20
    assert a != c


def test_layout_is_market1501(tiny_root):
    for name, style in DOMAIN_STYLES.items():
        folder = Path(tiny_root, name)
        assert sorted(os.listdir(folder)) == ["bounding_box_test", "bounding_box_train", "generated.json", "query"]
        split = {sub: [parse_market_name(str(p)) for p in (folder / sub).glob("*.jpg")] for sub in os.listdir(folder)}
        train_pids = {pid for pid, _ in split["bounding_box_train"]}
        test_pids = {pid for pid, _ in split["bounding_box_test"]}
        assert len(train_pids) == 12 and len(test_pids) == 8 and not train_pids & test_pids
        assert {pid for pid, _ in split["query"]} == test_pids
        # every query has a true match in the gallery seen by another camera
        for pid, cam in split["query"]:
            assert any(g == pid and c != cam for g, c in split["bounding_box_test"])
        assert all(0 <= cam < style.num_cams for items in split.values() for _, cam in items)
        img = Image.open(next((folder / "query").glob("*.jpg")))
        assert (img.height, img.width) == style.size


def test_domains_differ_in_global_style(tiny_root):
    """Each domain's mean colour statistics differ from the others': a real domain shift."""
    stats = {}
    for name in DOMAIN_STYLES:
        imgs = [
            np.asarray(Image.open(p).resize((32, 64)), dtype=np.float32)
            for p in sorted(Path(tiny_root, name, "bounding_box_train").glob("*.jpg"))
        ]
        stats[name] = np.stack(imgs).mean(axis=(0, 1, 2))
    names = list(stats)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert np.abs(stats[a] - stats[b]).max() > 5, (a, b, stats[a], stats[b])


@pytest.mark.subprocess
@pytest.mark.timeout(600)
def test_command_line_writes_requested_domains(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "torchreid_fgdi.cli.synthetic",
            "--root",
            str(tmp_path),
            "--domains",
            "synth_c",
            "--train-ids",
            "3",
            "--test-ids",
            "2",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "synth_c" in out.stdout
    assert os.listdir(tmp_path) == ["synth_c"]
    assert len({parse_market_name(p)[0] for p in os.listdir(tmp_path / "synth_c" / "bounding_box_train")}) == 3


def test_a_bigger_test_split_leaves_the_training_set_and_the_first_test_identities_as_they_were(tmp_path):
    """Test identities past the 40th are drawn after the training images: growing the split adds images."""
    size = SyntheticSize(train_ids=3, test_ids=40, max_cams_per_id=2, max_images_per_cam=2)
    small = _digest(Path(generate_domain(str(tmp_path / "40"), "synth_c", size)))
    big = _digest(Path(generate_domain(str(tmp_path / "42"), "synth_c", SyntheticSize(3, 42, 2, 2))))
    assert {k: v for k, v in big.items() if k.startswith("bounding_box_train")} == {
        k: v for k, v in small.items() if k.startswith("bounding_box_train")
    }
    assert small.items() < big.items()  # every image of the smaller split, unchanged
    added = {parse_market_name(k)[0] for k in big.keys() - small.keys()}
    assert added == {44, 45} and {parse_market_name(k)[0] for k in big if k.startswith("query")} >= added


def _stamp(folder: Path) -> dict:
    return json.loads((folder / STAMP).read_text())


def test_a_domain_made_by_old_defaults_is_regenerated_on_use_and_one_made_on_purpose_is_kept(
    tmp_path, monkeypatch, capsys
):
    old, new = SyntheticSize(3, 2, 2, 2), SyntheticSize(3, 4, 2, 2)
    monkeypatch.setitem(render.DEFAULT_SIZES, "synth_c", old)
    root, folder = str(tmp_path), tmp_path / "synth_c"
    generate(root, ["synth_c"])
    assert _stamp(folder) == {"generator": 1, "domain": "synth_c", "size": vars(old), "seed": 0, "default": True}
    first = _digest(folder)
    SYNTHETIC_DATASETS["synth_c"](root=root)  # current: used as it is, silently
    assert capsys.readouterr().out.count("=>") == 1  # torchreid's "=> Loaded synth_c" only

    (folder / STAMP).unlink()  # made before folders were stamped: regenerated, the same images again
    assert generate(root, ["synth_c"], SyntheticSize(3, 2, 2, 3)) == []  # asked for other sizes: kept as it is
    assert "exists: kept as it is" in capsys.readouterr().out and not (folder / STAMP).exists()
    SYNTHETIC_DATASETS["synth_c"](root=root)
    printed = capsys.readouterr().out
    assert f"=> {folder} is out of date: it has no readable generated.json (it was made before" in printed
    assert "; regenerating it with train_ids 3, test_ids 2, max_cams_per_id 2, max_images_per_cam 2, seed 0" in printed
    assert _digest(folder) == first and _stamp(folder)["default"] is True

    monkeypatch.setitem(render.DEFAULT_SIZES, "synth_c", new)  # the defaults grew: the old default is stale
    assert generate(root, ["synth_c"]) == [str(folder)]  # the command with the defaults writes it anew too
    assert "it was made with an older version's defaults (train_ids 3, test_ids 2," in capsys.readouterr().out
    assert _stamp(folder)["size"] == vars(new)
    generate(root, ["synth_c"], old, overwrite=True)
    dataset = SYNTHETIC_DATASETS["synth_c"](root=root)  # still the old default, but made on purpose now: kept
    assert "generated on purpose" in capsys.readouterr().out and len({item[1] for item in dataset.query}) == 2
    (folder / STAMP).write_text(json.dumps({**_stamp(folder), "default": True}))  # as the old defaults made it
    dataset = SYNTHETIC_DATASETS["synth_c"](root=root)
    assert "it was made with an older version's defaults (train_ids 3, test_ids 2," in capsys.readouterr().out
    assert len({item[1] for item in dataset.query}) == 4 and _stamp(folder)["size"] == vars(new)
    assert os.listdir(root) == ["synth_c"]  # nothing left aside, no lock file

    generate(root, ["synth_c"], old, overwrite=True)  # the old size asked for on purpose: kept
    assert _stamp(folder)["default"] is False
    dataset = SYNTHETIC_DATASETS["synth_c"](root=root)
    assert f"=> {folder}: generated on purpose with train_ids 3, test_ids 2," in capsys.readouterr().out
    assert len({item[1] for item in dataset.query}) == 2

    monkeypatch.setattr(render, "GENERATOR_VERSION", 2)  # same settings, other images now: made again as asked
    SYNTHETIC_DATASETS["synth_c"](root=root)
    assert "it was made by generator version 1, this is version 2; regenerating it with train_ids 3, test_ids 2" in (
        capsys.readouterr().out
    )
    assert _stamp(folder)["generator"] == 2 and _stamp(folder)["default"] is False


def test_the_commands_sizes_change_each_domains_own_default(tmp_path, monkeypatch):
    monkeypatch.setitem(render.DEFAULT_SIZES, "synth_c", SyntheticSize(3, 5, 2, 2))
    monkeypatch.setitem(render.DEFAULT_SIZES, "synth_b", SyntheticSize(3, 2, 2, 2))
    synthesize(["--root", str(tmp_path), "--domains", "synth_b", "synth_c", "--train-ids", "2"])
    assert _stamp(tmp_path / "synth_c")["size"] == vars(SyntheticSize(2, 5, 2, 2))
    assert _stamp(tmp_path / "synth_b")["size"] == vars(SyntheticSize(2, 2, 2, 2))
    assert _stamp(tmp_path / "synth_c")["default"] is False
