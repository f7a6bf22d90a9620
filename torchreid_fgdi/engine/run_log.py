"""Everything a run measures, per stage: TensorBoard scalars plus ``metrics.jsonl`` beside them.

TensorBoard is for watching a run; the JSON lines are for reading it back (the end-of-run plots,
scripts, tests) without parsing event files. Only the main process writes. A line the disk cannot
take (full, or over ``ulimit -f``) does not stop the run, as for ``train.log``: the engine ends the
run with `check_complete`'s one line instead.
"""

from __future__ import annotations

import json
import os
import os.path as osp
from typing import TYPE_CHECKING

from ..utils import atomic
from . import distributed

if TYPE_CHECKING:  # TensorBoard is imported only by the runs that write to it
    from torch.utils.tensorboard import SummaryWriter

METRICS_FILE = "metrics.jsonl"


class RunLog:
    """``log(group, values, step)`` writes ``<group>/<name>`` scalars at `step` and one JSON line
    (TensorBoard only without a `save_dir`)."""

    def __init__(self, save_dir: str, writer: SummaryWriter | None = None):
        self.path = osp.join(save_dir, METRICS_FILE) if save_dir else None
        self.writer = writer
        self.failed: OSError | None = None  # the first line that could not be written; none is written after it

    def start(self) -> None:
        """Forgets what earlier runs in this folder logged (a resumed run keeps and appends)."""
        if self.path and distributed.is_main() and osp.isfile(self.path):
            os.remove(self.path)

    def log(self, group: str, values: dict[str, float], step: int) -> None:
        if not distributed.is_main():
            return
        values = {name: float(value) for name, value in values.items()}
        if self.writer is not None:
            for name, value in values.items():
                self.writer.add_scalar(f"{group}/{name}", value, step)
        if self.path is None or self.failed is not None:
            return
        try:
            self._append(json.dumps({"group": group, "step": step, **values}))
        except OSError as err:
            self.failed = err

    def _append(self, line: str) -> None:
        os.makedirs(osp.dirname(self.path) or ".", exist_ok=True)
        cut = False
        if osp.isfile(self.path) and osp.getsize(self.path):
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                cut = f.read(1) != b"\n"  # a run killed mid-line: keep the new line apart
        with open(self.path, "a") as f:
            f.write(("\n" if cut else "") + line + "\n")

    def check_complete(self) -> None:
        """Raises `WriteError` if a line could not be written: at the end of a run, after its results."""
        if self.failed is not None:
            missing = "the log misses its lines from then on (train.log has the same numbers)"
            raise atomic.incomplete_log(self.path, self.failed, missing) from self.failed


def read_metrics(save_dir: str) -> list[dict]:
    """The JSON lines of a run, oldest first; a line cut short by a killed run is left out, and a
    resumed run appends the epochs it repeats (`latest` keeps the last of each)."""
    path = osp.join(save_dir, METRICS_FILE)
    if not osp.isfile(path):
        return []
    rows = []
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def latest(rows: list[dict], group: str) -> list[dict]:
    """The rows of `group`, one per step (the last written), in step order."""
    by_step = {row["step"]: row for row in rows if row["group"] == group}
    return [by_step[step] for step in sorted(by_step)]
