"""``torchreid-fgdi`` for a torchrun test, with what each rank measures kept for the test to check.

Run as torchrun's script instead of ``-m torchreid_fgdi``, with the same arguments. With
``RANK_PROBE_DIR`` set, each rank appends to ``<dir>/rank<N>.jsonl`` the values and weight it hands
to `distributed.mean_over_ranks` at every step (its own share of the batch), and a marker after
every epoch, so a test can compute the whole batch's numbers itself. With ``RANK_PROBE_FAIL`` set to
``STAGE:BATCH``, rank 1 alone refuses at that image batch, as a rank's own error would. With
``RANK_PROBE_PRETRAIN`` set to a cache folder, ``fgdi.clip_weights synthetic-captions`` is a
one-epoch tiny CLIP pretrained there on first use, which rank 0 asks for a second after rank 1.
"""

import json
import os
import sys
import time

from torchreid_fgdi.cli.train import main
from torchreid_fgdi.engine import ImageFGDIEngine, distributed
from torchreid_fgdi.engine.hooks import StepLog
from torchreid_fgdi.errors import FGDIError
from torchreid_fgdi.models import clip_weights
from torchreid_fgdi.synthetic import pretrain
from torchreid_fgdi.synthetic.captions import CorpusSize

RANK = int(os.environ.get("RANK", "0"))


def _record(entry: dict) -> None:
    with open(os.path.join(os.environ["RANK_PROBE_DIR"], f"rank{RANK}.jsonl"), "a") as f:
        f.write(json.dumps(entry) + "\n")


def _probe_values() -> None:
    reduce, after_epoch = distributed.mean_over_ranks, StepLog.after_epoch

    def recorded_reduce(values, weight):
        _record({"values": dict(values), "weight": weight})
        return reduce(values, weight)

    def recorded_after_epoch(self, engine, stage):
        _record({"epoch": f"{stage.name} {engine.stage_epoch}"})
        return after_epoch(self, engine, stage)

    distributed.mean_over_ranks = recorded_reduce
    StepLog.after_epoch = recorded_after_epoch


def _fail_on_rank1(stage: str, batch: int) -> None:
    forward_backward = ImageFGDIEngine.forward_backward

    def failing(self, data):
        if self.stage == stage and self.batch_idx + 1 == batch:
            raise FGDIError(f"rank 1's own failure at {stage} batch {batch}")
        return forward_backward(self, data)

    ImageFGDIEngine.forward_backward = failing


def _tiny_pretraining(root: str) -> None:
    """The made weights as a quick pretraining into `root`; rank 0 comes late, so a rank that asks
    first does not decide who pretrains."""
    settings = pretrain.PretrainSettings(
        corpus=CorpusSize(people=120, styles=4), heldout=CorpusSize(people=20, styles=2, images_per_person=1), epochs=1
    )

    def made() -> str:
        if RANK == 0:
            time.sleep(1)
        return pretrain.pretrained_checkpoint(settings, root)

    clip_weights._MADE_WEIGHTS[pretrain.TAG] = made


if __name__ == "__main__":
    if os.environ.get("RANK_PROBE_PRETRAIN"):
        _tiny_pretraining(os.environ["RANK_PROBE_PRETRAIN"])
    if os.environ.get("RANK_PROBE_DIR"):
        _probe_values()
    if os.environ.get("RANK_PROBE_FAIL") and RANK == 1:
        stage, batch = os.environ["RANK_PROBE_FAIL"].split(":")
        _fail_on_rank1(stage, int(batch))
    sys.exit(main())
