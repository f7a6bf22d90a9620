"""The dataset readiness check: what is found, what is missing, and a run that does not start."""

import pytest

from torchreid_fgdi.cli.train import train
from torchreid_fgdi.data.readiness import DatasetsNotReadyError, check_datasets, ensure_datasets
from torchreid_fgdi.synthetic import SYNTHETIC_DATASETS


def _touch(root, *paths):
    for path in paths:
        full = root / path
        full.mkdir(parents=True, exist_ok=True)
        (full / "0001_c1s1_000151_01.jpg").write_bytes(b"x")


def test_found_missing_and_alternative_layouts(tmp_path):
    market = "market1501/Market-1501-v15.09.15"
    _touch(tmp_path, f"{market}/bounding_box_train", f"{market}/query")  # no bounding_box_test
    _touch(tmp_path, "msmt17/MSMT17_V2/mask_train_v2", "msmt17/MSMT17_V2/mask_test_v2")
    for split in ("train", "val", "query", "gallery"):
        (tmp_path / f"msmt17/MSMT17_V2/list_{split}.txt").write_text("")
    names = ["market1501", "msmt17", "viper", "synth_a", "my_dataset"]
    status = check_datasets(str(tmp_path), names, generated=SYNTHETIC_DATASETS)
    assert status == {
        "market1501": f"missing: {market}/bounding_box_test",
        "msmt17": "found",
        "viper": "missing: viper/VIPeR/cam_a, viper/VIPeR/cam_b",
        "synth_a": "generated on first use",
        "my_dataset": "not checked (unknown layout)",
    }
    with pytest.raises(DatasetsNotReadyError) as err:
        ensure_datasets(str(tmp_path), ["market1501", "msmt17", "viper"])
    message = str(err.value)
    assert "2 dataset(s) not ready, nothing was started" in message
    assert f"{market}/bounding_box_test" in message and "VIPeR.v1.0.zip" in message and "msmt17:" not in message


def test_an_empty_folder_is_not_a_dataset(tmp_path):
    (tmp_path / "ilids/i-LIDS_Pedestrian/Persons").mkdir(parents=True)
    assert check_datasets(str(tmp_path), ["ilids"])["ilids"].startswith("missing")


def test_a_run_with_a_missing_dataset_does_not_start(tmp_path):
    root, log = tmp_path / "data", tmp_path / "log"
    root.mkdir()
    with pytest.raises(DatasetsNotReadyError, match="viper"):
        train(["--root", str(root), "data.save_dir", str(log), "data.targets", "['synth_a', 'viper']"])
    assert not any(root.iterdir())  # synth_a not generated
    assert [p.name.split("-")[0] for p in log.iterdir() if p.name != ".run.lock"] == ["train.log"]  # only the log
