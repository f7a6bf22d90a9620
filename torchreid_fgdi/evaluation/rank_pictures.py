"""Pictures of ranked galleries, one row of tiles per query, readable at a glance.

Re-ID crops are small (64 x 32 on the synthetic benchmark), so tiles are upscaled to at least
`MIN_HEIGHT` pixels. Each tile has its label above (``query``, ``#1``, ``#2`` ...) and its score
below, and a coloured frame says what it is: blue the query, green a gallery image of the query's
identity, red another identity (torchreid's colours). Used by the run's ``visrank`` pictures and by
``torchreid-fgdi-search``'s ``ranking.png``.
"""

from __future__ import annotations

import math
import os
import os.path as osp
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from ..data.images import read_image
from ..utils import atomic

QUERY = (40, 90, 200)
TRUE_MATCH = (0, 160, 0)
WRONG_MATCH = (210, 0, 0)
MIN_HEIGHT = 128
FONT_SIZE = 14
FRAME = 3  # frame width, drawn around the image, never over it
GAP = 8  # between columns and around the picture
QUERY_GAP = 24  # after the query column, to set it apart from the ranks
LINE_HEIGHT = FONT_SIZE + 6
MAX_DECIMALS = 6  # a score's most decimals (search's ranking.json keeps similarities to 6)


@dataclass(frozen=True)
class Tile:
    image: Image.Image
    above: str
    below: str = ""
    frame: tuple[int, int, int] | None = None


def fitted(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """`image` scaled to fit `size` (width, height) with its proportions kept, centred on white:
    a crop of another shape than the tiles is not stretched into a different-looking person."""
    return ImageOps.pad(image.convert("RGB"), size, Image.Resampling.BICUBIC, color="white")


def upscaled(width: int, height: int) -> tuple[int, int]:
    """(width, height) times the smallest whole factor that makes the height at least MIN_HEIGHT."""
    factor = max(1, math.ceil(MIN_HEIGHT / height))
    return width * factor, height * factor


def column_width(rows: Sequence[Sequence[Tile]], size: tuple[int, int]) -> int:
    """Wide enough for the framed image and for the widest label, so labels never run together."""
    font = _font()
    widest = max(font.getlength(text) for row in rows for tile in row for text in (tile.above, tile.below))
    return max(size[0] + 2 * FRAME, math.ceil(widest) + 4)


def column_x(col: int, width: int) -> int:
    """Left edge of column `col` (0: the query column)."""
    return GAP if col == 0 else GAP + width + QUERY_GAP + (col - 1) * (width + GAP)


def draw_rows(rows: Sequence[Sequence[Tile]], size: tuple[int, int], caption: str = "") -> Image.Image:
    """The rows of tiles on white, every image fitted to `size` (width, height), `caption` on top."""
    if not rows or not all(rows):
        raise ValueError("draw_rows needs at least one row and one tile in every row")
    font = _font()
    width, height = size
    column = column_width(rows, size)
    row_height = LINE_HEIGHT + height + 2 * FRAME + LINE_HEIGHT + GAP
    top = GAP + (LINE_HEIGHT if caption else 0)
    canvas_width = column_x(max(len(row) for row in rows), column)
    if caption:
        canvas_width = max(canvas_width, math.ceil(font.getlength(caption)) + 2 * GAP)
    canvas = Image.new("RGB", (canvas_width, top + len(rows) * row_height), "white")
    draw = ImageDraw.Draw(canvas)
    if caption:
        draw.text((GAP, GAP), caption, fill=(60, 60, 60), font=font)
    for r, row in enumerate(rows):
        y = top + r * row_height
        for col, tile in enumerate(row):
            x = column_x(col, column)
            centre = x + column // 2
            left, image_top = centre - width // 2, y + LINE_HEIGHT + FRAME
            canvas.paste(fitted(tile.image, size), (left, image_top))
            if tile.frame:
                box = [left - FRAME, image_top - FRAME, left + width + FRAME - 1, image_top + height + FRAME - 1]
                draw.rectangle(box, outline=tile.frame, width=FRAME)
            below = image_top + height + FRAME + LINE_HEIGHT // 2
            draw.text((centre, y + LINE_HEIGHT // 2), tile.above, fill="black", font=font, anchor="mm")
            draw.text((centre, below), tile.below, fill="black", font=font, anchor="mm")
    return canvas


def save_png(image: Image.Image, path: str) -> str:
    return atomic.write_atomically(path, lambda tmp: image.save(tmp, format="PNG"))


def score_texts(rows: Sequence[Sequence[float]]) -> list[list[str]]:
    """Every score of `rows` (each a query's, in rank order) as text, with one number of decimals for
    all: the fewest, from 3 (from 1 at 10 and above), that tell apart each two neighbours of a row
    whose values differ at `MAX_DECIMALS`. A weak model ranks by similarities such as 0.99912 and
    0.99907, which three decimals would show as 0.999 for every match."""
    values = [[float(v) for v in row] for row in rows]
    first = 1 if any(abs(v) >= 10 for row in values for v in row) else 3
    decimals = next((d for d in range(first, MAX_DECIMALS) if _neighbours_apart(values, d)), MAX_DECIMALS)
    return [[f"{v:.{decimals}f}" for v in row] for row in values]


def _neighbours_apart(rows: list[list[float]], decimals: int) -> bool:
    """Each two neighbours of a row that differ at `MAX_DECIMALS` also differ at `decimals`."""
    return all(
        f"{a:.{decimals}f}" != f"{b:.{decimals}f}"
        for row in rows
        for a, b in zip(row, row[1:])
        if round(a, MAX_DECIMALS) != round(b, MAX_DECIMALS)
    )


def save_ranked_queries(
    distmat,
    query_items: Sequence,
    gallery_items: Sequence,
    save_dir: str,
    topk: int,
    height: int,
    width: int,
    distance: str,
) -> list[str]:
    """`<save_dir>/<query file name>.png` per query: the query, then its `topk` nearest gallery images.

    Gallery images of the query's identity from the query's own camera are skipped: the evaluation
    ignores them too. ``distmat``: query x gallery distances (numpy or torch); items: torchreid's
    (path, pid, camid, ...) tuples; ``distance`` names the number under each image.
    """
    distmat = np.asarray(distmat)
    if distmat.shape != (len(query_items), len(gallery_items)):
        raise ValueError(
            f"distance matrix {distmat.shape} does not match {len(query_items)} queries x {len(gallery_items)} "
            "gallery images: pass the matrix computed from these items"
        )
    os.makedirs(save_dir, exist_ok=True)
    size = upscaled(width, height)
    caption = f"{distance} under each image (lower: nearer); frame green: same identity, red: another"
    written = []
    for (q_path, q_pid, q_cam, *_), row in zip(query_items, distmat):
        ranked = np.argsort(row, kind="stable")
        shown = [g for g in ranked if not (gallery_items[g][1] == q_pid and gallery_items[g][2] == q_cam)][:topk]
        (scores,) = score_texts([row[shown]])
        tiles = [Tile(read_image(q_path), "query", f"id {q_pid}", QUERY)]
        for n, (g, score) in enumerate(zip(shown, scores), 1):
            g_path, g_pid = gallery_items[g][:2]
            tiles.append(Tile(read_image(g_path), f"#{n}", score, TRUE_MATCH if g_pid == q_pid else WRONG_MATCH))
        path = osp.join(save_dir, osp.splitext(osp.basename(q_path))[0] + ".png")
        written.append(save_png(draw_rows([tiles], size, caption), path))
    return written


def _font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=FONT_SIZE)
