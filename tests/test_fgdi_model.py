"""The assembled CLIP-FGDI network: authors' checkpoints, eval features, where gradients flow."""

import open_clip
import torch

from torchreid_fgdi.models import FGDI, from_authors_state_dict, to_authors_state_dict
from torchreid_fgdi.models.heads import GradientReversal

from .conftest import needs_fixtures, tiny_clip


def _tiny_fgdi(**kwargs) -> FGDI:
    tokenizer = open_clip.get_tokenizer("ViT-B-16")
    return FGDI(tiny_clip(), tokenizer, num_classes=6, num_domains=3, image_size=(32, 16), **kwargs)


@needs_fixtures
def test_authors_checkpoint_loads_strictly_and_gives_their_features(authors):
    images, _, _ = authors.inputs
    model = FGDI(open_clip.create_model("ViT-B-16-quickgelu"), open_clip.get_tokenizer("ViT-B-16"), 10, 4)
    model.load_state_dict(from_authors_state_dict(authors.state))  # strict
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(images), authors.expected["feat"], atol=1e-4, rtol=1e-4)
        model.neck_feat = "after"
        torch.testing.assert_close(model(images), authors.expected["feat_after"], atol=1e-4, rtol=1e-4)
    back = to_authors_state_dict(model.state_dict())
    assert back.keys() == authors.state.keys()
    assert all(torch.equal(back[k], authors.state[k]) for k in authors.state)


def test_gradient_reversal_flips_and_scales():
    x = torch.randn(4, 5, requires_grad=True)
    (GradientReversal(0.1)(x) * 3).sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, -0.3))


def test_domain_prompts_leave_identity_vectors_without_gradient():
    model = _tiny_fgdi().train()
    pids, dsetids = torch.tensor([0, 3, 5]), torch.tensor([0, 1, 2])
    model.text_features(pids, dsetids).sum().backward()
    assert model.promptlearner.clsctx.grad is None
    assert model.promptlearner.dmctx.grad[[0, 1, 2]].abs().sum() > 0
    model.zero_grad()
    model.domain_logits(model.text_features(pids), adversarial=True).sum().backward()
    grad = model.promptlearner.clsctx.grad
    assert grad[pids].abs().sum() > 0 and grad[[1, 2, 4]].abs().sum() == 0
    assert model.dc.fc1.weight.grad is None


def test_train_and_eval_outputs():
    model = _tiny_fgdi()
    scores, feats = model.train()(torch.randn(4, 3, 32, 16))
    assert [s.shape for s in scores] == [(4, 6), (4, 6)]
    assert [f.shape for f in feats] == [(4, 32), (4, 32), (4, 16)]
    model.eval()
    x12_xproj = model(torch.randn(2, 3, 32, 16))
    assert x12_xproj.shape == (2, 48)
    assert not model.bottleneck.bias.requires_grad
