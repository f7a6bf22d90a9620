"""fgdi through torchreid's own entry point, engines, data manager, extractor and checkpoint tools."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchreid
from torchvision.transforms import InterpolationMode

from tests.conftest import FIXTURES, parity
from tests.test_fgdi_engine import CONFIG
from torchreid_fgdi.cli.train import command_line
from torchreid_fgdi.config import load_config
from torchreid_fgdi.config.checks import ConfigError
from torchreid_fgdi.data import DomainBalancedIdentitySampler
from torchreid_fgdi.tools.export import export
from torchreid_fgdi.tools.features import FeatureExtractor

UPSTREAM = FIXTURES / "torchreid-upstream"
needs_upstream = parity("torchreid-upstream/main.py", "torchreid-upstream/default_config.py")
patient = pytest.mark.timeout(1800)  # torchreid's main trains fgdi in a child: minutes under load
SIZE = ["data.height", "128", "data.width", "64"]
ONE_EPOCH_EACH = [word for stage in ("1", "2a", "2b", "3") for word in (f"fgdi.stage{stage}_epochs", "1")]
ONE_EPOCH_EACH += [
    "fgdi.prompt.batch_size",
    "32",
    "train.batch_size",
    "24",
    "test.plots",
    "false",
]  # fgdi_tiny is built for 64 x 32: the ViT adapts
LAUNCHER = (
    "import runpy, sys, torchreid_fgdi\n"  # the one line a torchreid user adds
    "sys.argv = ['main.py', *sys.argv[1:]]\n"
    f"runpy.run_path({str(UPSTREAM / 'main.py')!r}, run_name='__main__')\n"
)


def _upstream(root, save_dir, *opts, preamble=""):
    """torchreid's unchanged scripts/main.py, in a process of its own (its Logger takes over stdout),
    after the Python lines `preamble`."""
    args = ["--root", root, "data.sources", "['synth_a', 'synth_b']", "data.targets", "['synth_d']"]
    args += ["model.name", "fgdi_tiny", *SIZE, "data.transforms", "['clip_fgdi']"]  # as configs/models/fgdi.yaml
    args += ["data.save_dir", str(save_dir), "data.workers", "0", "train.max_epoch", "1", "train.print_freq", "1000"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(UPSTREAM), str(Path(__file__).parents[1])])}
    done = subprocess.run(
        [sys.executable, "-c", preamble + LAUNCHER, *args, *opts], capture_output=True, text=True, env=env, timeout=1500
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def upstream_run(tiny_root, tmp_path_factory):
    """torchreid's main trained once per loss, shared by this module's tests: loss -> (save_dir, stdout)."""
    runs = {}

    def run(loss: str):
        if loss not in runs:
            save_dir = tmp_path_factory.mktemp(f"upstream-{loss}") / "run"
            sampler = ["sampler.train_sampler", "RandomIdentitySampler"] if loss == "triplet" else []
            runs[loss] = save_dir, _upstream(tiny_root, save_dir, "loss.name", loss, *sampler)
        return runs[loss]

    return run


@needs_upstream
@patient
@pytest.mark.subprocess
@pytest.mark.parametrize("loss", ["softmax", "triplet"])
def test_torchreids_own_main_trains_fgdi_and_evaluates_the_result(tiny_root, tmp_path, loss, upstream_run):
    run, out = upstream_run(loss)
    checkpoint = run / "model" / "model.pth.tar-1"
    assert checkpoint.is_file() and "Rank-1" in out and "mAP" in out
    (log,) = run.glob("train.log-*")  # torchreid's Logger: the log as torchreid writes it
    text = log.read_text()  # the authors' pipelines ran, and the log lists them, not torchreid's
    assert text.count("Building train transforms") == 1 and "normalization (mean=" not in text
    assert "+ AuthorsAugMix(prob=0.6" in text and "+ ToTensor()\n+ PerImageNorm(each channel" in text
    evaluated = _upstream(
        tiny_root, tmp_path / "eval", "loss.name", loss, "test.evaluate", "True", "model.load_weights", str(checkpoint)
    )
    rank1 = [line for line in out.splitlines() if "Rank-1" in line]
    assert rank1 and rank1[0] in evaluated  # the same weights, the same numbers


@pytest.mark.parametrize("loss", ["softmax", "triplet"])
def test_torchreids_engines_train_fgdi(tiny_root, tmp_path, loss):
    datamanager = torchreid.data.ImageDataManager(
        root=tiny_root, sources=["synth_a", "synth_b"], targets="synth_d", height=64, width=32, workers=0,
        batch_size_train=24, train_sampler="RandomIdentitySampler", use_gpu=False,
    )  # fmt: skip
    model = torchreid.models.build_model("fgdi_tiny", datamanager.num_train_pids, loss=loss, pretrained=False)
    before = model.classifier.weight.detach().clone()
    optimizer = torchreid.optim.build_optimizer(model, optim="adam", lr=1e-3)
    scheduler = torchreid.optim.build_lr_scheduler(optimizer, lr_scheduler="single_step", stepsize=20)
    engine_class = {"softmax": torchreid.engine.ImageSoftmaxEngine, "triplet": torchreid.engine.ImageTripletEngine}
    engine = engine_class[loss](datamanager, model, optimizer=optimizer, scheduler=scheduler, use_gpu=False)
    engine.run(save_dir=str(tmp_path), max_epoch=1, print_freq=1000)
    assert not torch.equal(before, model.classifier.weight) and (tmp_path / "model" / "model.pth.tar-1").is_file()


def _our_run(root, save_dir):
    from torchreid_fgdi.cli.train import train

    train(["--config-file", CONFIG, "--root", root, "data.save_dir", str(save_dir), *ONE_EPOCH_EACH, *SIZE])
    return save_dir / "checkpoints" / "stage3.pth"


def test_torchreids_feature_extractor_reads_an_fgdi_checkpoint_at_its_size(tiny_root, tmp_path):
    checkpoint = _our_run(tiny_root, tmp_path / "run")  # trained at 128 x 64: a 16 x 8 grid
    theirs = torchreid.utils.FeatureExtractor(
        model_name="fgdi_tiny", model_path=str(checkpoint), image_size=(128, 64), device="cpu"
    )  # built at fgdi_tiny's default 64 x 32
    ours = FeatureExtractor(str(checkpoint), device="cpu")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert state["rank1"] == pytest.approx(results["synth_d"]["cmc"][0])  # the unseen target's, not all four
    images = torch.randn(3, 3, 128, 64)
    with torch.no_grad():
        torch.testing.assert_close(theirs.model(images), ours.model(images))


@needs_upstream
@patient
@pytest.mark.subprocess
def test_checkpoints_of_torchreids_main_load_in_our_extractor_and_export(tmp_path, upstream_run):
    run, _ = upstream_run("softmax")
    checkpoint = str(run / "model" / "model.pth.tar-1")
    config = tmp_path / "fgdi_tiny_128x64.yaml"
    config.write_text(f"_BASE_: {CONFIG}\ndata:\n  height: 128\n  width: 64\n")
    features = FeatureExtractor(checkpoint, config_file=str(config), device="cpu")(torch.randn(2, 3, 128, 64))
    assert features.shape == (2, 128) and torch.isfinite(features).all()
    written = export(checkpoint, str(tmp_path / "export"), ["torchscript"], config_file=str(config))
    assert Path(written["torchscript"]).is_file()


def test_torchreids_data_manager_takes_our_sampler_by_name(tiny_root):
    datamanager = torchreid.data.ImageDataManager(
        root=tiny_root, sources=["synth_a", "synth_b", "synth_c"], targets="synth_d", height=64, width=32,
        workers=0, batch_size_train=24, train_sampler="DomainBalancedIdentitySampler", use_gpu=False,
    )  # fmt: skip
    assert isinstance(datamanager.train_loader.sampler, DomainBalancedIdentitySampler)
    batch = next(iter(datamanager.train_loader))
    assert sorted(batch["dsetid"].tolist()) == [0] * 8 + [1] * 8 + [2] * 8  # 2 identities x 4 per source


CLIP_FGDI_TRAIN = ["Resize", "RandomGrayscale", "Pad", "RandomCrop", "RandomHorizontalFlip", "RandomApply"]
CLIP_FGDI_TRAIN += ["AuthorsAugMix", "ToTensor", "PerImageNorm"]


def test_torchreids_data_manager_applies_and_prints_the_clip_fgdi_pipelines(tiny_root, capsys):
    datamanager = torchreid.data.ImageDataManager(
        root=tiny_root, sources="synth_a", targets="synth_d", height=64, width=32, workers=0,
        transforms=["clip_fgdi"], use_gpu=False,
    )  # fmt: skip
    train, test = datamanager.transform_tr, datamanager.transform_te
    assert [type(t).__name__ for t in train.transforms] == CLIP_FGDI_TRAIN
    assert [type(t).__name__ for t in test.transforms] == ["Resize", "ToTensor", "PerImageNorm"]
    assert test.transforms[0].interpolation == InterpolationMode.BICUBIC
    assert datamanager.train_loader.dataset.transform is train
    assert {loader.dataset.transform for loader in datamanager.test_loader["synth_d"].values()} == {test}
    images = next(iter(datamanager.test_loader["synth_d"]["query"]))["img"]
    torch.testing.assert_close(images.mean(dim=(2, 3)), torch.zeros(images.shape[:2]), atol=1e-4, rtol=0)
    torch.testing.assert_close(images.std(dim=(2, 3), unbiased=False), torch.ones(images.shape[:2]), atol=1e-2, rtol=0)
    out = capsys.readouterr().out
    listed = out[out.index("Building train transforms") : out.index("=> Loading train")].splitlines()
    assert [line.split("(")[0] for line in listed] == [  # what is printed is what runs, once
        "Building train transforms ",
        *[f"+ {name}" for name in CLIP_FGDI_TRAIN],
        "Building test transforms ",
        "+ Resize",
        "+ ToTensor",
        "+ PerImageNorm",
    ]
    assert "+ AuthorsAugMix(prob=0.6, severity=1, width=3, depth=1, alpha=0.1)\n" in out
    assert "+ RandomApply(p=0.1 ColorJitter(brightness=(0.85, 1.15)" in out and "normalization (mean=" not in out


def test_torchreid_and_fastreid_names_are_answered(tmp_path, capsys):
    assert load_config([], ["cuhk03.labeled_images", "True"]).cuhk03.labeled is True
    upstream_style = tmp_path / "upstream.yaml"
    upstream_style.write_text("cuhk03:\n  labeled_images: true\nvideo:\n  seq_len: 8\n")
    assert load_config(str(upstream_style)).cuhk03.labeled is True
    assert load_config(
        *command_line(["--config-file", CONFIG, "--transforms", "random_flip", "color_jitter"])
    ).data.transforms == [
        "random_flip",
        "color_jitter",
    ]
    with pytest.raises(
        ConfigError, match="MODEL.WEIGHTS in the command line is fast-reid's key; here it is model.load_weights"
    ):
        load_config([], ["MODEL.WEIGHTS", "x.pth"])
    for flag, equivalent in (
        ("--eval-only", "test.evaluate True"),
        ("--resume", "model.resume auto"),
        ("--num-gpus", "torchrun"),
    ):
        with pytest.raises(SystemExit):
            load_config(*command_line(["--config-file", CONFIG, flag]))
        assert f"{flag} is fast-reid's flag; here: {equivalent}" in capsys.readouterr().err


def _readme_recipe() -> str:
    """The README's three-stage recipe: its Python block that builds an `ImageFGDIEngine`."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    (recipe,) = [
        code for code in re.findall(r"^```python\n(.*?)^```", readme, re.M | re.S) if "ImageFGDIEngine(" in code
    ]
    return recipe


def test_the_readme_python_recipe_gives_the_clis_numbers_and_records_its_config(tiny_root, tmp_path, monkeypatch):
    """The README's block, run as written (only its config shortened): seeded as `torchreid-fgdi` is,
    it gives the command's numbers for the same config, whatever state the generators were in."""
    import torchreid_fgdi.config
    from torchreid_fgdi.cli.train import train

    opts = ["data.root", tiny_root, "data.targets", "['synth_d']", *ONE_EPOCH_EACH, "train.print_freq", "1000"]
    cli = train(["--config-file", CONFIG, *opts, "data.save_dir", str(tmp_path / "cli")])
    read = load_config

    def readme_config(path: str):
        assert path == "configs/synthetic/fgdi_tiny.yaml"  # the README's config, as the CLI ran it
        return read(CONFIG, [*opts, "data.save_dir", str(tmp_path / "recipe")])

    monkeypatch.setattr(torchreid_fgdi.config, "load_config", readme_config)
    torch.manual_seed(12345)  # whatever state the generators were left in: the recipe seeds them as the CLI does
    recipe = {}
    exec(compile(_readme_recipe(), "README.md", "exec"), recipe)
    numbers = {name: (res["mAP"], list(res["cmc"])) for name, res in recipe["engine"].test_results.items()}
    assert numbers == {name: (res["mAP"], list(res["cmc"])) for name, res in cli.items()}
    assert not (tmp_path / "recipe" / "plots").exists()  # test.plots false
    checkpoint = tmp_path / "recipe" / "checkpoints" / "stage3.pth"
    features = FeatureExtractor(str(checkpoint), device="cpu")(torch.randn(2, 3, 64, 32))  # its config recorded
    assert features.shape == (2, 128)


def test_a_checkpoint_with_overlapping_patches_is_taken_at_its_stride_and_grid(tmp_path):
    from torchreid_fgdi.models import build_fgdi

    trained = build_fgdi("fgdi_tiny", 5, num_domains=2, pretrained=False, image_size=(64, 64), stride=4).eval()
    config = load_config(CONFIG, ["data.height", "64", "data.width", "64", "fgdi.stride", "4"]).dump()
    torch.save({"state_dict": trained.state_dict(), "config": config}, tmp_path / "overlapping.pth")
    default = torchreid.models.build_model("fgdi_tiny", 5, num_domains=2, pretrained=False)  # 64 x 32, stride 8
    position = default.image_encoder.visual.positional_embedding
    default.fit_checkpoint(default.state_dict())  # its own grid: the parameter is kept (an optimizer may hold it)
    assert default.image_encoder.visual.positional_embedding is position
    torchreid.utils.load_pretrained_weights(default, str(tmp_path / "overlapping.pth"))
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(default.eval()(images), trained(images))
