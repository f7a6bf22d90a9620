"""torchreid's own engines, with multi-target test results, for the built-in baselines."""

import os.path as osp
import time

import torchreid

from ..utils.checkpoint import save_torchreid_checkpoint
from . import distributed, progress
from .checkpointing import finished_run
from .settings import DEFAULT_TEST, TestSettings
from .testing import MultiTargetTestMixin


class FinishedRunMixin:
    """A resumed run that is already finished (start_epoch == max_epoch) says so and only tests again.

    torchreid's `Engine.run` prints '=> Start training', trains no epoch and saves the weights again,
    as ``model.pth.tar-1`` (``self.epoch`` kept its initial 0): a checkpoint that claims one epoch
    and that ``model.resume auto`` could later continue from. Here the final test is repeated as an
    evaluation (no checkpoint written) at the run's last epoch; `resumed_from` names the checkpoint.
    """

    resumed_from = ""

    def run(self, *args, start_epoch: int = 0, max_epoch: int = 0, test_only: bool = False, **kwargs):
        finished = not test_only and 0 < max_epoch <= start_epoch
        if finished:
            print(finished_run(self.resumed_from, f"{start_epoch} of {max_epoch} epochs"))
        self.epoch = max(self.epoch, start_epoch - 1)
        return super().run(
            *args, start_epoch=start_epoch, max_epoch=max_epoch, test_only=test_only or finished, **kwargs
        )


class RunTestOptionsMixin:
    """``test.visrank`` and ``test.rerank`` in a training run as in an evaluation, as the FGDI engine has them.

    torchreid's `Engine.run` refuses ``visrank`` unless ``test_only`` (a ``ValueError`` after the data
    was loaded), and the tests it runs while training leave ``rerank`` out, so a training run's table
    would be silently not re-ranked. `run` keeps both settings and hands them to each `test` itself;
    `test` draws visrank's pictures with `rank_pictures` after any test.
    """

    _options: dict = {}

    def run(self, *args, visrank: bool = False, rerank: bool = False, **kwargs):
        self._options = {"visrank": visrank, "rerank": rerank}
        try:
            return super().run(*args, **kwargs)
        finally:
            self._options = {}

    def test(self, *args, visrank: bool = False, rerank: bool = False, **kwargs) -> float:
        visrank, rerank = visrank or self._options.get("visrank", False), rerank or self._options.get("rerank", False)
        return super().test(*args, visrank=visrank, rerank=rerank, **kwargs)


class EpochMeansMixin:
    """A line after every epoch with the epoch's mean of each loss term; torchreid's batch lines show
    the means so far, so none of them gives the epoch's."""

    _epoch_meter: torchreid.utils.MetricMeter | None = None

    def forward_backward(self, data: dict) -> dict:
        summary = super().forward_backward(data)
        if self._epoch_meter is not None:
            self._epoch_meter.update(summary)
        return summary

    def train(self, *args, **kwargs):
        self._epoch_meter, lr, started = torchreid.utils.MetricMeter(), self.get_current_lr(), time.time()
        result = super().train(*args, **kwargs)
        means = {name: meter.avg for name, meter in self._epoch_meter.meters.items()}
        self._epoch_meter = None
        print(
            progress.epoch_line(
                f"epoch {self.epoch + 1}/{self.max_epoch}", time.time() - started, means, f"lr {lr:.2e}"
            )
        )
        return result


class _NoTensorBoard:
    """What torchreid's engine writes its curves to on ranks other than 0: nothing (its `run` opens
    a TensorBoard writer in `save_dir` unless the engine has one)."""

    def add_scalar(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


class DistributedMixin:
    """Under torchrun: a fresh shuffle every epoch, each step's loss terms and accuracy averaged over
    the ranks (so torchreid's batch lines, its TensorBoard curves and the epoch means describe the
    whole batch), and rank 0 alone tests, saves and writes TensorBoard (the others wait).

    Single-process runs are unchanged. Put it before the torchreid engine in the bases.
    """

    def run(self, *args, **kwargs):
        if not distributed.is_main() and self.writer is None:
            self.writer = _NoTensorBoard()
        return super().run(*args, **kwargs)

    def forward_backward(self, data: dict) -> dict:
        return distributed.mean_over_ranks(super().forward_backward(data), len(data["pid"]))

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

    def __init__(self, *args, test: TestSettings = DEFAULT_TEST, config_text: str = "", **kwargs):
        """torchreid's engine arguments, plus the ``test`` settings and the run's config (``cfg.dump()``),
        which checkpoints record with the data manager's training-list fingerprint so that a resume
        can be checked."""
        super().__init__(*args, **kwargs)
        self.test_settings, self.config_text = test, config_text
        self.data_fingerprint = getattr(self.datamanager, "fingerprint", lambda: None)()

    def save_model(self, epoch: int, rank1: float, save_dir: str, is_best: bool = False) -> None:
        """torchreid's checkpoint (same file, same keys), plus the run's config and data fingerprint."""
        if distributed.is_main():
            for name in self.get_model_names():
                state = {
                    "state_dict": self._models[name].state_dict(),
                    "epoch": epoch + 1,
                    "rank1": rank1,
                    "optimizer": self._optims[name].state_dict(),
                    "scheduler": self._scheds[name].state_dict(),
                    **({"config": self.config_text} if self.config_text else {}),
                    **({"data": self.data_fingerprint} if self.data_fingerprint else {}),
                }
                save_torchreid_checkpoint(state, osp.join(save_dir, name), is_best=is_best)
        distributed.barrier()


class ImageSoftmaxEngine(
    FinishedRunMixin,
    RunTestOptionsMixin,
    EpochMeansMixin,
    DistributedMixin,
    MultiTargetTestMixin,
    torchreid.engine.ImageSoftmaxEngine,
):
    """torchreid's softmax (ID loss) engine; see `MultiTargetTestMixin` for what `test` adds."""


class ImageTripletEngine(
    FinishedRunMixin,
    RunTestOptionsMixin,
    EpochMeansMixin,
    DistributedMixin,
    MultiTargetTestMixin,
    torchreid.engine.ImageTripletEngine,
):
    """torchreid's triplet + ID loss engine; see `MultiTargetTestMixin` for what `test` adds."""
