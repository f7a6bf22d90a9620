"""torchreid's own engines, with multi-target test results, for the built-in baselines."""

import torchreid

from . import distributed
from .testing import MultiTargetTestMixin


class DistributedMixin:
    """Under torchrun: a fresh shuffle every epoch, and rank 0 alone tests and saves (the others wait).

    Single-process runs are unchanged. Put it before the torchreid engine in the bases.
    """

    def train(self, *args, **kwargs):
        if hasattr(self.train_loader.sampler, "set_epoch"):
            self.train_loader.sampler.set_epoch(self.epoch)
        return super().train(*args, **kwargs)

    def test(self, *args, **kwargs):
        rank1 = 0.0
        if distributed.is_main():
            # The bare model: a DDP forward would wait for the other ranks' buffer broadcast.
            wrapped, self.model = self.model, getattr(self.model, "module", self.model)
            try:
                rank1 = super().test(*args, **kwargs)
            finally:
                self.model = wrapped
        distributed.barrier()
        return rank1

    def save_model(self, *args, **kwargs):
        if distributed.is_main():
            super().save_model(*args, **kwargs)
        distributed.barrier()


class ImageSoftmaxEngine(DistributedMixin, MultiTargetTestMixin, torchreid.engine.ImageSoftmaxEngine):
    """torchreid's softmax (ID loss) engine; see `MultiTargetTestMixin` for what `test` adds."""


class ImageTripletEngine(DistributedMixin, MultiTargetTestMixin, torchreid.engine.ImageTripletEngine):
    """torchreid's triplet + ID loss engine; see `MultiTargetTestMixin` for what `test` adds."""
