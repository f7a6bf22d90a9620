"""The authors' data recipe and training flags, where our first version differed from their code."""

import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from tests.fake_datasets import make_cuhksysu, make_market1501
from tests.test_fgdi_engine import _engine
from torchreid_fgdi.config import RunSettings, load_config
from torchreid_fgdi.config.checks import ConfigError
from torchreid_fgdi.data import DomainImageDataManager
from torchreid_fgdi.data.augmix import OPERATIONS, AuthorsAugMix, sample_parameter
from torchreid_fgdi.data.images import read_image
from torchreid_fgdi.data.public import CUHKSYSU
from torchreid_fgdi.data.transforms import clip_fgdi_transforms
from torchreid_fgdi.engine import caches
from torchreid_fgdi.models import build_fgdi

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_cuhksysu_combineall_adds_no_identity(tmp_path):
    expected = make_cuhksysu(str(tmp_path))
    train = CUHKSYSU(root=str(tmp_path), combineall=True, verbose=False).train
    assert len(train) == expected["train_imgs"] and len({pid for _, pid, *_ in train}) == expected["train_ids"]
    assert len({path for path, *_ in train}) == len(train)  # no image twice under two labels


def test_an_epoch_leaves_frozen_parameters_frozen_and_without_gradients(tiny_root):
    engine = _engine(tiny_root)
    engine.enter("stage1")
    engine.train()  # one epoch, in the shape of torchreid's Engine.train (which would open every layer)
    trainable = set(engine.trained_parameters("stage1"))
    for name, param in engine.model.named_parameters():
        assert param.requires_grad == (name in trainable), name
        if name not in trainable:
            assert param.grad is None, name
    assert any(n.startswith("text_encoder.") for n, _ in engine.model.named_parameters())
    assert not any(n.startswith(("text_encoder.", "promptlearner.")) for n in trainable)
    assert torch.isfinite(engine.model.classifier.weight.grad).all()


# ---- AugMix: the authors' operations and magnitudes --------------------------------------
# The reachable ranges at the authors' severity 1 on a 224 x 224 crop, from their functional.py:
# level ~ U(0.1, 1), parameter = level * maximum / 10 (int() where they truncate).
AUTHORS_RANGES = {
    "rotate": (-2, 2),  # int(level * 30 / 10) degrees, either sign
    "shear_x": (-0.03, 0.03),
    "shear_y": (-0.03, 0.03),
    "translate_x": (-7, 7),  # int(level * (224 / 3) / 10) pixels
    "translate_y": (-7, 7),
    "solarize": (231, 254),  # 256 - int(level * 256 / 10)
    "posterize": (4, 4),  # bits kept: 4 - int(level * 4 / 10)
}


def test_each_augmix_operation_reaches_the_authors_range_and_no_further():
    rng = random.Random(0)
    assert set(OPERATIONS) == {"autocontrast", "equalize", *AUTHORS_RANGES}
    for name, (low, high) in AUTHORS_RANGES.items():
        drawn = [sample_parameter(name, 1, (224, 224), rng) for _ in range(4000)]
        assert min(drawn) == pytest.approx(low, abs=1e-3) and max(drawn) == pytest.approx(high, abs=1e-3), name
        if name.startswith("shear"):
            assert min(abs(v) for v in drawn) >= 0.003 - 1e-9  # the level never falls below 0.1


def test_augmix_mixes_with_the_authors_probability_and_is_seeded():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 32, 3), dtype=np.uint8))
    augmix = AuthorsAugMix(prob=0.6)
    outputs = [np.asarray(augmix(image, random.Random(seed))) for seed in range(200)]
    changed = sum(not np.array_equal(out, np.asarray(image)) for out in outputs)
    assert 90 <= changed <= 150 and all(out.shape == (64, 32, 3) and out.dtype == np.uint8 for out in outputs)
    assert np.array_equal(np.asarray(augmix(image, random.Random(7))), np.asarray(augmix(image, random.Random(7))))
    train, _ = clip_fgdi_transforms(224, 224)
    assert [t for t in train.transforms if isinstance(t, AuthorsAugMix)][0].prob == 0.6


# ---- Market-1501 distractors and the authors' class counts -------------------------------
def _market_and_sysu(root, **kwargs):
    make_market1501(root)
    make_cuhksysu(root)
    return DomainImageDataManager(
        root=root, sources=["market1501", "cuhksysu"], targets="market1501", combineall=True, height=32, width=16,
        workers=0, use_gpu=False, **kwargs,
    )  # fmt: skip


def test_market1501_distractors_train_as_one_identity_when_asked(tmp_path):
    torchreids = _market_and_sysu(str(tmp_path))
    authors = _market_and_sysu(str(tmp_path), market1501_distractors=True)
    assert authors.num_train_pids == torchreids.num_train_pids + 1
    (market_start, market_stop), (sysu_start, sysu_stop) = authors.domain_pid_ranges
    assert (market_stop, sysu_stop) == (torchreids.domain_pid_ranges[0][1] + 1, torchreids.domain_pid_ranges[1][1] + 1)
    distractors = [item for item in authors.train_items if "/0000_" in item[0]]
    assert len(distractors) == 1 and distractors[0][1] == market_stop - 1 and distractors[0][3] == 0
    assert not any("/0000_" in item[0] for item in torchreids.train_items)
    assert len(authors.train_loader.dataset.train) == len(torchreids.train_items) + 1


def test_the_authors_protocol2_class_counts_add_rows_that_are_never_a_target(tiny_root):
    cfg = load_config([f"{CONFIGS}/models/fgdi.yaml", f"{CONFIGS}/protocols/p2/cuhk03.yaml"])
    assert cfg.fgdi.num_classes == 1502 + 4101 + 11934 and cfg.cuhk03.labeled and not cfg.market1501.train_distractors
    settings = RunSettings.from_config(cfg)
    assert settings.num_classes(751 + 1041 + 11934) == 17537
    with pytest.raises(ConfigError, match="fgdi.num_classes 17537 is fewer than the 20000 training identities"):
        settings.num_classes(20000)
    p3 = load_config([f"{CONFIGS}/models/fgdi.yaml", f"{CONFIGS}/protocols/p3/msmt17.yaml"])
    assert p3.market1501.train_distractors and p3.fgdi.num_classes == 0  # combined counts are the authors' own
    engine = _engine(tiny_root, "fgdi.num_classes", "40")
    engine.model = build_fgdi("fgdi_tiny", 40, num_domains=3, pretrained=False)  # 36 identities + 4 rows
    rows = caches.row_dsetids(engine.train_loader.dataset.train, 40)
    invariant, relevant = caches.prompt_features(engine.model, rows, engine.device)
    assert invariant.shape[0] == relevant.shape[0] == 40 and rows[36:].eq(0).all()


def test_stage2_order_is_fixed_per_stage_on_request_and_saved_for_resume(tiny_root, tmp_path):
    engine = _engine(tiny_root, "fgdi.prompt.reshuffle", "False")
    engine.enter("stage2a")
    engine.train_prompts("stage2a")
    order = engine._prompt_order.clone()
    engine.train_prompts("stage2a")
    assert torch.equal(engine._prompt_order, order) and sorted(order.tolist()) == list(range(len(order)))
    engine.save_checkpoint(str(tmp_path))
    resumed = _engine(tiny_root, "fgdi.prompt.reshuffle", "False")
    resumed.resume(str(tmp_path / "checkpoints" / "latest.pth"))
    assert torch.equal(resumed._prompt_order, order)
    reshuffled = _engine(tiny_root)
    reshuffled.enter("stage2a")
    reshuffled.train_prompts("stage2a")
    assert reshuffled._prompt_order is None


def test_images_are_turned_as_their_exif_orientation_says(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = str(tmp_path / "0001_c1s1_000001_01.jpg")
    Image.new("RGB", (16, 32)).save(path, exif=exif)
    assert read_image(path).size == (32, 16)


def test_every_protocol_config_reads_cuhk03_as_the_authors_and_p1_can_test_one_split():
    for path in sorted((CONFIGS / "protocols").rglob("*.yaml")):
        cfg = load_config([str(CONFIGS / "models" / "fgdi.yaml"), str(path)])
        uses_cuhk03 = "cuhk03" in (*cfg.data.sources, *cfg.data.targets)
        assert cfg.cuhk03.labeled == (uses_cuhk03 and path.parent.name != "single"), path
    one_split = SimpleNamespace(test_splits=1)
    assert DomainImageDataManager.test_split_ids(one_split, "prid") is None  # data.split_id alone
    assert DomainImageDataManager.test_split_ids(SimpleNamespace(test_splits=10), "viper") == list(range(10))


def test_market1501_distractors_keep_market_cameras_when_it_is_not_the_first_source(tmp_path):
    make_market1501(str(tmp_path))
    make_cuhksysu(str(tmp_path))
    dm = DomainImageDataManager(
        root=str(tmp_path), sources=["cuhksysu", "market1501"], targets="market1501", combineall=True, height=32,
        width=16, workers=0, use_gpu=False, market1501_distractors=True,
    )  # fmt: skip
    market_cameras = {camid for path, _, camid, dsetid in dm.train_items if dsetid == 1 and "/0000_" not in path}
    sysu_cameras = {camid for _, _, camid, dsetid in dm.train_items if dsetid == 0}
    distractor = next(item for item in dm.train_items if "/0000_" in item[0])
    assert distractor[2] in market_cameras and distractor[2] not in sysu_cameras and distractor[3] == 1
