import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from torchreid_fgdi.data.folders import parse_market_name
from torchreid_fgdi.synthetic.render import DOMAIN_STYLES, SyntheticSize, generate_domain

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
        assert sorted(os.listdir(folder)) == ["bounding_box_test", "bounding_box_train", "query"]
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
