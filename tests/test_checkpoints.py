"""FGDI weights in and out: our checkpoints through torchreid, the authors' and CLIP-ReID's layouts."""

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
import torchreid

from torchreid_fgdi.models import FGDI, build_fgdi, load_fgdi_checkpoint, resize_pos_embed, to_authors_state_dict
from torchreid_fgdi.models.checkpoints import RECORD_KEY
from torchreid_fgdi.tools.export import export
from torchreid_fgdi.tools.features import FeatureExtractor
from torchreid_fgdi.utils.checkpoint import CheckpointError

from .conftest import tiny_clip

SIZE = (64, 32)


def _domain_part(key: str) -> bool:
    """FGDI's additions to CLIP-ReID: domain vectors, domain-template buffers, domain classifiers."""
    return key.startswith(("promptlearner.dmctx", "dc.", "dcgrl.")) or key.endswith("_domain")


def _trained_like(model):
    """Moves the BN statistics off their initial values so a lost buffer would show in the features."""
    with torch.no_grad():
        model.train()(torch.randn(8, 3, *model.image_encoder.image_size))
    return model.eval()


def _without_record(state: dict) -> dict:
    """`state` as torchreid-fgdi wrote it before state dicts recorded their model."""
    return {k: v for k, v in state.items() if k != RECORD_KEY}


def _features(model, images, camids=None):
    with torch.no_grad():
        return model.eval()(images, camids)


def _as_clipreid(state: dict) -> dict:
    """Our state dict written the way CLIP-ReID's `build_transformer` names it (no domain parts)."""
    out = {}
    for key, value in to_authors_state_dict(state).items():
        if _domain_part(key):
            continue
        key = key.replace("promptlearner.clsctx", "prompt_learner.cls_ctx").replace("promptlearner.", "prompt_learner.")
        out[key] = value
    return out


def test_authors_layout_loads_and_gives_the_same_features(tmp_path):
    source = _trained_like(build_fgdi("fgdi_tiny", 5, num_domains=3, pretrained=False))
    torch.save(to_authors_state_dict(source.state_dict()), tmp_path / "authors.pth")
    model = build_fgdi("fgdi_tiny", 5, num_domains=3, pretrained=False)
    assert load_fgdi_checkpoint(model, str(tmp_path / "authors.pth")) == []
    images = torch.randn(2, 3, *SIZE)
    torch.testing.assert_close(_features(model, images), _features(source, images), atol=0, rtol=0)


def test_clipreid_checkpoint_with_camera_embedding_gives_the_same_features(tmp_path):
    source = _trained_like(build_fgdi("fgdi_tiny", 5, num_domains=2, pretrained=False, num_cameras=6))
    torch.save({"module." + k: v for k, v in _as_clipreid(source.state_dict()).items()}, tmp_path / "clipreid.pth")
    model = build_fgdi("fgdi_tiny", 5, num_domains=2, pretrained=False, num_cameras=6)
    kept = load_fgdi_checkpoint(model, str(tmp_path / "clipreid.pth"))
    assert sorted(kept) == sorted(k for k in model.state_dict() if _domain_part(k))
    assert "promptlearner.dmctx" in kept and "dcgrl.fc1.weight" in kept
    images, camids = torch.randn(3, 3, *SIZE), torch.tensor([0, 5, 2])
    torch.testing.assert_close(_features(model, images, camids), _features(source, images, camids), atol=0, rtol=0)
    torch.testing.assert_close(model.text_features(torch.tensor([4])), source.text_features(torch.tensor([4])))
    # CLIP-ReID's SIE: coe * cv_embed[cam] is added to the class token before the position embedding.
    visual = model.image_encoder.visual
    with torch.no_grad():
        visual.class_embedding += model.sie_coe * model.cv_embed[5]
    torch.testing.assert_close(_features(model, images[1:2]), _features(source, images[1:2], camids[1:2]))

    without_cameras = build_fgdi("fgdi_tiny", 5, num_domains=2, pretrained=False)
    with pytest.raises(CheckpointError, match=r"unexpected: cv_embed.*"):
        load_fgdi_checkpoint(without_cameras, str(tmp_path / "clipreid.pth"))
    wrong_ids = build_fgdi("fgdi_tiny", 7, num_domains=2, pretrained=False, num_cameras=6)
    with pytest.raises(CheckpointError, match=r"classifier.weight: checkpoint \(5, 64\) vs model \(7, 64\)"):
        load_fgdi_checkpoint(wrong_ids, str(tmp_path / "clipreid.pth"))


def test_position_embedding_is_resampled_from_the_checkpoints_grid():
    source = build_fgdi("fgdi_tiny", 3, pretrained=False)  # 64x32 -> 8x4 grid
    key = "image_encoder.visual.positional_embedding"
    expected = resize_pos_embed(source.state_dict()[key], (8, 4), (6, 6))
    model = build_fgdi("fgdi_tiny", 3, pretrained=False, image_size=(48, 48))  # 6x6 grid
    old_style = _without_record(source.state_dict())
    with pytest.raises(CheckpointError, match=r"non-square grid of 32 positions.*ckpt_grid"):
        load_fgdi_checkpoint(model, old_style)
    load_fgdi_checkpoint(model, old_style, ckpt_grid=(8, 4))
    torch.testing.assert_close(model.state_dict()[key], expected, atol=0, rtol=0)

    recorded = build_fgdi("fgdi_tiny", 3, pretrained=False, image_size=(48, 48))
    load_fgdi_checkpoint(recorded, source.state_dict())  # the state dict records its 8x4 grid
    torch.testing.assert_close(recorded.state_dict()[key], expected, atol=0, rtol=0)
    assert recorded.record["grid"] == [6, 6]  # the model keeps its own grid, stride and size


def test_our_checkpoints_round_trip_through_torchreid(tmp_path):
    source = _trained_like(build_fgdi("fgdi_tiny", 4, num_domains=2, pretrained=False))
    state = {"state_dict": source.state_dict(), "epoch": 3, "rank1": np.float64(0.5), "optimizer": None}
    torchreid.utils.save_checkpoint(state, str(tmp_path))
    path = str(tmp_path / "model.pth.tar-3")
    images = torch.randn(2, 3, *SIZE)

    restored = build_fgdi("fgdi_tiny", 4, num_domains=2, pretrained=False)
    torchreid.utils.load_pretrained_weights(restored, path)
    torch.testing.assert_close(_features(restored, images), _features(source, images), atol=0, rtol=0)
    assert all(torch.equal(v, restored.state_dict()[k]) for k, v in source.state_dict().items())

    ours = build_fgdi("fgdi_tiny", 4, num_domains=2, pretrained=False)
    assert load_fgdi_checkpoint(ours, path) == []
    torch.testing.assert_close(_features(ours, images), _features(source, images), atol=0, rtol=0)

    extractor = torchreid.utils.FeatureExtractor("fgdi_tiny", model_path=path, image_size=SIZE, device="cpu")
    torch.testing.assert_close(extractor(images), _features(source, images), atol=0, rtol=0)


def _saved_the_torchreid_way(model, folder) -> str:
    """`model` saved as torchreid's engines save it: a state dict and an epoch, no config."""
    path = str(folder / "model.pth.tar-2")
    torch.save({"state_dict": model.state_dict(), "epoch": 2}, path)
    return path


def test_a_state_dict_saved_without_a_config_is_read_as_saved_by_torchreid_and_our_tools(tmp_path, capsys):
    """The weights record what reading them takes: torchreid's extractor builds fgdi_tiny at its
    default 64x32, stride 8, QuickGELU and the 'before' feature, and still gives the saved model's
    features; ours rebuilds it, input size included, from the state dict alone."""
    size = (256, 128)
    build = dict(pretrained=False, image_size=size, stride=6, neck_feat="after", quick_gelu=False)
    source = _trained_like(torchreid.models.build_model("fgdi_tiny", 5, num_domains=2, **build))
    path = _saved_the_torchreid_way(source, tmp_path)
    images = torch.randn(2, 3, *size)
    expected = _features(source, images)

    theirs = torchreid.utils.FeatureExtractor("fgdi_tiny", model_path=path, image_size=size, device="cpu")
    torch.testing.assert_close(theirs(images), expected, atol=0, rtol=0)
    assert theirs.model.record == source.record

    plain = build_fgdi("fgdi_tiny", 5, num_domains=2, pretrained=False)
    plain.load_state_dict(torch.load(path, weights_only=True)["state_dict"])  # strict
    torch.testing.assert_close(_features(plain, images), expected, atol=0, rtol=0)

    capsys.readouterr()
    ours = FeatureExtractor(path, device="cpu")
    assert "records no config: its model as its weights record it (fgdi_tiny at 256x128)" in capsys.readouterr().out
    assert (ours.cfg.data.height, ours.cfg.data.width) == size
    torch.testing.assert_close(ours(images), F.normalize(expected, dim=1))
    written = export(path, str(tmp_path / "export"), ["torchscript"])
    assert torch.jit.load(written["torchscript"])(images).shape == (2, ours(images).shape[1])


def test_another_variants_weights_are_refused_naming_both(tmp_path):
    """torchreid's extractor builds the name it is given; weights of another variant are named as such
    (from the record, or for a state dict saved before records, from the image towers' shapes)."""
    source = build_fgdi("fgdi_tiny", 3, pretrained=False)
    path = _saved_the_torchreid_way(source, tmp_path)
    other = FGDI(tiny_clip(), open_clip.get_tokenizer("ViT-B-16"), 1, 1, image_size=(64, 32), variant="fgdi")
    with pytest.raises(CheckpointError) as refused:
        torchreid.utils.load_pretrained_weights(other, path)  # what torchreid's FeatureExtractor calls
    assert str(refused.value) == (
        "the checkpoint holds fgdi_tiny weights (as its state dict records), but the model being loaded is fgdi: "
        "build fgdi_tiny instead (torchreid: FeatureExtractor(model_name='fgdi_tiny', ...), "
        "build_model('fgdi_tiny', ...))"
    )
    with pytest.raises(CheckpointError, match="holds fgdi_tiny weights .* model being loaded is fgdi:"):
        other.load_state_dict(source.state_dict())

    torch.save({"state_dict": _without_record(source.state_dict()), "epoch": 2}, path)
    with pytest.raises(CheckpointError) as refused:
        torchreid.utils.load_pretrained_weights(other, path)
    assert str(refused.value).startswith(
        "the checkpoint's image tower is a ViT of width 64 with 2 blocks and 8-pixel patches, this fgdi model's "
        "is a ViT of width 32 with 2 blocks and 8-pixel patches: the weights are another variant's"
    )


def test_a_state_dict_saved_before_records_existed_loads_as_before(tmp_path):
    source = _trained_like(build_fgdi("fgdi_tiny", 4, num_domains=2, pretrained=False))
    old = _without_record(source.state_dict())
    images = torch.randn(2, 3, *SIZE)

    strict = build_fgdi("fgdi_tiny", 4, num_domains=2, pretrained=False)
    strict.load_state_dict(old)
    torch.testing.assert_close(_features(strict, images), _features(source, images), atol=0, rtol=0)

    path = str(tmp_path / "old.pth")
    torch.save({"state_dict": old, "epoch": 1}, path)
    theirs = torchreid.utils.FeatureExtractor("fgdi_tiny", model_path=path, image_size=SIZE, device="cpu")
    torch.testing.assert_close(theirs(images), _features(source, images), atol=0, rtol=0)
    ours = build_fgdi("fgdi_tiny", 4, num_domains=2, pretrained=False)
    assert load_fgdi_checkpoint(ours, path) == []
    torch.testing.assert_close(_features(ours, images), _features(source, images), atol=0, rtol=0)
