"""``torchreid-fgdi-search --query IMG [IMG ...] --gallery DIR --weights CKPT``: rank a folder.

Every image under the gallery folder is ranked by cosine similarity to each query with a trained
checkpoint's features. The result page (``index.html``, self-contained: thumbnails are embedded),
a picture of the same rows (``ranking.png``) and the numbers (``ranking.json``) go to ``--out``.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import os.path as osp

from PIL import Image

from . import atomic
from .compat import UnreadableImageError, read_image
from .data.image_check import unreadable_images
from .evaluation import rank_pictures
from .inference import FeatureExtractor
from .parsers import command_parser

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
THUMB = (64, 128)  # width, height


def list_images(folder: str) -> list[str]:
    """Every image file under `folder` (recursively), sorted."""
    if osp.isfile(folder):
        raise NotADirectoryError(
            f"--gallery {folder!r} is a file: pass the folder of gallery images (searched recursively)"
        )
    if not osp.isdir(folder):
        raise FileNotFoundError(f"gallery folder {folder!r} does not exist")
    found = sorted(
        osp.join(root, name)
        for root, _, names in os.walk(folder)
        for name in names
        if name.lower().endswith(IMAGE_SUFFIXES)
    )
    if not found:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder!r}")
    return found


def rank(extractor: FeatureExtractor, queries: list[str], gallery: list[str], topk: int) -> list[dict]:
    """[{query, matches: [{path, similarity}, ...best first]}] for every query."""
    similarity = extractor(queries) @ extractor(gallery).T
    best = similarity.topk(min(topk, len(gallery)), dim=1)
    return [
        {
            "query": query,
            "matches": [{"path": gallery[i], "similarity": round(float(v), 6)} for v, i in zip(values, indices)],
        }
        for query, values, indices in zip(queries, best.values.tolist(), best.indices.tolist())
    ]


def _thumbnail(path: str) -> Image.Image:
    return read_image(path).resize(THUMB)


def _data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def write_html(ranking: list[dict], path: str) -> str:
    rows = []
    for entry in ranking:
        cells = [
            f'<td class="q"><img src="{_data_uri(_thumbnail(entry["query"]))}"><br>query<br>'
            f"{html.escape(osp.basename(entry['query']))}</td>"
        ]
        for n, match in enumerate(entry["matches"], 1):
            cells.append(
                f'<td><img src="{_data_uri(_thumbnail(match["path"]))}"><br>#{n} {match["similarity"]:.3f}<br>'
                f'<span title="{html.escape(match["path"])}">{html.escape(osp.basename(match["path"]))}</span></td>'
            )
        rows.append("<tr>" + "".join(cells) + "</tr>")
    page = (
        "<!doctype html><meta charset='utf-8'><title>torchreid-fgdi search</title><style>"
        "td{text-align:center;font:11px sans-serif;padding:4px}td.q{background:#ddeeff}</style>"
        "<table>" + "".join(rows) + "</table>"
    )
    return atomic.write_text(path, page)


def write_png(ranking: list[dict], path: str) -> str:
    """One row per query: the query (blue frame), then the matches, rank above and similarity below."""
    rows = [
        [rank_pictures.Tile(_thumbnail(entry["query"]), "query", frame=rank_pictures.QUERY)]
        + [
            rank_pictures.Tile(_thumbnail(match["path"]), f"#{n}", f"{match['similarity']:.3f}")
            for n, match in enumerate(entry["matches"], 1)
        ]
        for entry in ranking
    ]
    picture = rank_pictures.draw_rows(rows, THUMB, "cosine similarity under each image (higher: nearer)")
    return rank_pictures.save_png(picture, path)


def main(argv: list[str] | None = None) -> list[dict]:
    """Ranks the gallery for each query and writes the three result files; returns the ranking."""
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
    parser.add_argument("--query", nargs="+", required=True, help="query image file(s)")
    parser.add_argument("--gallery", required=True, help="folder of gallery images (searched recursively)")
    parser.add_argument("--weights", required=True, help="a trained checkpoint, e.g. log/.../checkpoints/stage3.pth")
    parser.add_argument(
        "--config-file", default="", help="the training config, for a checkpoint that records none (torchreid's)"
    )
    parser.add_argument("--topk", type=int, default=10, help="matches shown per query")
    parser.add_argument("--out", default="search", help="folder for index.html, ranking.png and ranking.json")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: CUDA if available, else cpu)")
    parser.add_argument(
        "--skip-unreadable", action="store_true", help="leave out gallery images that cannot be decoded (listed)"
    )
    args = parser.parse_args(argv)
    if args.topk < 1:
        parser.error("--topk must be >= 1")
    gallery = list_images(args.gallery)
    if args.skip_unreadable:
        bad = unreadable_images(gallery)
        gallery = [path for path in gallery if path not in bad]
        if bad:
            print(
                f"=> Skipped {len(bad)} unreadable gallery image(s):\n  "
                + "\n  ".join(f"{p}: {w}" for p, w in bad.items())
            )
    extractor = FeatureExtractor(args.weights, args.config_file, device=args.device)
    try:
        ranking = rank(extractor, args.query, gallery, args.topk)
    except UnreadableImageError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n(--skip-unreadable leaves unreadable gallery images out)\n")
    atomic.write_text(osp.join(args.out, "ranking.json"), json.dumps(ranking, indent=1))
    page = write_html(ranking, osp.join(args.out, "index.html"))
    picture = write_png(ranking, osp.join(args.out, "ranking.png"))
    print(f"=> Ranked {len(ranking)} query(ies) against {args.gallery}: {page}, {picture}")
    return ranking


if __name__ == "__main__":
    main()
