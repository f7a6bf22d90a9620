"""torchreid's own engines, with multi-target test results, for the built-in baselines."""

import torchreid

from .testing import MultiTargetTestMixin


class ImageSoftmaxEngine(MultiTargetTestMixin, torchreid.engine.ImageSoftmaxEngine):
    """torchreid's softmax (ID loss) engine; see `MultiTargetTestMixin` for what `test` adds."""


class ImageTripletEngine(MultiTargetTestMixin, torchreid.engine.ImageTripletEngine):
    """torchreid's triplet + ID loss engine; see `MultiTargetTestMixin` for what `test` adds."""
