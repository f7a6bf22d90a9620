"""The registered FGDI models: every backbone through torchreid's build_model, weights, ResNet towers."""

import contextlib
import io
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torchreid
from huggingface_hub import constants

from tests.test_fgdi_engine import CONFIG
from torchreid_fgdi.cli import train
from torchreid_fgdi.cli.refusals import DEBUG_VARIABLE
from torchreid_fgdi.config import RunSettings, load_config
from torchreid_fgdi.models import (
    FGDI,
    VARIANTS,
    WeightsUnavailableError,
    build_fgdi,
    clip_weights,
    create_clip,
    load_fgdi_checkpoint,
)
from torchreid_fgdi.models.hub import sha256sum

# (x12 width + xproj width) of each registered backbone: the eval feature's size.
FEATURE_DIMS = {
    "fgdi": 768 + 512,
    "fgdi_vit_b16": 768 + 512,
    "fgdi_vit_b32": 768 + 512,
    "fgdi_vit_l14": 1024 + 768,
    "fgdi_rn50": 2048 + 1024,
    "fgdi_rn101": 2048 + 512,
    "fgdi_tiny": 64 + 64,
}
TINY_RN = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def test_every_name_is_listed_and_builds_through_torchreid():
    listing = io.StringIO()
    with contextlib.redirect_stdout(listing):
        torchreid.models.show_avai_models()
    # each backbone twice: fgdi* and clip_reid* build the same network (only their stage tables differ)
    twins = {name.replace("fgdi", "clip_reid", 1): name for name in FEATURE_DIMS}
    assert set(VARIANTS) == set(FEATURE_DIMS) | set(twins)
    assert all(VARIANTS[twin]["clip"] == VARIANTS[name]["clip"] for twin, name in twins.items())
    for name, dim in FEATURE_DIMS.items():
        assert repr(name) in listing.getvalue()
        model = torchreid.models.build_model(name, num_classes=3, num_domains=2, pretrained=False).eval()
        size = VARIANTS[name]["image_size"]
        with torch.no_grad():
            feature = model(torch.randn(1, 3, *size))
        assert feature.shape == (1, dim) and feature.dtype == torch.float32, name
        assert model.promptlearner.dmctx.shape[0] == 2 and model.classifier.out_features == 3
        del model


def test_vit_b16_trains_at_224_on_cpu():
    model = torchreid.models.build_model("fgdi", 4, loss="triplet", num_domains=2, pretrained=False).train()
    scores, feats = model(torch.randn(2, 3, 224, 224))
    assert [s.shape for s in scores] == [(2, 4), (2, 4)]
    assert [f.shape for f in feats] == [(2, 768), (2, 768), (2, 512)]
    loss = sum(torch.nn.functional.cross_entropy(s, torch.tensor([0, 3])) for s in scores)
    loss = loss + sum(f.pow(2).mean() for f in feats)
    loss.backward()
    visual = model.image_encoder.visual
    assert visual.conv1.weight.grad.abs().sum() > 0
    assert visual.transformer.resblocks[-1].mlp.c_fc.weight.grad.abs().sum() > 0
    assert torch.isfinite(loss)


def test_builder_takes_its_arguments_from_the_config():
    cfg = load_config(
        opts=["model.name", "fgdi_tiny", "data.height", "48", "data.width", "24", "fgdi.stride", "6"]
        + ["fgdi.neck_feat", "after", "fgdi.grl_scale", "0.5"]
    )
    model = torchreid.models.build_model(cfg.model.name, 5, **RunSettings.from_config(cfg).model_kwargs(num_domains=3))
    assert model.image_encoder.grid_size == ((48 - 8) // 6 + 1, (24 - 8) // 6 + 1)
    assert model.neck_feat == "after" and model.grl.scale == 0.5
    assert model.promptlearner.dmctx.shape[0] == 3 and model.classifier.out_features == 5
    baseline = RunSettings.from_config(load_config(opts=["model.name", "osnet_x0_25"])).model_kwargs(num_domains=3)
    assert "num_domains" not in baseline


def _tiny_rn_fgdi(image_size=(64, 32)):
    clip, tokenizer = create_clip(TINY_RN)
    return FGDI(clip, tokenizer, num_classes=5, num_domains=2, image_size=image_size)


def test_resnet_tower_runs_layer4_at_stride_1_and_resizes_the_attention_pool():
    model = _tiny_rn_fgdi()
    assert model.image_encoder.grid_size == (4, 2)
    assert model.image_encoder.visual.attnpool.positional_embedding.shape == (1 + 4 * 2, 256)
    scores, (x3, x4, xproj) = model.train()(torch.randn(4, 3, 64, 32))
    assert x3.shape == (4, 128) and x4.shape == (4, 256) and xproj.shape == (4, 32)
    assert [s.shape for s in scores] == [(4, 5), (4, 5)]
    visual = model.image_encoder.visual
    maps = visual.layer4(visual.layer3(visual.layer2(visual.layer1(visual.stem(torch.randn(1, 3, 64, 32))))))
    assert maps.shape[-2:] == (4, 2)  # 16x downsampling: layer4 no longer halves
    model.eval()
    images = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        feature = model(images)
        _, x4, xproj = model.image_encoder(images)
    torch.testing.assert_close(feature, torch.cat([x4, xproj], 1))  # neck_feat 'before': layer4 pooled + attnpool
    with pytest.raises(ValueError, match="stride=3 applies to ViT patches only"):
        build_fgdi("fgdi_rn50", 2, pretrained=False, stride=3)


@pytest.mark.parametrize("family", ["vit", "resnet"])
def test_bfloat16_models_keep_bfloat16(family):
    if family == "vit":
        model = build_fgdi("fgdi_tiny", 4, num_domains=2, pretrained=False)
    else:
        model = _tiny_rn_fgdi()
    model = model.to(torch.bfloat16).eval()
    with torch.no_grad():
        feature = model(torch.randn(2, 3, 64, 32, dtype=torch.bfloat16))
        text = model.text_features(torch.tensor([0, 1]), torch.tensor([1, 0]))
    assert feature.dtype == text.dtype == torch.bfloat16
    assert torch.isfinite(feature.float()).all() and torch.isfinite(text.float()).all()


def test_eval_feature_is_the_concat_of_x12_and_xproj_before_or_after_the_bnnecks():
    model = build_fgdi("fgdi_tiny", 4, num_domains=2, pretrained=False)
    model.train()(torch.randn(8, 3, 64, 32))  # move the BN statistics away from identity
    model.eval()
    images = torch.randn(3, 3, 64, 32)
    with torch.no_grad():
        _, x12, xproj = model.image_encoder(images)
        torch.testing.assert_close(model(images), torch.cat([x12, xproj], 1))
        model.neck_feat = "after"
        after = torch.cat([model.bottleneck(x12), model.bottleneck_proj(xproj)], 1)
        torch.testing.assert_close(model(images), after)
    assert not torch.allclose(after, torch.cat([x12, xproj], 1))


def test_a_vit_runs_at_any_input_size_with_its_position_embedding_resampled():
    built_small = build_fgdi("fgdi_tiny", 4, pretrained=False).eval()  # 64 x 32: an 8 x 4 grid
    built_large = build_fgdi("fgdi_tiny", 4, pretrained=False, image_size=(128, 64)).eval()
    load_fgdi_checkpoint(built_large, built_small.state_dict(), ckpt_grid=(8, 4))  # resampled once, at load
    images = torch.randn(2, 3, 128, 64)
    with torch.no_grad():
        torch.testing.assert_close(built_small(images), built_large(images))


def test_a_resnet_runs_at_any_input_size_with_its_attention_pool_embedding_resampled():
    built_small = build_fgdi("fgdi_rn50", 4, pretrained=False, image_size=(64, 32)).eval()  # a 4 x 2 grid
    built_large = build_fgdi("fgdi_rn50", 4, pretrained=False, image_size=(128, 64)).eval()
    load_fgdi_checkpoint(built_large, built_small.state_dict(), ckpt_grid=(4, 2))
    images = torch.randn(2, 3, 128, 64)
    with torch.no_grad():
        torch.testing.assert_close(built_small(images), built_large(images))


def test_an_unreachable_tag_says_how_to_pass_a_local_file(tmp_path, monkeypatch):
    probed = []
    monkeypatch.setattr(clip_weights, "host_reachable", lambda url, *args, **kwargs: probed.append(url) or False)
    with pytest.raises(WeightsUnavailableError, match="Pass a local file instead.*fgdi.clip_weights"):
        torchreid.models.build_model("fgdi_rn50", 3, pretrained="openai", cache_dir=str(tmp_path))
    assert probed == [constants.ENDPOINT]  # open_clip fetches OpenAI's RN50 from the Hugging Face hub
    with pytest.raises(ValueError, match="neither a file nor an open_clip tag for ViT-B-16.*laion2b"):
        build_fgdi("fgdi", 3, pretrained="no-such-tag")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_fgdi("fgdi", 3, pretrained=str(tmp_path / "ViT-B-16.pt"))


def _same_parameters(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].float(), sb[k].float()) for k in sa)


def test_weights_load_from_a_state_dict_an_open_clip_checkpoint_and_an_openai_jit_archive(tmp_path, monkeypatch):
    from torchreid_fgdi.models.variants import TINY_CLIP

    source, _ = create_clip(TINY_CLIP)
    source = source.half().float()  # OpenAI ships fp16: compare on fp16-representable values
    torch.save(source.state_dict(), tmp_path / "plain.pt")
    torch.save({"state_dict": {"module." + k: v for k, v in source.state_dict().items()}}, tmp_path / "oc.pt")
    images, tokens = torch.randn(1, 3, 64, 64), torch.zeros(1, 77, dtype=torch.long)
    traced = torch.jit.trace(source.half().eval(), (images.half(), tokens), check_trace=False)
    traced.save(str(tmp_path / "openai.pt"))
    source.float()
    with pytest.raises(ValueError, match="TorchScript archive that is not one of OpenAI's published CLIP files"):
        create_clip(TINY_CLIP, str(tmp_path / "openai.pt"))  # its code would run at load time
    monkeypatch.setattr(clip_weights, "TRUSTED_TORCHSCRIPT", {sha256sum(str(tmp_path / "openai.pt"))})
    for name in ("plain.pt", "oc.pt", "openai.pt"):
        loaded, _ = create_clip(TINY_CLIP, str(tmp_path / name))
        assert _same_parameters(loaded, source), name
    model = torchreid.models.build_model("fgdi_tiny", 3, pretrained=str(tmp_path / "openai.pt"))
    assert torch.equal(model.text_encoder.text_projection, source.text_projection)
    with pytest.raises(ValueError, match="does not hold ViT-B-32 weights"):
        build_fgdi("fgdi_vit_b32", 3, pretrained=str(tmp_path / "plain.pt"))


class _OpensAFile:
    """Unpickling it creates the file `path`: code a pickle runs as it loads."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def _pickled(payload: dict, path: Path) -> None:
    with open(path, "wb") as f:
        pickle.dump(payload, f)  # Python's protocol, which PyTorch's safe loader stops at before any name


@pytest.mark.parametrize(
    "save,refusal",
    [
        (
            torch.save,
            r"holds Python objects beyond tensors and plain data \(it names \w+\.open\), which the safe loader "
            r"refuses: loading them could run code; re-save its state_dict",
        ),
        (
            _pickled,
            r"is not a readable PyTorch file \(truncated, damaged or not a checkpoint: PyTorch's safe loader: "
            r"Unsupported operand \d+\); ",
        ),
    ],
    ids=["torch.save", "pickle.dump"],
)
def test_weights_whose_pickle_runs_code_are_refused_in_one_line_without_running_it(
    tiny_root, tmp_path, monkeypatch, capsys, save, refusal
):
    monkeypatch.delenv(DEBUG_VARIABLE, raising=False)
    weights, marker = tmp_path / "clip.pt", tmp_path / "ran"
    save({"state_dict": {}, "payload": _OpensAFile(marker)}, weights)
    pickle.loads(pickle.dumps(_OpensAFile(tmp_path / "proof")))
    assert (tmp_path / "proof").exists()  # the payload is live
    argv = ["--config-file", CONFIG, "--root", tiny_root, "data.save_dir", str(tmp_path / "run")]
    assert train.main([*argv, "fgdi.clip_weights", str(weights)]) == 1
    err = capsys.readouterr().err  # torch's advice to load it with weights_only=False (running it) is left out
    assert err.count("\n") == 1 and re.match(f"error: checkpoint {re.escape(str(weights))} {refusal}", err)
    assert "weights_only" not in err and not marker.exists()


def test_quick_gelu_follows_the_weights():
    from open_clip.transformer import QuickGELU

    def activation(model):
        return type(model.text_encoder.transformer.resblocks[0].mlp.gelu)

    assert activation(build_fgdi("fgdi_tiny", 2, pretrained=False)) is QuickGELU
    assert activation(build_fgdi("fgdi_tiny", 2, pretrained=False, quick_gelu=False)) is torch.nn.GELU
    assert np.isclose(build_fgdi("fgdi_tiny", 2, pretrained=False, grl_scale=0.3).grl.scale, 0.3)
