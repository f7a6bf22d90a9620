"""A tiny CLIP pretrained on captioned synthetic people with open_clip's own trainer.

CLIP-FGDI's claim rests on what CLIP learned from image-text pairs. Real CLIP weights cannot be
downloaded everywhere, so the synthetic benchmark gets its own: `fgdi_tiny`'s CLIP (models.
variants.TINY_CLIP), trained by ``open_clip_train`` on a corpus of drawn people with captions
(data.synthetic.captions) whose identities and styles are not the benchmark's. The checkpoint
is an ordinary open_clip one; the model loads it through the same ``pretrained=<file>`` path as
OpenAI's weights. The default settings' checkpoint ships in the package (``weights/``, fp16, with
its record) so that no run waits for the pretraining; other settings' is made on first use, cached
under a key of everything it depends on. The zero-shot attribute probe (`probe`) says whether it
linked words to images.

In a config, ``fgdi.clip_weights: synthetic-captions`` names it; ``torchreid-fgdi-pretrain``
(`cli.pretrain`) makes it ahead of time. Pretraining needs the ``pretrain`` extra
(``open_clip_torch[training]``); a cached checkpoint does not.

The console shows where the pretraining stands (a bar over the epochs with the loss and ETA on
a terminal, a line per epoch elsewhere) and the probe; open_clip's own log (its settings, every
logged step, the warning that the model it builds for the probe starts random) goes whole to
``open_clip_tiny.log`` beside the checkpoint, moved there when the pretraining ends or fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import os.path as osp
import re
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import open_clip
import torch

from ..models.hub import sha256sum
from ..models.variants import TINY_CLIP
from ..utils import atomic, extras, progress, rng
from ..utils.cache import cache_root
from ..utils.checkpoint import check_finite, read_checkpoint, write_checkpoint
from .captions import CorpusSize, write_corpus
from .probe import attribute_accuracy, format_accuracy

TAG = "synthetic-captions"  # the fgdi.clip_weights value that means this checkpoint
MODEL_NAME = "fgdi-tiny-clip"  # its open_clip config name
CHECKPOINT = "open_clip_tiny.pt"
RECORD = "open_clip_tiny.json"  # the checkpoint's size, sha256 and zero-shot probe, written after it
LOG = "open_clip_tiny.log"  # open_clip's log of the pretraining
LOG_EVERY = 5  # steps between open_clip_train's log lines, each a step of the progress shown
# What makes open_clip_train train distributed (open_clip_train.distributed.is_using_distributed).
LAUNCHER_SIZES = ("WORLD_SIZE", "SLURM_NTASKS")
# open_clip_train ships in open_clip's wheel; what it imports comes with open_clip_torch[training].
TRAINER_MODULES = ("pandas", "webdataset", "braceexpand", "open_clip_train.main")
# Raised when what the settings do not show changes the weights: the captions' wording, the stored format.
RECIPE = 2
# The checkpoint of the default settings, shipped in the package so that no run waits for its minutes of
# pretraining; its record says which settings made it (`packaged`).
PACKAGED = osp.join(osp.dirname(osp.abspath(__file__)), "weights", CHECKPOINT)


@dataclass(frozen=True)
class PretrainSettings:
    """The corpus and open_clip_train's schedule; every field is part of the cache key."""

    corpus: CorpusSize = CorpusSize()
    heldout: CorpusSize = CorpusSize(people=300, styles=16, images_per_person=1)
    seed: int = 0
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    wd: float = 0.1
    warmup: int = 20


def made_by(settings: PretrainSettings) -> dict:
    """What decides the weights the pretraining of `settings` makes, as its record keeps it (JSON)."""
    return json.loads(json.dumps({"settings": dataclasses.asdict(settings), "model": TINY_CLIP, "recipe": RECIPE}))


def cache_key(settings: PretrainSettings) -> str:
    """Changes with `made_by` (the settings, the model config, the recipe) and the open_clip and torch versions."""
    blob = json.dumps(
        {**made_by(settings), "open_clip": open_clip.__version__, "torch": torch.__version__.split("+")[0]},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def packaged(settings: PretrainSettings) -> tuple[str, str]:
    """(`PACKAGED` if the pretraining of `settings` made it, else ''; why it cannot be trusted, '' if it can).
    Weights made by other open_clip or torch versions are the same model: only `made_by` must match."""
    try:
        if _record(PACKAGED)["made_by"] != made_by(settings):
            return "", ""
    except (OSError, ValueError, KeyError, TypeError):
        return "", ""
    return PACKAGED, untrusted(PACKAGED)


def checkpoint_path(settings: PretrainSettings, root: str = "") -> str:
    """Where the checkpoint for `settings` is: in the package if it was made by them and is as its record
    says and `root` is not given (`packaged`), else cached in `root` (default `cache_root()`)."""
    if not root:
        shipped, problem = packaged(settings)
        if shipped and not problem:
            return shipped
    return osp.join(root or cache_root(), "synthetic-clip", cache_key(settings), CHECKPOINT)


def _record(path: str) -> dict:
    with open(osp.join(osp.dirname(path), RECORD)) as f:
        return json.load(f)


def untrusted(path: str) -> str:
    """Why the cached checkpoint at `path` is not the one its pretraining wrote ('' if it is, or if there
    is none): it is checked against the record written after it, so weights replaced, truncated or
    emptied since, or kept before records were (or whose record a kill cut off, or that no longer
    holds a probe `torchreid-fgdi-pretrain` can show), are never used."""
    if not osp.isfile(path):
        return ""
    try:
        record = _record(path)
        size, digest = record["bytes"], record["sha256"]
        format_accuracy(record["zero_shot"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"no {RECORD} beside it records what was written (made before such records, cut short or edited)"
    now = osp.getsize(path)
    if now != size:
        since = "emptied" if now == 0 else "truncated" if now < size else "replaced or written to"
        return f"it has {now} bytes where {size} were written ({since} since)"
    if sha256sum(path) != digest:
        return "its sha256 differs from the one recorded when it was written (replaced or changed since)"
    return ""


def cache_problem(settings: PretrainSettings = PretrainSettings(), root: str = "") -> str:
    """Why the checkpoint for `settings` must be made before it is used ('' if it is cached as its
    pretraining wrote it): said where the making starts, e.g. by a benchmark whose runs are quiet."""
    path = checkpoint_path(settings, root)
    if not osp.isfile(path):
        return "it is not cached yet"
    problem = untrusted(path)
    return f"the cached {path} cannot be trusted: {problem}" if problem else ""


def is_cached(settings: PretrainSettings = PretrainSettings(), root: str = "") -> bool:
    """Whether the checkpoint for `settings` is cached as its pretraining wrote it."""
    return not cache_problem(settings, root)


def ready_checkpoint(settings: PretrainSettings = PretrainSettings(), root: str = "") -> str | None:
    """The checkpoint for `settings` if it is there as its pretraining wrote it (shipped or cached), else None."""
    return None if cache_problem(settings, root) else checkpoint_path(settings, root)


def log_path(checkpoint: str) -> str:
    """open_clip's log of the pretraining that made `checkpoint`: beside it."""
    return osp.join(osp.dirname(checkpoint), LOG)


def recorded_probe(path: str) -> dict:
    """The zero-shot probe of the cached checkpoint at `path`, as measured before it was written
    (it belongs to the weights on disk when `untrusted(path)` is '')."""
    return _record(path)["zero_shot"]


def pretrained_checkpoint(settings: PretrainSettings = PretrainSettings(), root: str = "") -> str:
    """The checkpoint for `settings`, made first if it is not cached or not as it was written (one
    process makes it, others wait); what killed pretrainings left (temporary files, a work folder)
    is removed."""
    path = checkpoint_path(settings, root)
    if path == PACKAGED:  # shipped, made by these settings and as recorded: nothing to make or lock
        return path
    folder = osp.dirname(path)
    os.makedirs(osp.dirname(folder), exist_ok=True)
    with open(folder + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        atomic.remove_temporaries(folder)
        _remove_work(folder)
        problem = untrusted(path)
        if problem:
            print(f"=> Pretraining the tiny CLIP again: the cached {path} cannot be trusted: {problem}")
        shipped, refused = packaged(settings) if not root else ("", "")
        if refused and not osp.isfile(path):
            print(f"=> Pretraining the tiny CLIP: the packaged {shipped} cannot be trusted: {refused}")
        if problem or not osp.isfile(path):
            with rng.rng_preserved():  # open_clip_train seeds torch: the run that asked draws as if it were cached
                pretrain(folder, settings, problem)
    return path


def _remove_work(folder: str) -> None:
    """Removes the work folder (corpus, open_clip_train's checkpoints) of a pretraining into `folder`
    that was killed: none runs while the caller holds the folder's lock."""
    work = folder + ".work"
    if osp.isdir(work):
        shutil.rmtree(work, ignore_errors=True)
        print(f"=> Removed {work}, left by a killed pretraining")


def pretrain(folder: str, settings: PretrainSettings, replacing: str = "") -> dict:
    """Writes the corpus, trains with open_clip_train, keeps the final weights (`keep`); returns the
    probe. Call it holding the folder's lock, its work folder removed (`pretrained_checkpoint`).
    `replacing`: why the cached checkpoint there cannot be used (part of a refusal)."""
    what = f"pretraining the synthetic benchmark's tiny CLIP (fgdi.clip_weights {TAG}, made once and cached)"
    if replacing:
        what += f" again, as the cached {osp.join(folder, CHECKPOINT)} cannot be trusted ({replacing}),"
    extras.require("pretrain", TRAINER_MODULES, what)
    from open_clip_train.main import main as train_main  # imports pandas, transformers: only when training

    work = folder + ".work"
    print(f"=> Pretraining the tiny CLIP on captioned synthetic people into {folder} (once; minutes on a CPU)")
    corpus = write_corpus(osp.join(work, "corpus"), settings.corpus, settings.seed)
    heldout = heldout_corpus(osp.join(work, "heldout"), settings)
    config = osp.join(work, f"{MODEL_NAME}.json")
    atomic.write_text(config, json.dumps({**TINY_CLIP, "quick_gelu": True}))
    open_clip.add_model_config(config)
    argv = [
        *("--model", MODEL_NAME, "--train-data", corpus, "--dataset-type", "csv"),
        *("--csv-separator", ",", "--csv-img-key", "filepath", "--csv-caption-key", "title"),
        *("--batch-size", str(settings.batch_size), "--epochs", str(settings.epochs)),
        *("--lr", str(settings.lr), "--wd", str(settings.wd), "--warmup", str(settings.warmup)),
        *("--beta1", "0.9", "--beta2", "0.98", "--eps", "1e-6"),  # CLIP's Adam, whatever the name
        *("--workers", "0", "--precision", "fp32", "--device", "cpu", "--seed", str(settings.seed)),
        *("--save-frequency", str(settings.epochs), "--logs", work, "--name", "train", "--report-to", ""),
        *("--log-every-n-steps", str(LOG_EVERY)),
    ]
    if torch.cuda.is_available():
        argv[argv.index("--device") + 1] = "cuda"
    log, kept_log = osp.join(work, LOG), osp.join(folder, LOG)
    shown = _Progress(settings.epochs)
    try:
        with open(log, "w", buffering=1) as stream, _logging_to(stream, shown), _one_process():
            train_main(argv)
            trained = osp.join(work, "train", "checkpoints", f"epoch_{settings.epochs}.pt")
            if not osp.isfile(trained):
                raise RuntimeError(f"open_clip_train wrote no {trained}; its log is {kept_log}")
            state = read_checkpoint(trained)["state_dict"]
            state = {k.removeprefix("module."): v for k, v in state.items()}
            check_finite(state, trained)  # a diverged pretraining is not cached as the benchmark's CLIP
            state = compact(state)
            probe = measure_probe(state, heldout)
    finally:  # the bar ended with the block; the log goes beside the checkpoint, however it ended
        if osp.isfile(log):
            os.makedirs(folder, exist_ok=True)
            os.replace(log, kept_log)
            print(f"=> open_clip's log of the pretraining: {kept_log}")
    print(format_accuracy(probe))
    keep(folder, state, probe, settings)
    shutil.rmtree(work, ignore_errors=True)
    return probe


@contextlib.contextmanager
def _one_process() -> Iterator[None]:
    """open_clip_train as a single process even inside a torchrun (or SLURM) job: seeing the job's
    size it would start a second process group (torch refuses) and train with ranks that are not
    pretraining. One rank pretrains; the others wait for the cached file."""
    hidden = {name: os.environ.pop(name) for name in LAUNCHER_SIZES if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(hidden)


@contextlib.contextmanager
def _logging_to(stream, shown: logging.Handler) -> Iterator[None]:
    """open_clip's log (every logger's records, Python's warnings) into `stream` rather than the
    console, and its steps to `shown`, while the block runs. open_clip_train prints its log to
    stderr (a handler it adds to the root logger) and sets every logger, torch's compiler's too, to
    INFO: all of that is undone afterwards. The bar keeps the console's stderr."""
    root = logging.getLogger()
    handlers = list(root.handlers)
    levels = {name: logging.getLogger(name).level for name in ["", *logging.root.manager.loggerDict]}
    root.addHandler(shown)
    try:
        with contextlib.redirect_stderr(stream):
            yield
    finally:
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
            handler.close()
        for name in logging.root.manager.loggerDict:
            logging.getLogger(name).setLevel(levels.get(name, logging.NOTSET))
        root.setLevel(levels[""])


class _Progress(logging.Handler):
    """open_clip_train's step lines as the console's progress: a bar over the epochs with the loss
    (the epoch's mean so far) and the ETA where bars show (`utils.progress`), else a line per epoch."""

    STEP = re.compile(r"Train Epoch: (\d+) \[ *\d+/\d+ \((\d+)%\)\].* Loss: \S+ \((\S+)\)")

    def __init__(self, epochs: int):
        super().__init__(logging.INFO)
        self.epochs, self.start = epochs, time.monotonic()
        form = "{desc}: {percentage:3.0f}%|{bar}| epoch {n:.1f}/{total:.0f} [{elapsed}<{remaining}{postfix}]"
        self.bar = progress.bar("tiny CLIP", epochs, "epoch", file=sys.stderr, bar_format=form)

    def emit(self, record: logging.LogRecord) -> None:
        step = self.STEP.search(record.getMessage())
        if step is None:
            return
        epoch, percent, loss = int(step[1]), int(step[2]), float(step[3])
        done = epoch + percent / 100
        if not self.bar.disable:
            self.bar.set_postfix_str(f"loss {loss:.4f}", refresh=False)
            self.bar.update(done - self.bar.n)
        elif percent == 100:
            left = self.bar.format_interval((time.monotonic() - self.start) / done * (self.epochs - done))
            print(f"=> tiny CLIP epoch {epoch + 1}/{self.epochs}: loss {loss:.4f}, eta {left}")

    def close(self) -> None:
        self.bar.close()
        super().close()


def compact(state: dict) -> dict:
    """`state` with its floating tensors in fp16, as OpenAI ships CLIP: half the bytes (the token
    embedding, 49408x64, is most of them); the probe is measured on these values."""
    return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}


def heldout_corpus(folder: str, settings: PretrainSettings) -> str:
    """Writes the held-out people the probe of `settings`' checkpoint is measured on; their CSV's path."""
    return write_corpus(folder, settings.heldout, settings.seed + 1)


def measure_probe(state: dict, heldout_csv: str) -> dict:
    """The zero-shot probe (`probe.attribute_accuracy`) of the tiny CLIP holding `state`, in fp32."""
    model = open_clip.CLIP(**TINY_CLIP, quick_gelu=True)  # as open_clip_train built it (`pretrain`)
    model.load_state_dict(state)
    preprocess = open_clip.image_transform(model.visual.image_size, is_train=False)
    return attribute_accuracy(model, open_clip.SimpleTokenizer(), preprocess, heldout_csv)


def keep(folder: str, state: dict, probe: dict, settings: PretrainSettings) -> str:
    """Writes `state` as ``folder/open_clip_tiny.pt``, then its record: its size and sha256 (what a later
    use checks it against), `probe`, its zero-shot probe, and what made it (`made_by`, the versions).
    Returns the checkpoint's path."""
    path = write_checkpoint(state, osp.join(folder, CHECKPOINT))
    record = {
        "bytes": osp.getsize(path),
        "sha256": sha256sum(path),
        "zero_shot": probe,
        "made_by": made_by(settings),
        "open_clip": open_clip.__version__,
        "torch": torch.__version__.split("+")[0],
    }
    atomic.write_text(osp.join(folder, RECORD), json.dumps(record, indent=1))
    return path
