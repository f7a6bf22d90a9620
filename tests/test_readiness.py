"""The dataset readiness check: what is found, what is missing, and a run that does not start."""

import pytest

from tests.test_hub import offline, published_stand_in
from torchreid_fgdi.cli import refusals
from torchreid_fgdi.cli import train as train_command
from torchreid_fgdi.cli.benchmark import benchmark
from torchreid_fgdi.cli.train import train
from torchreid_fgdi.data import DomainImageDataManager
from torchreid_fgdi.data.readiness import DatasetsNotReadyError, check_datasets, ensure_datasets
from torchreid_fgdi.models import hub
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


def test_a_data_root_or_dataset_folder_that_is_a_symlink_loop_is_named_in_one_line(tmp_path, capsys, monkeypatch):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    monkeypatch.delenv(refusals.DEBUG_VARIABLE, raising=False)
    assert train_command.main(["--root", str(loop), "data.save_dir", str(tmp_path / "log")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: data.root {loop} is a symlink loop (a link that leads back to itself)")
    assert err.count("\n") == 1 and "set data.root / --root" in err

    root = tmp_path / "data"
    root.mkdir()
    (root / "synth_a").symlink_to(root / "synth_a")
    (root / "market1501").symlink_to(root / "market1501")
    message = f"dataset folder {root / 'synth_a'} is a symlink loop .*remove it \\(a synthetic domain is then generated"
    with pytest.raises(DatasetsNotReadyError, match=message):
        DomainImageDataManager(root=str(root), sources=["synth_a"], height=64, width=32, use_gpu=False)
    assert sorted(p.name for p in root.iterdir()) == ["market1501", "synth_a"]  # no temporary folder left
    with pytest.raises(DatasetsNotReadyError, match=f"dataset folder {root / 'market1501'} is a symlink loop"):
        ensure_datasets(str(root), ["market1501"])


def test_a_protocols_readiness_report_checks_the_clip_weights_before_any_dataset(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.chdir(tmp_path)
    offline(monkeypatch)
    path = tmp_path / "torch" / "hub" / "checkpoints" / "openai-clip-ViT-B-16.pt"
    run = ["--protocol", "p1", "--models", "fgdi", "osnet_x1_0", "--root", str(tmp_path / "data")]
    with pytest.raises(hub.WeightsUnavailableError) as missing:
        benchmark(run)
    assert str(missing.value).startswith("CLIP weights of fgdi not ready, nothing was started: ")
    assert f"by hand and put it at {path} (sha256 " in str(missing.value)
    assert "=> Datasets" not in capsys.readouterr().out  # refused before the datasets are looked at

    published_stand_in("clip-vit-b16-openai", "ViT-B-16", path, monkeypatch)
    with pytest.raises(DatasetsNotReadyError, match="market1501"):
        benchmark(run)
    out = capsys.readouterr().out
    assert f"=> CLIP weights\n  fgdi  {path}\n=> Datasets under " in out


def test_torchreid_fgdi_refuses_missing_clip_weights_before_any_dataset(tmp_path, monkeypatch, capsys):
    """The benchmark's check of the backbone's weights, in a single run too: not after loading every dataset."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    offline(monkeypatch)
    path = tmp_path / "torch" / "hub" / "checkpoints" / "openai-clip-ViT-B-16.pt"
    run = ["--config-file", "models/fgdi", "-s", "market1501", "-t", "market1501", "--root", str(tmp_path / "data")]
    run += ["data.save_dir", str(tmp_path / "run")]
    with pytest.raises(hub.WeightsUnavailableError, match=f"by hand and put it at {path} \\(sha256 "):
        train(run)
    assert "=> Datasets" not in capsys.readouterr().out

    published_stand_in("clip-vit-b16-openai", "ViT-B-16", path, monkeypatch)
    with pytest.raises(DatasetsNotReadyError, match="market1501"):
        train(run)
    assert f"=> CLIP weights: {path}\n=> Datasets under " in capsys.readouterr().out
