"""``torchreid-fgdi-search --query IMG|DIR [...] --gallery DIR --weights CKPT``: rank a folder.

The command line of `tools.search`: every image under the gallery folder ranked by cosine
similarity to each query, the gallery's features kept in an index (`tools.gallery_index`), and
``index.html``, ``ranking.png`` and ``ranking.json`` written to ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator

import torch

from ..errors import UnreadableImageError
from ..tools import gallery_index
from ..tools import search as searching
from ..tools.features import FeatureExtractor
from ..utils import atomic
from .parsers import add_checkpoint_arguments, command_parser
from .refusals import console_script


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "torchreid-fgdi-search",
        "Ranks every image under a folder by cosine similarity to each query, with a trained checkpoint's\n"
        "features, and writes index.html (thumbnails embedded), ranking.png and ranking.json.",
        [
            "torchreid-fgdi-search --query q1.jpg q2.jpg --gallery photos/ "
            "--weights log/synthetic/fgdi_tiny/checkpoints/stage3.pth",
            "torchreid-fgdi-search --query q1.jpg --gallery photos/ "
            "--weights log/synthetic/osnet_ain_x0_25/model/model.pth.tar-30 --topk 5 --out search/q1",
        ],
    )
    parser.add_argument(
        "--query",
        nargs="+",
        required=True,
        help="query image file(s) and / or folder(s) (every image under one, sorted)",
    )
    parser.add_argument("--gallery", required=True, help="folder of gallery images (searched recursively)")
    add_checkpoint_arguments(parser)
    parser.add_argument("--topk", type=int, default=10, help="matches shown per query")
    parser.add_argument("--out", default="search", help="folder for index.html, ranking.png and ranking.json")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: CUDA if available, else cpu)")
    parser.add_argument(
        "--skip-unreadable", action="store_true", help="leave out gallery images that cannot be decoded (listed)"
    )
    parser.add_argument(
        "--exclude-self",
        action="store_true",
        help="leave each query's own file (under any path) out of its matches; off by default, so the "
        "gallery is shown as it is and a query taken from it comes first, with similarity 1",
    )
    parser.add_argument(
        "--index",
        default=None,
        help="the gallery's feature index (default: one file per gallery folder in "
        "$TORCHREID_FGDI_CACHE/gallery-index/, the cache being ~/.cache/torchreid-fgdi unless set)",
    )
    return parser


@contextlib.contextmanager
def _unreadable_images(parser: argparse.ArgumentParser, advice: str) -> Iterator[None]:
    """An image of the block that cannot be decoded ends the command: its error, then `advice`, which
    says whether it is a query or a gallery image."""
    try:
        yield
    except UnreadableImageError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n({advice})\n")


def _features(
    parser: argparse.ArgumentParser, args: argparse.Namespace, queries: list[str], gallery: list[str], index_path: str
) -> tuple[torch.Tensor, gallery_index.GalleryFeatures]:
    """The queries' features and the gallery's (from its index where it can), said in a line or two."""
    extractor = FeatureExtractor(args.weights, args.config_file, device=args.device)
    query_advice = "it is a --query image: --skip-unreadable leaves out unreadable gallery images only"
    with _unreadable_images(parser, query_advice):
        query_features = extractor(queries)  # first: a bad query costs no gallery features
    with _unreadable_images(parser, "--skip-unreadable leaves unreadable gallery images out"):
        found = gallery_index.gallery_features(extractor, args.gallery, gallery, index_path, args.skip_unreadable)
    if found.skipped:
        print(
            f"=> Skipped {len(found.skipped)} unreadable gallery image(s):\n  "
            + "\n  ".join(f"{p}: {w}" for p, w in found.skipped.items())
        )
    print(
        f"=> Gallery {args.gallery}: {len(found.paths)} images, {found.reused} from the index {index_path}, "
        f"{found.embedded} embedded ({found.changed} of them changed since indexed), "
        f"{found.removed} gone from the folder"
    )
    if not found.paths:
        parser.exit(2, f"{parser.prog}: error: no readable gallery images under {args.gallery!r}\n")
    return query_features, found


def search(argv: list[str] | None = None) -> list[dict]:
    """Ranks the gallery for each query and writes the three result files; returns the ranking."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.topk < 1:
        parser.error("--topk must be >= 1")
    atomic.check_output_folder(args.out, "--out")
    index_path = args.index or gallery_index.default_path(args.gallery)
    gallery_index.check_writable(index_path, "--index")
    queries = searching.query_images(args.query)
    query_features, found = _features(parser, args, queries, searching.list_images(args.gallery), index_path)
    ranking = searching.rank(queries, query_features, found.paths, found.features, args.topk, args.exclude_self)
    page, picture = searching.write_results(ranking, args.out)
    print(f"=> Ranked {len(ranking)} query(ies) against {args.gallery}: {page}, {picture}")
    return ranking


main = console_script(search)


if __name__ == "__main__":
    sys.exit(main())
