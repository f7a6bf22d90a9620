"""The training step's speed and memory switches change how it runs, never what it computes."""

from types import SimpleNamespace

import pytest
import torch

from torchreid_fgdi.config import load_config
from torchreid_fgdi.engine import ImageFGDIEngine
from torchreid_fgdi.engine.settings import FGDISettings
from torchreid_fgdi.engine.stages import STAGE_NAMES
from torchreid_fgdi.models import build_fgdi, image_encoder

NUM_IDS, NUM_DOMAINS = 8, 2


class _Loader(SimpleNamespace):
    def __len__(self) -> int:
        return 1


def _stage3(*opts: str) -> ImageFGDIEngine:
    """A tiny engine in stage 3, always with the same initial weights."""
    items = [(None, pid, 0, pid % NUM_DOMAINS) for pid in range(NUM_IDS)]
    datamanager = SimpleNamespace(
        train_loader=_Loader(dataset=SimpleNamespace(train=items)), test_loader={}, num_train_pids=NUM_IDS
    )
    torch.manual_seed(0)
    model = build_fgdi("fgdi_tiny", NUM_IDS, num_domains=NUM_DOMAINS, pretrained=False)
    settings = FGDISettings.from_node(load_config(opts=list(opts)).fgdi, STAGE_NAMES)
    engine = ImageFGDIEngine(datamanager, model, settings=settings, use_gpu=False)
    engine.enter("stage3")
    engine.model.train()
    return engine


def _batch() -> dict:
    generator = torch.Generator().manual_seed(1)
    pids = torch.arange(4).repeat_interleave(4)
    return {"img": torch.randn(16, 3, 64, 32, generator=generator), "pid": pids, "dsetid": pids % NUM_DOMAINS}


def _gradients(engine: ImageFGDIEngine) -> dict[str, torch.Tensor]:
    """The gradients of one stage-3 step (the step is applied; its gradients stay on the parameters)."""
    engine.forward_backward(_batch())
    return {name: param.grad.clone() for name, param in engine.model.named_parameters() if param.grad is not None}


def _kept_for_backward(engine: ImageFGDIEngine) -> int:
    """Bytes a training forward keeps for backward (checkpointed blocks keep theirs to themselves)."""
    kept = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        kept.append(tensor.numel() * tensor.element_size())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        engine.model(_batch()["img"])
    return sum(kept)


def test_grad_checkpointing_switches_on_open_clips_checkpointing_and_keeps_the_gradients():
    plain, checkpointed = _stage3(), _stage3("fgdi.grad_checkpointing", "True")
    assert checkpointed.model.image_encoder.visual.transformer.grad_checkpointing
    assert not plain.model.image_encoder.visual.transformer.grad_checkpointing
    assert _kept_for_backward(checkpointed) < _kept_for_backward(plain) / 2  # the blocks' activations are not kept
    want, got = _gradients(plain), _gradients(checkpointed)
    assert got.keys() == want.keys() and any(k.startswith("image_encoder.visual.transformer.") for k in got)
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-6, rtol=1e-5, msg=name)


def test_stage3_gives_frozen_towers_no_gradients():
    engine = _stage3()
    got = _gradients(engine)
    assert got and all(name.startswith(("image_encoder.", "bottleneck", "classifier")) for name in got)
    frozen = [p for n, p in engine.model.named_parameters() if n.startswith(("text_encoder.", "promptlearner.", "dc"))]
    assert frozen and not any(p.requires_grad or p.grad is not None for p in frozen)


def test_grad_checkpointing_steps_to_the_same_loss_and_weights():
    plain, checkpointed = _stage3(), _stage3("fgdi.grad_checkpointing", "True")
    for _ in range(2):  # the second step reads the Adam state the first one wrote
        want, got = plain.forward_backward(_batch()), checkpointed.forward_backward(_batch())
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-6)
    start, stepped = _stage3().model.state_dict(), plain.model.state_dict()
    for name, value in checkpointed.model.state_dict().items():
        torch.testing.assert_close(value, stepped[name], atol=1e-6, rtol=1e-5, msg=name)
    assert not torch.equal(stepped["image_encoder.visual.conv1.weight"], start["image_encoder.visual.conv1.weight"])


def _whole_last_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs the tower's last block over every token, as open_clip (and the authors) do."""
    monkeypatch.setattr(image_encoder, "_reads_class_token_alone", lambda block: False)


def test_the_last_block_runs_at_the_class_token_alone_with_the_same_features_and_gradients(monkeypatch):
    short, whole = _stage3(), _stage3()
    images = _batch()["img"]
    short_kept, short_features = _kept_for_backward(short), short.model.image_encoder(images)
    short_grads = _gradients(short)
    _whole_last_block(monkeypatch)
    assert _kept_for_backward(short) > short_kept  # the short path was taken: it keeps less for backward
    want_features, want_grads = whole.model.image_encoder(images), _gradients(whole)
    for got, want in zip(short_features, want_features):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    assert short_grads.keys() == want_grads.keys()
    for name in want_grads:
        torch.testing.assert_close(short_grads[name], want_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_adam_is_fused_on_cpu_and_steps_as_torchs_default_adam():
    fused, default = _stage3(), _stage3()
    assert all(opt.defaults["fused"] for opt in fused.optimizers.values())
    groups = [{k: v for k, v in g.items() if k != "fused"} for g in default.optimizers["image"].param_groups]
    default.optimizers["image"] = torch.optim.Adam(groups)
    assert not default.optimizers["image"].defaults["fused"]
    for _ in range(2):  # the second step reads the Adam state the first one wrote
        fused.forward_backward(_batch()), default.forward_backward(_batch())
    start, want = _stage3().model.state_dict(), default.model.state_dict()
    for name, value in fused.model.state_dict().items():
        torch.testing.assert_close(value, want[name], atol=1e-6, rtol=1e-5, msg=name)
    assert not torch.equal(want["image_encoder.visual.conv1.weight"], start["image_encoder.visual.conv1.weight"])
