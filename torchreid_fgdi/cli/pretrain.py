"""``torchreid-fgdi-pretrain``: the command line of `synthetic.pretrain` (the tiny CLIP, made once and cached).

The console shows the pretraining's progress and its probe; open_clip's own log is kept beside
the checkpoint, and its path is printed.

Pretraining needs the ``pretrain`` extra; without it the command refuses in one line naming it.
"""

from __future__ import annotations

import dataclasses
import os.path as osp
import sys

from ..synthetic import pretrain as tiny_clip
from ..synthetic.captions import CorpusSize
from ..synthetic.probe import format_accuracy
from .parsers import command_parser
from .refusals import console_script


def pretrain(argv: list[str] | None = None) -> str:
    """Makes (or finds cached) the checkpoint the options ask for, prints its probe; returns its path."""
    parser = command_parser(
        "torchreid-fgdi-pretrain",
        "Pretrains fgdi_tiny's CLIP on captioned synthetic people with open_clip_train (once; cached)\n"
        f"and prints its zero-shot attribute probe. Configs name it fgdi.clip_weights {tiny_clip.TAG}.",
        [
            "torchreid-fgdi-pretrain  # the weights shipped in the package: their probe and path",
            "torchreid-fgdi-pretrain --cache /tmp/clip-again  # makes them again (OMP_NUM_THREADS=1: bit for bit)",
            "torchreid-fgdi-pretrain --cache /tmp/clip-trial --epochs 2 --people 500  # a separate quick trial",
        ],
    )
    parser.add_argument(
        "--cache",
        default="",
        help=f"cache folder (default: {tiny_clip.cache_root()}, where the weights shipped in the package stand "
        "in for the default settings' checkpoint); a folder given here is pretrained into, e.g. to reproduce them",
    )
    other = f"; other values make a separate checkpoint, which fgdi.clip_weights {tiny_clip.TAG} does not use"
    epochs = tiny_clip.PretrainSettings.epochs
    parser.add_argument("--epochs", type=int, default=epochs, help="open_clip_train epochs" + other)
    parser.add_argument("--people", type=int, default=CorpusSize.people, help="identities in the corpus" + other)
    args = parser.parse_args(argv)
    corpus = dataclasses.replace(CorpusSize(), people=args.people)
    settings = tiny_clip.PretrainSettings(corpus=corpus, epochs=args.epochs)
    cached = tiny_clip.is_cached(settings, args.cache)
    path = tiny_clip.pretrained_checkpoint(settings, args.cache)
    if cached:  # the probe recorded with the weights on disk; a new checkpoint's was printed as it was measured
        print(format_accuracy(tiny_clip.recorded_probe(path)))
        log = tiny_clip.log_path(path)
        if osp.isfile(log):
            print(f"=> open_clip's log of the pretraining: {log}")
    print(f"=> {path}")
    return path


main = console_script(pretrain)


if __name__ == "__main__":
    sys.exit(main())
