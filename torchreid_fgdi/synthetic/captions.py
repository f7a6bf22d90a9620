"""A captioned corpus of drawn people, for pretraining a tiny CLIP the way CLIP was pretrained.

The generator knows every attribute it draws, so each image gets a caption in varied templates
and word orders. Every caption names each attribute the zero-shot probe asks about (`attributes`),
in the probe's words: a caption that names a pattern only sometimes, never names a plain shirt or
calls trousers "pants" half the time teaches a tiny text tower little about those words. The people are
new identities (never in the benchmark's domains), drawn in a mixture of random global styles
that covers none of ``synth_a`` ... ``synth_d`` exactly, as web images cover no re-ID camera.
Everything follows from the seed.
"""

from __future__ import annotations

import colorsys
import csv
import os
import os.path as osp
import shutil
import tempfile
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .render import VIEWS, DomainStyle, _camera, _identity, render

# Colour words by hue (turns, each up to its limit), for saturated colours; dark reds and oranges are brown.
HUES = (
    (0.04, "red"),
    (0.11, "orange"),
    (0.19, "yellow"),
    (0.45, "green"),
    (0.70, "blue"),
    (0.83, "purple"),
    (0.93, "pink"),
    (1.01, "red"),
)
COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "grey")
PATTERN_WORDS = {"solid": "plain", "hstripes": "striped", "vstripes": "striped", "checks": "checked", "logo": "logo"}
ACCESSORY_VERBS = {"backpack": "carrying", "shoulder_bag": "carrying", "hat": "wearing"}
TEMPLATES = (
    "a photo of a person wearing {top}{more}.",
    "{top}{more}",
    "pedestrian in {top}{more}, seen from the {view}.",
    "a {build} person in {top}{more}.",
    "street photo: someone in {top}{more}",
    "cctv image of a person in {top}{more}",
    "a person walking in {top}{more}.",
    "a person in {top}{more}",
)
# How often a caption names each attribute (and a colour beside a bottom or an accessory): a subset,
# as alt-text names one, so that a prompt naming one attribute alone reads like a caption.
NAMED = {"shirt": 0.8, "pattern": 0.8, "sleeves": 0.3, "bottom": 0.8, "accessory": 0.8, "colour": 0.7}


def colour_name(rgb: tuple[int, int, int]) -> str:
    """The everyday word for a drawn colour (one of `COLOURS`)."""
    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
    if v < 0.25:
        return "black"
    if s < 0.2:
        return "white" if v > 0.8 else "grey"
    name = next(name for limit, name in HUES if h < limit)
    return "brown" if name in ("red", "orange") and v < 0.6 else name


def caption(ident: dict, view: str, rng: np.random.Generator) -> str:
    """One caption of a drawn person in a random template: a random subset of its attributes (`NAMED`),
    each in the zero-shot probe's words (`attributes`), in varied order."""
    named = attributes(ident)
    shirt = ((colour_name(ident["shirt"]), "shirt"), (named["pattern"], "pattern"))
    words = [word for word, key in shirt if rng.random() < NAMED[key]]
    if rng.random() < 0.5:
        words.reverse()
    if rng.random() < NAMED["sleeves"]:
        words.insert(0, "long-sleeved" if ident["long_sleeves"] else "short-sleeved")
    top = " ".join(["a", *words, "shirt"])
    more = []
    if rng.random() < NAMED["bottom"]:
        colour = f"{colour_name(ident['pants'])} " if rng.random() < NAMED["colour"] else ""
        more.append(f"{('wearing', 'in')[rng.integers(2)]} {colour}{named['bottom']}")
    if ident["accessory"] != "none" and rng.random() < NAMED["accessory"]:
        colour = f"{colour_name(ident['accessory_color'])} " if rng.random() < NAMED["colour"] else ""
        verb = ("with", ACCESSORY_VERBS[ident["accessory"]])[rng.integers(2)]
        more.append(f"{verb} a {colour}{named['accessory']}")
    if rng.random() < 0.5:
        more.reverse()
    build = "slim" if ident["width"] < 0.95 else ("broad" if ident["width"] > 1.1 else "medium-built")
    template = TEMPLATES[rng.integers(len(TEMPLATES))]
    return template.format(top=top, more="".join(f", {m}" for m in more), view=view, build=build)


ATTRIBUTES = ("shirt", "pattern", "bottom", "accessory")  # the labelled columns beside each caption


def attributes(ident: dict) -> dict[str, str]:
    """What a zero-shot probe asks about a drawn person, in caption words."""
    return {
        "shirt": colour_name(ident["shirt"]),
        "pattern": PATTERN_WORDS[ident["pattern"]],
        "bottom": "shorts" if ident["shorts"] else "trousers",
        "accessory": ident["accessory"].replace("_", " "),
    }


def web_style(rng: np.random.Generator, index: int) -> DomainStyle:
    """A random global look. Hues stay nearly true (a caption names the colour a viewer sees);
    size, contrast, blur, noise, compression and background vary over the benchmark's ranges and
    beyond, in combinations none of its domains has."""
    return DomainStyle(
        name=f"web{index}",
        seed_offset=1000 + index,
        size=(int(rng.integers(96, 176)), int(rng.integers(40, 80))),
        num_cams=1,
        hue_shift=float(rng.uniform(-0.02, 0.02)),
        saturation=float(rng.uniform(0.8, 1.2)),
        contrast=float(rng.uniform(0.7, 1.3)),
        brightness=float(rng.uniform(0.8, 1.2)),
        blur=float(rng.choice([0.0, 0.0, 0.4, 0.8])),
        noise=float(rng.uniform(0.0, 8.0)),
        jpeg_quality=int(rng.integers(50, 96)),
        background=str(rng.choice(["stripes", "gradient", "blocks", "noise"])),
        dark_clothing=float(rng.uniform(0.1, 0.6)),
    )


def _square(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    """The person in the middle of a square picture, as web photos frame people with context:
    CLIP-style pretraining crops squares, and a square crop of a tall re-ID box would cut off
    the head and the feet."""
    side = max(image.size)
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return canvas


@dataclass(frozen=True)
class CorpusSize:
    """How many people, styles and images per person the corpus draws."""

    people: int = 4000
    styles: int = 64
    images_per_person: int = 2


def write_corpus(folder: str, size: CorpusSize = CorpusSize(), seed: int = 0) -> str:
    """Writes ``folder/images/*.jpg`` and ``folder/captions.csv`` (filepath, title, then the
    `ATTRIBUTES` of the person shown) atomically; returns the CSV's path. The result depends only
    on (size, seed)."""
    rng = np.random.default_rng([seed, 7919])
    styles = [web_style(rng, i) for i in range(size.styles)]
    parent = osp.dirname(osp.abspath(folder))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".corpus-", dir=parent)
    try:
        os.makedirs(osp.join(tmp, "images"))
        rows = []
        for person in range(size.people):
            style = styles[rng.integers(len(styles))]
            ident, cam = _identity(rng, style), _camera(rng)
            for k in range(size.images_per_person):
                view = VIEWS[rng.choice(len(VIEWS), p=cam["views"])]
                image = _square(render(rng, ident, cam, style, view), cam["background"])
                name = f"{person:06d}_{k}.jpg"
                image.save(osp.join(tmp, "images", name), quality=style.jpeg_quality)
                path = osp.join(folder, "images", name)
                rows.append((path, caption(ident, view, rng), *attributes(ident).values()))
        with open(osp.join(tmp, "captions.csv"), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(("filepath", "title", *ATTRIBUTES))
            writer.writerows(rows)
        if osp.isdir(folder):
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return osp.join(folder, "captions.csv")
