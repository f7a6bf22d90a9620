"""The page `torchreid-fgdi-search` writes, opened in a real browser: Debian's headless Chromium,
driven by playwright, on the result of a real search with a random model over generated people.

`scripts/test.sh` installs the browser (apt-get, as root); without it these tests are skipped and
say what to install. `TORCHREID_FGDI_SCREENSHOT=docs/images/search_page.png` also saves the
screenshot there (the README's picture).
"""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchreid
from PIL import Image

from torchreid_fgdi.cli import search as search_cli
from torchreid_fgdi.evaluation import rank_pictures
from torchreid_fgdi.tools import search

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is missing: pip install playwright")
CHROMIUMS = ("chromium-headless-shell", "chromium")  # Debian's packages; scripts/test.sh installs the first
CHROMIUM = next(filter(None, map(shutil.which, CHROMIUMS)), None)
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason=f"no {' or '.join(CHROMIUMS)} on PATH: apt-get install chromium-headless-shell (as root, "
        "scripts/test.sh does)",
    ),
]
BASELINE = str(Path(__file__).parents[1] / "configs" / "synthetic" / "osnet_ain_x0_25.yaml")
# The first three would run a script or break out of their attribute if written into the page
# unescaped; the fourth must show as typed, not as "R&D" in bold; the last is not ASCII.
HOSTILE = (
    "<img src=x onerror=alert(1)>.jpg",
    "<svg onload=alert(2)>.jpg",
    '" onmouseover="alert(3)" data-x="\'.jpg',
    "R&amp;D <b>bold.jpg",
    "Zoë – café.jpg",
)
INJECTED = ("img[onerror]", "svg", "[onmouseover]", "[data-x]", "b")  # what the names above would add to the page
TOPK = 8  # the whole gallery: every file name shows


@pytest.fixture(scope="module")
def result(tiny_root, tmp_path_factory):
    """A search over a gallery with hostile file names: (index.html, ranking)."""
    folder = tmp_path_factory.mktemp("search")
    people = sorted((Path(tiny_root) / "synth_d" / "bounding_box_test").glob("*.jpg"))[:TOPK]
    gallery = folder / "gallery"
    gallery.mkdir()
    names = [*HOSTILE, *(p.name for p in people[len(HOSTILE) :])]
    for person, name in zip(people, names):
        shutil.copy(person, gallery / name)
    queries = [str(p) for p in sorted((Path(tiny_root) / "synth_d" / "query").glob("*.jpg"))[:3]]
    torch.manual_seed(0)  # the same ranking, and picture, every time
    model = torchreid.models.build_model("osnet_ain_x0_25", 7, loss="triplet", pretrained=False)
    torchreid.utils.save_checkpoint({"state_dict": model.state_dict(), "epoch": 1}, str(folder))
    args = ["--query", *queries, "--gallery", str(gallery), "--weights", str(folder / "model.pth.tar-1")]
    out = folder / "out"
    ranking = search_cli.search([*args, "--config-file", BASELINE, "--topk", str(TOPK), "--out", str(out)])
    return out / "index.html", ranking


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()


@pytest.fixture
def opened(browser):
    """open(url) -> a new page at url, and what it did: console errors, script errors, dialogs, requests."""
    pages = []

    def open_(url: str):
        page = browser.new_page()
        pages.append(page)
        seen = {"console errors": [], "script errors": [], "dialogs": [], "requests": []}
        page.on("console", lambda message: message.type == "error" and seen["console errors"].append(message.text))
        page.on("pageerror", lambda error: seen["script errors"].append(str(error)))
        page.on("dialog", lambda dialog: seen["dialogs"].append(dialog.message) or dialog.dismiss())
        page.on("request", lambda request: seen["requests"].append(request.url))
        page.goto(url)
        return page, seen

    yield open_
    for page in pages:
        page.close()


def test_the_page_shows_every_query_with_its_ranked_thumbnails_scores_and_no_errors(result, opened):
    path, ranking = result
    page, seen = opened(path.as_uri())
    rows = page.eval_on_selector_all(
        "tr",
        """rows => rows.map(row => [...row.cells].map(cell => ({
            text: cell.innerText,
            images: [...cell.querySelectorAll('img')].map(img => [img.complete, img.naturalWidth, img.naturalHeight]),
        })))""",
    )
    assert len(rows) == len(ranking) == 3
    shown = rank_pictures.score_texts([[match["similarity"] for match in entry["matches"]] for entry in ranking])
    for row, entry, similarities in zip(rows, ranking, shown):
        assert len(row) == 1 + TOPK
        assert [cell["images"] for cell in row] == [[[True, *search.THUMB]]] * (1 + TOPK)  # decoded, full size
        assert row[0]["text"].split("\n") == ["", "query", os.path.basename(entry["query"])]
        for n, (cell, match, similarity) in enumerate(zip(row[1:], entry["matches"], similarities), 1):
            assert cell["text"].split("\n") == ["", f"#{n} {similarity}", os.path.basename(match["path"])]
        scores = [match["similarity"] for match in entry["matches"]]
        assert scores == sorted(scores, reverse=True) and len(set(scores)) > 1
    assert seen == {"console errors": [], "script errors": [], "dialogs": [], "requests": [path.as_uri()]}


def test_hostile_file_names_show_as_text_and_run_nothing(result, opened, tmp_path):
    path, ranking = result
    trap = tmp_path / "trap.html"  # the names written into the same markup unescaped: the checks below catch that
    trap.write_text("".join(f'<span title="{name}">{name}</span>' for name in HOSTILE))
    trapped, caught = opened(trap.as_uri())
    assert caught["dialogs"] == ["1", "2"] and all(trapped.locator(selector).count() for selector in INJECTED)

    page, seen = opened(path.as_uri())
    assert seen["dialogs"] == [] and seen["script errors"] == []
    spans = page.eval_on_selector_all("span", "spans => spans.map(s => [s.textContent, s.title, s.attributes.length])")
    gallery = {match["path"] for entry in ranking for match in entry["matches"]}
    assert {(os.path.basename(p), p, 1) for p in gallery} == set(map(tuple, spans))
    assert set(HOSTILE) <= {text for text, _, _ in spans}
    assert not any(page.locator(selector).count() for selector in INJECTED)
    sources = page.eval_on_selector_all("img", "images => images.map(img => img.getAttribute('src'))")
    assert len(sources) == len(ranking) * (1 + TOPK)
    assert all(source.startswith("data:image/jpeg;base64,") for source in sources)


def test_a_screenshot_of_the_page_shows_the_rows(result, opened, tmp_path):
    path, ranking = result
    page, _ = opened(path.as_uri())
    shot = tmp_path / "search_page.png"
    page.locator("table").screenshot(path=str(shot))
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float32)
    height, width, _ = pixels.shape
    assert width >= (1 + TOPK) * search.THUMB[0] and height >= len(ranking) * search.THUMB[1]
    assert pixels.std() > 20  # thumbnails and text, not a blank page
    query_blue = np.all(np.abs(pixels - (0xDD, 0xEE, 0xFF)) < 2, axis=2)
    assert query_blue.mean() > 0.01  # the query column's background is painted
    if target := os.environ.get("TORCHREID_FGDI_SCREENSHOT"):
        shutil.copy(shot, target)
