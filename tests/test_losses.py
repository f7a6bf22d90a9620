"""The losses against the authors' values on the same inputs (shared/fixtures), and their directions."""

import torch

from torchreid_fgdi.engine.losses import domain_guidance, id_loss, supcon, triplet_loss

from .conftest import needs_fixtures


@needs_fixtures
def test_losses_reproduce_the_authors_values(authors):
    x = authors.expected["loss_inputs"]
    id_tri = id_loss(x["scores"], x["target"]) + triplet_loss(x["feats"], x["target"])
    torch.testing.assert_close(id_tri, authors.expected["loss_id_tri"], atol=1e-5, rtol=1e-5)
    apn = domain_guidance(x["a"], x["p"], x["n"], direction="authors")
    torch.testing.assert_close(apn, authors.expected["apn_authors"], atol=1e-6, rtol=1e-6)
    beta = x["beta"]
    full = id_tri + (1 - beta) * id_loss([x["i2t"]], x["target"]) + beta * apn
    torch.testing.assert_close(full, authors.expected["loss_full_authors"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(supcon(x["a"], x["p"], x["target"], x["target"]), authors.expected["supcon_a_p"])


def test_paper_direction_pulls_toward_the_invariant_prompt():
    image = torch.randn(6, 8, requires_grad=True)
    invariant, relevant = torch.randn(6, 8), torch.randn(6, 8)
    for direction, sign in (("paper", 1), ("authors", -1)):
        image.grad = None
        domain_guidance(image, invariant, relevant, direction).backward()
        with torch.no_grad():
            moved = image - 0.1 * image.grad
            before = torch.cosine_similarity(image, invariant).mean()
            after = torch.cosine_similarity(moved, invariant).mean()
        assert sign * (after - before) > 0, direction
