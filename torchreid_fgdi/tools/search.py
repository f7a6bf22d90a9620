"""Rank a folder of images against queries: what ``torchreid-fgdi-search`` (`cli.search`) runs.

Every image under the gallery folder is ranked by cosine similarity to each query with a trained
checkpoint's features. The gallery's features are kept in an index (`gallery_index`), so a second
search over the same folder embeds only the queries and the images that changed. The result page
(``index.html``, self-contained: thumbnails are embedded), a picture of the same rows
(``ranking.png``) and the numbers (``ranking.json``) go to ``--out``.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import os.path as osp
from collections import defaultdict

import torch
from PIL import Image

from ..data.images import read_image
from ..evaluation import rank_pictures
from ..utils import atomic
from . import nearest

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
THUMB = (64, 128)  # width, height


def _images_under(folder: str) -> list[str]:
    return sorted(
        osp.join(root, name)
        for root, _, names in os.walk(folder)
        for name in names
        if name.lower().endswith(IMAGE_SUFFIXES)
    )


def list_images(folder: str) -> list[str]:
    """Every image file under `folder` (recursively), sorted."""
    if osp.isfile(folder):
        raise NotADirectoryError(
            f"--gallery {folder!r} is a file: pass the folder of gallery images (searched recursively)"
        )
    if not osp.isdir(folder):
        raise FileNotFoundError(f"gallery folder {folder!r} does not exist")
    found = _images_under(folder)
    if not found:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder!r}")
    return found


def query_images(items: list[str]) -> list[str]:
    """The query images: each item a file, or a folder standing for every image under it, sorted."""
    queries = []
    for item in items:
        if osp.isdir(item):
            found = _images_under(item)
            if not found:
                raise FileNotFoundError(f"--query folder {item!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            queries += found
        elif osp.exists(item):
            queries.append(item)
        else:
            raise FileNotFoundError(f"--query {item!r} does not exist: pass image files or folders of images")
    return queries


def _same_files(queries: list[str], gallery: list[str]) -> list[set[int]]:
    """For each query, the gallery rows that are the query's own file (another path to it included)."""
    rows = defaultdict(set)
    for row, path in enumerate(gallery):
        stat = os.stat(path)
        rows[stat.st_dev, stat.st_ino].add(row)
    return [rows.get((stat.st_dev, stat.st_ino), set()) for stat in map(os.stat, queries)]


def rank(
    queries: list[str],
    query_features: torch.Tensor,
    gallery: list[str],
    gallery_features: torch.Tensor,
    topk: int,
    exclude_self: bool = False,
) -> list[dict]:
    """[{query, matches: [{path, similarity}, ...best first]}] for every query; with `exclude_self`,
    a query's own file is not among its matches."""
    excluded = _same_files(queries, gallery) if exclude_self else [set() for _ in queries]
    values, indices = nearest.top_k(query_features, gallery_features, topk + max(map(len, excluded)))
    ranking = []
    for query, own, row_values, row_indices in zip(queries, excluded, values.tolist(), indices.tolist()):
        matches = [
            {"path": gallery[i], "similarity": round(v, 6)} for v, i in zip(row_values, row_indices) if i not in own
        ]
        ranking.append({"query": query, "matches": matches[:topk]})
    return ranking


def _thumbnail(path: str) -> Image.Image:
    return rank_pictures.fitted(read_image(path), THUMB)


def _data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _similarities(ranking: list[dict]) -> list[list[str]]:
    """Each query's match similarities as the page and the picture show them (`rank_pictures.score_texts`)."""
    return rank_pictures.score_texts([[match["similarity"] for match in entry["matches"]] for entry in ranking])


def write_html(ranking: list[dict], path: str) -> str:
    rows = []
    for entry, similarities in zip(ranking, _similarities(ranking)):
        cells = [
            f'<td class="q"><img src="{_data_uri(_thumbnail(entry["query"]))}"><br>query<br>'
            f"{html.escape(osp.basename(entry['query']))}</td>"
        ]
        for n, (match, similarity) in enumerate(zip(entry["matches"], similarities), 1):
            cells.append(
                f'<td><img src="{_data_uri(_thumbnail(match["path"]))}"><br>#{n} {similarity}<br>'
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
            rank_pictures.Tile(_thumbnail(match["path"]), f"#{n}", similarity)
            for n, (match, similarity) in enumerate(zip(entry["matches"], similarities), 1)
        ]
        for entry, similarities in zip(ranking, _similarities(ranking))
    ]
    picture = rank_pictures.draw_rows(rows, THUMB, "cosine similarity under each image (higher: nearer)")
    return rank_pictures.save_png(picture, path)


def write_results(ranking: list[dict], out: str) -> tuple[str, str]:
    """``ranking.json``, ``index.html`` and ``ranking.png`` in `out`; (page, picture) paths."""
    atomic.write_text(osp.join(out, "ranking.json"), json.dumps(ranking, indent=1))
    return write_html(ranking, osp.join(out, "index.html")), write_png(ranking, osp.join(out, "ranking.png"))
