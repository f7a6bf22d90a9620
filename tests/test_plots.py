"""The run's figures and ranked-results pictures, checked for what a reader sees in them."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from torchreid_fgdi.evaluation import plots, rank_pictures
from torchreid_fgdi.tools import search


def _cmc(top: float, n: int = 20) -> dict:
    return {"mAP": top / 2, "cmc": np.linspace(top / 4, top, n)}


def test_cmc_ranks_are_whole_numbers_unseen_targets_are_dashed_and_the_legend_is_off_the_curves():
    results = {"synth_a": _cmc(1.0), "synth_d": _cmc(0.3)}
    fig = plots.cmc_figure(results, sources=["synth_a"])
    fig.draw_without_rendering()
    (ax,) = fig.axes
    ticks = ax.get_xticks()
    assert list(ticks) == [1, 5, 10, 15, 20]
    assert [label.get_text() for label in ax.get_xticklabels()] == ["1", "5", "10", "15", "20"]
    assert ax.get_xlim()[0] < 1 and ax.get_xlim()[1] > 20 and ax.get_ylim() == (0, 100)
    styles = {line.get_label(): line.get_linestyle() for line in ax.get_lines()}
    assert styles == {"synth_a, mAP 50.0%": "-", "synth_d (unseen), mAP 15.0%": "--"}
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == list(styles)
    assert not legend.get_window_extent().overlaps(ax.get_window_extent())


def test_short_cmc_curves_get_a_tick_per_rank():
    fig = plots.cmc_figure({"synth_a": _cmc(1.0, n=4)}, sources=["synth_a"])
    assert list(fig.axes[0].get_xticks()) == [1, 2, 3, 4]


def _epochs(n: int, **terms) -> list[dict]:
    """A stage's metric rows: each term falls linearly from its given start to a tenth of it."""
    rows = [{"group": "stage", "step": e, "lr": 1e-3, "acc": 0.5} for e in range(1, n + 1)]
    for term, start in terms.items():
        for row, value in zip(rows, np.linspace(start, start / 10, n)):
            row[term] = value
    return rows


def test_loss_epochs_are_whole_numbers_and_one_legend_sits_beside_the_panels():
    stages = {
        "stage1": _epochs(15, loss=12.0, id=7.0, triplet=5.0),
        "stage2a": _epochs(4, loss=12.0, i2t=9.0, t2i=3.0),
        "stage2b": _epochs(1, loss=11.0, i2t=8.0, t2i=3.0),
        "stage3": _epochs(7, loss=15.0, id=7.0, triplet=3.0, i2t=5.0, guide=0.6),
    }
    fig = plots.losses_figure(stages)
    fig.draw_without_rendering()
    assert [ax.get_title() for ax in fig.axes] == list(stages)
    ticks = [[label.get_text() for label in ax.get_xticklabels()] for ax in fig.axes]
    assert ticks == [["1", "5", "10", "15"], ["1", "2", "3", "4"], ["1"], [str(e) for e in range(1, 8)]]
    assert all(ax.get_xlim() == (0.5, len(rows) + 0.5) for ax, rows in zip(fig.axes, stages.values()))
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["loss", "id", "triplet", "i2t", "t2i", "guide"]
    assert not any(ax.get_legend() for ax in fig.axes)
    assert not any(legend.get_window_extent().overlaps(ax.get_window_extent()) for ax in fig.axes)
    colours = [{line.get_label(): line.get_color() for line in ax.get_lines()} for ax in fig.axes]
    assert colours[0]["id"] == colours[3]["id"] and colours[1]["i2t"] == colours[3]["i2t"]  # a term, one colour


def _cluster(centre: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    return centre + 0.01 * torch.randn(n, len(centre), generator=torch.Generator().manual_seed(seed))


def test_domain_panels_share_one_pca_basis_and_axes_and_mark_the_unseen_domain():
    # "before": two domains apart along e1 (far); "after": apart along e2 (less far). Fitted
    # separately, each panel would show its split along its own PC 1; one basis keeps e1 and e2.
    e = torch.eye(8)
    before = torch.cat([_cluster(e[0] + 0.5 * e[1], 40, 0), _cluster(e[0] - 0.5 * e[1], 40, 1)])
    after = torch.cat([_cluster(e[0] + 0.2 * e[2], 40, 2), _cluster(e[0] - 0.2 * e[2], 40, 3)])
    names = ["synth_a"] * 40 + ["synth_d"] * 40
    fig = plots.domains_figure({"before": (before, names), "after": (after, names)}, unseen=["synth_d"])
    fig.draw_without_rendering()
    left, right = fig.axes
    assert left.get_xlim() == right.get_xlim() and left.get_ylim() == right.get_ylim()

    def split(ax) -> np.ndarray:
        """|mean of synth_a - mean of synth_d| along PC 1 and PC 2."""
        a, d = (c.get_offsets().mean(0) for c in ax.collections)
        return np.abs(a - d)

    assert split(left)[0] > 0.5 and split(left)[1] < 0.05
    assert split(right)[0] < 0.05 and split(right)[1] > 0.2
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["synth_a", "synth_d (unseen)"]
    source, unseen = (len(c.get_paths()[0].vertices) for c in left.collections)
    assert source != unseen  # circles and triangles


def _ink_rows(band: np.ndarray) -> np.ndarray:
    """Indices of the rows of `band` that hold dark (text) pixels."""
    return np.flatnonzero((band.max(axis=2) < 100).any(axis=1))


def _image(path, colour) -> str:
    Image.new("RGB", (32, 64), colour).save(path)
    return str(path)


def test_ranked_pictures_are_upscaled_numbered_framed_and_skip_the_querys_own_camera(tmp_path):
    query = (_image(tmp_path / "q.png", (250, 250, 0)), 7, 0, 0)
    gallery = [
        (_image(tmp_path / "same_cam.png", (0, 0, 0)), 7, 0, 0),  # nearest, but the evaluation ignores it
        (_image(tmp_path / "match.png", (0, 200, 200)), 7, 1, 0),
        (_image(tmp_path / "other.png", (200, 0, 200)), 8, 1, 0),
        (_image(tmp_path / "far.png", (90, 90, 90)), 9, 2, 0),
    ]
    distmat = np.array([[0.0, 0.5, 0.25, 0.9]])
    (path,) = rank_pictures.save_ranked_queries(distmat, [query], gallery, str(tmp_path / "out"), 2, 64, 32, "d")
    assert path == str(tmp_path / "out" / "q.png")
    picture = np.asarray(Image.open(path).convert("RGB")).astype(int)
    width, height = rank_pictures.upscaled(32, 64)
    assert (width, height) == (64, 128)
    # one row under the caption: labels above, upscaled images in frames, scores below
    column = rank_pictures.column_width([[rank_pictures.Tile(Image.new("RGB", (1, 1)), "#1", "0.250")]], (64, 128))
    top = rank_pictures.GAP + 2 * rank_pictures.LINE_HEIGHT + rank_pictures.FRAME
    lefts = [rank_pictures.column_x(col, column) + column // 2 - width // 2 for col in range(3)]
    assert [tuple(picture[top + height // 2, x + width // 2]) for x in lefts] == [
        (250, 250, 0),
        (200, 0, 200),
        (0, 200, 200),
    ]
    frames = [tuple(picture[top + height // 2, x - 1]) for x in lefts]
    assert frames == [rank_pictures.QUERY, rank_pictures.WRONG_MATCH, rank_pictures.TRUE_MATCH]
    above = [picture[top - rank_pictures.LINE_HEIGHT - rank_pictures.FRAME : top, x : x + width] for x in lefts]
    below = [picture[top + height : top + height + rank_pictures.LINE_HEIGHT + 4, x : x + width] for x in lefts]
    assert all(len(_ink_rows(band)) >= 9 for band in above + below)  # "query" / "id 7", "#1" / "0.250", ...
    assert not np.array_equal(above[1], above[2]) and not np.array_equal(below[1], below[2])
    fourth = rank_pictures.column_x(3, column) + column // 2
    assert fourth >= picture.shape[1] or tuple(picture[top + height // 2, fourth]) == (255, 255, 255)  # topk 2
    near = np.array([[0.0, 0.50004, 0.50001, 0.9]])  # a weak model's distances: 0.500 each at 3 decimals
    (path,) = rank_pictures.save_ranked_queries(near, [query], gallery, str(tmp_path / "near"), 2, 64, 32, "d")
    picture = np.asarray(Image.open(path).convert("RGB")).astype(int)
    under = top + height + rank_pictures.FRAME  # below the frames, whose colours differ
    numbers = [picture[under : under + rank_pictures.LINE_HEIGHT + 4, x : x + width] for x in lefts]
    assert len(_ink_rows(numbers[1])) >= 9 and not np.array_equal(numbers[1], numbers[2])
    with pytest.raises(ValueError, match="does not match 1 queries x 4 gallery"):
        rank_pictures.save_ranked_queries(distmat[:, :3], [query], gallery, str(tmp_path / "out"), 2, 64, 32, "d")


def test_search_picture_puts_rank_above_and_similarity_below_in_a_readable_size(tmp_path):
    query = _image(tmp_path / "q.png", (250, 250, 0))
    matches = [{"path": _image(tmp_path / f"g{i}.png", (0, 200, 200)), "similarity": 0.958 - i} for i in range(3)]
    path = search.write_png([{"query": query, "matches": matches}], str(tmp_path / "ranking.png"))
    picture = np.asarray(Image.open(path).convert("RGB")).astype(int)
    width, height = search.THUMB
    column = rank_pictures.column_width([[rank_pictures.Tile(Image.new("RGB", (1, 1)), "#1", "0.958")]], search.THUMB)
    left = rank_pictures.column_x(1, column) + column // 2 - width // 2
    top = rank_pictures.GAP + 2 * rank_pictures.LINE_HEIGHT + rank_pictures.FRAME
    assert tuple(picture[top + height // 2, left + width // 2]) == (0, 200, 200)
    above = _ink_rows(picture[top - rank_pictures.LINE_HEIGHT - rank_pictures.FRAME : top, left : left + width])
    below = _ink_rows(picture[top + height : top + height + rank_pictures.LINE_HEIGHT + 4, left : left + width])
    assert len(above) >= 9 and len(below) >= 9  # "#1" above the image, "0.958" under it, each 9+ px tall
    query_left = rank_pictures.column_x(0, column) + column // 2 - width // 2
    assert tuple(picture[top + height // 2, query_left - 1]) == rank_pictures.QUERY


def test_scores_get_the_decimals_that_tell_neighbours_apart():
    weak, good = [0.99912, 0.99907, 0.99899, 0.99899], [0.958, 0.5]
    assert rank_pictures.score_texts([good]) == [["0.958", "0.500"]]
    assert rank_pictures.score_texts([weak, good]) == [
        ["0.99912", "0.99907", "0.99899", "0.99899"],  # equal values stay equal
        ["0.95800", "0.50000"],  # one number of decimals for the page
    ]
    assert rank_pictures.score_texts([[153.21, 153.24, 160.0]]) == [["153.21", "153.24", "160.00"]]
    assert rank_pictures.score_texts([[0.1234561, 0.1234564]]) == [["0.123", "0.123"]]  # equal at 6 decimals
    assert rank_pictures.score_texts([[0.5000001, 0.5000004, 0.5]]) == [["0.500", "0.500", "0.500"]]
    assert rank_pictures.score_texts([[]]) == [[]]


def test_a_weak_models_near_identical_similarities_read_apart_on_the_page_and_the_picture(tmp_path):
    query = _image(tmp_path / "q.png", (250, 250, 0))
    similarities = [0.99912, 0.99907, 0.99899]
    matches = [
        {"path": _image(tmp_path / f"g{i}.png", (0, 200, 200)), "similarity": v} for i, v in enumerate(similarities)
    ]
    ranking = [{"query": query, "matches": matches}]
    page = Path(search.write_html(ranking, str(tmp_path / "index.html"))).read_text()
    assert re.findall(r"<br>(#\d+ [^<]*)<br>", page) == ["#1 0.99912", "#2 0.99907", "#3 0.99899"]
    picture = np.asarray(Image.open(search.write_png(ranking, str(tmp_path / "ranking.png"))).convert("RGB"))
    column = rank_pictures.column_width([[rank_pictures.Tile(Image.new("RGB", (1, 1)), "#1", "0.99912")]], search.THUMB)
    width, height = search.THUMB
    top = rank_pictures.GAP + 2 * rank_pictures.LINE_HEIGHT + 2 * rank_pictures.FRAME + height  # under any frame
    below = [
        picture[top : top + rank_pictures.LINE_HEIGHT + 4, x - column // 2 : x + column // 2]
        for x in (rank_pictures.column_x(col, column) + column // 2 for col in (1, 2, 3))
    ]  # the same image over each: only the numbers under them can differ
    assert all(len(_ink_rows(band)) >= 9 for band in below)
    assert not np.array_equal(below[0], below[1]) and not np.array_equal(below[1], below[2])


def test_a_crop_of_another_shape_keeps_its_proportions_on_white():
    wide = Image.new("RGB", (80, 20), (0, 90, 200))  # 4:1, the tiles are 1:2
    tile = np.asarray(rank_pictures.fitted(wide, search.THUMB)).astype(int)
    width, height = search.THUMB
    assert tile.shape == (height, width, 3)
    blue = np.all(np.abs(tile - (0, 90, 200)) < 12, axis=2)
    rows = np.flatnonzero(blue.all(axis=1))
    assert 14 <= len(rows) <= 16 and abs(rows.mean() - height / 2) < 1  # 64 / 4 rows, centred
    assert (tile[: rows[0] - 1] == 255).all() and (tile[rows[-1] + 2 :] == 255).all()
