"""The authors' data recipe and training flags, where our first version differed from their code."""

import torch

from tests.fake_datasets import make_cuhksysu
from tests.test_fgdi_engine import _engine
from torchreid_fgdi.data.public import CUHKSYSU


def test_cuhksysu_combineall_adds_no_identity(tmp_path):
    expected = make_cuhksysu(str(tmp_path))
    train = CUHKSYSU(root=str(tmp_path), combineall=True, verbose=False).train
    assert len(train) == expected["train_imgs"] and len({pid for _, pid, *_ in train}) == expected["train_ids"]
    assert len({path for path, *_ in train}) == len(train)  # no image twice under two labels


def test_torchreids_loop_leaves_frozen_parameters_frozen_and_without_gradients(tiny_root):
    engine = _engine(tiny_root)
    engine._enter("stage1")
    engine.epoch, engine.max_epoch = 0, 1
    engine.train(print_freq=1000)  # torchreid's Engine.train, which opens every layer by default
    trainable = set(engine._params("stage1"))
    for name, param in engine.model.named_parameters():
        assert param.requires_grad == (name in trainable), name
        if name not in trainable:
            assert param.grad is None, name
    assert any(n.startswith("text_encoder.") for n, _ in engine.model.named_parameters())
    assert not any(n.startswith(("text_encoder.", "promptlearner.")) for n in trainable)
    assert torch.isfinite(engine.model.classifier.weight.grad).all()
