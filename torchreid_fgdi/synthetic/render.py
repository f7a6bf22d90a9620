"""A generated multi-domain re-ID benchmark, written to disk in Market-1501 layout.

Real re-ID datasets cannot be downloaded on every machine (CI, air-gapped clusters), yet every
code path should run on image files on disk. Here an identity is a set of visual attributes
(clothing colours and patterns, accessories, body shape); a camera fixes viewpoint, scale,
background and lighting; a domain fixes a population and a global style (palette, contrast,
blur, noise, background texture, resolution). A model trained on some domains therefore meets
a real shift on an unseen one, as in domain-generalizable re-ID.

Usage::

    python -m torchreid_fgdi.synthetic.render --root reid-data
"""

from __future__ import annotations

import colorsys
import dataclasses
import fcntl
import json
import os
import os.path as osp
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from ..data.readiness import refuse_symlink_loops

VIEWS = ("front", "back", "side")
PATTERNS = ("solid", "hstripes", "vstripes", "checks", "logo")
ACCESSORIES = ("none", "backpack", "shoulder_bag", "hat")
SKIN_TONES = ((241, 194, 167), (224, 172, 105), (198, 134, 66), (141, 85, 36), (255, 219, 172))


@dataclass(frozen=True)
class DomainStyle:
    """What every image of one domain shares: its population, cameras and global look."""

    name: str
    seed_offset: int
    size: tuple[int, int]  # stored (height, width)
    num_cams: int
    hue_shift: float  # rotation of every hue, in turns
    saturation: float
    contrast: float
    brightness: float
    blur: float  # Gaussian radius in pixels
    noise: float  # std of additive noise, 0-255 scale
    jpeg_quality: int
    background: str  # texture of the scene behind people
    dark_clothing: float  # share of the population wearing dark colours


DOMAIN_STYLES = {
    s.name: s
    for s in (
        DomainStyle("synth_a", 1, (128, 64), 6, 0.00, 1.00, 1.00, 1.00, 0.0, 2.0, 95, "stripes", 0.2),
        DomainStyle("synth_b", 2, (144, 56), 4, 0.04, 0.80, 0.85, 1.10, 0.6, 3.0, 85, "gradient", 0.4),
        DomainStyle("synth_c", 3, (112, 48), 5, -0.04, 1.15, 1.20, 0.90, 0.0, 6.0, 80, "blocks", 0.3),
        DomainStyle("synth_d", 4, (160, 64), 3, 0.10, 0.55, 0.75, 1.15, 1.1, 9.0, 45, "noise", 0.6),
        # For tuning only: neither a source nor the unseen target of the main job.
        DomainStyle("synth_v", 5, (136, 52), 4, -0.08, 0.65, 1.25, 0.85, 0.8, 7.0, 55, "blocks", 0.5),
    )
}


@dataclass(frozen=True)
class SyntheticSize:
    """How much data a domain gets; each domain's default is in `DEFAULT_SIZES`."""

    train_ids: int = 60
    test_ids: int = 40
    max_cams_per_id: int = 3
    max_images_per_cam: int = 4


# Each domain's default size, the one place it is set. The unseen target and the tuning domain get
# six times the sources' test identities (docs/synthetic.md: with 40, one query moved Rank-1 by 1.25
# points and the seed spread hid a 3-point effect); their training sets are the sources' size.
DEFAULT_SIZES = {
    **{name: SyntheticSize() for name in DOMAIN_STYLES},
    "synth_d": SyntheticSize(test_ids=240),
    "synth_v": SyntheticSize(test_ids=240),
}
# Test identities drawn before the training images (every domain's test split until the split grew):
# those past them are drawn after, so a bigger test split leaves the training set, and the first 40
# test identities with their images, bit-identical.
_TEST_IDS_DRAWN_FIRST = 40
# Bumped when the same (domain, size, seed) would give other images: a folder stamped with another
# version is regenerated.
GENERATOR_VERSION = 1
STAMP = "generated.json"  # in each domain's folder: what made it, written with it


def _color(rng: np.random.Generator, dark_share: float) -> tuple[int, int, int]:
    dark = rng.random() < dark_share
    value = rng.uniform(0.15, 0.45) if dark else rng.uniform(0.5, 1.0)
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.35, 1.0), value)
    return int(r * 255), int(g * 255), int(b * 255)


def _identity(rng: np.random.Generator, style: DomainStyle) -> dict:
    return {
        "shirt": _color(rng, style.dark_clothing),
        "pattern": PATTERNS[rng.integers(len(PATTERNS))],
        "pattern_color": _color(rng, 0.3),
        "pants": _color(rng, style.dark_clothing + 0.2),
        "shoes": _color(rng, 0.6),
        "hair": _color(rng, 0.9),
        "skin": SKIN_TONES[rng.integers(len(SKIN_TONES))],
        "long_sleeves": bool(rng.random() < 0.5),
        "shorts": bool(rng.random() < 0.25),
        "accessory": ACCESSORIES[rng.integers(len(ACCESSORIES))],
        "accessory_color": _color(rng, 0.4),
        "width": rng.uniform(0.8, 1.25),
        "height": rng.uniform(0.86, 1.0),
        "torso": rng.uniform(0.40, 0.50),
    }


def _camera(rng: np.random.Generator) -> dict:
    views = rng.dirichlet(np.full(len(VIEWS), 0.7))
    return {
        "views": views,
        "scale": rng.uniform(0.72, 0.95),
        "background": _color(rng, 0.4),
        "gain": rng.uniform(0.7, 1.25) * rng.uniform(0.85, 1.15, size=3),
        "tilt": rng.uniform(-0.06, 0.06),
    }


def _draw_background(draw: ImageDraw.ImageDraw, rng, style: DomainStyle, cam: dict, h: int, w: int):
    base = np.array(cam["background"])
    draw.rectangle((0, 0, w, h), fill=tuple(base))
    if style.background == "stripes":
        for y in range(0, h, max(4, h // 12)):
            shade = tuple(int(v) for v in np.clip(base * rng.uniform(0.75, 1.2), 0, 255))
            draw.rectangle((0, y, w, y + max(2, h // 24)), fill=shade)
    elif style.background == "gradient":
        for y in range(h):
            shade = tuple(int(v) for v in np.clip(base * (0.6 + 0.7 * y / h), 0, 255))
            draw.line((0, y, w, y), fill=shade)
    elif style.background == "blocks":
        for _ in range(6):
            x0, y0 = rng.integers(0, w), rng.integers(0, h)
            shade = tuple(int(v) for v in np.clip(base * rng.uniform(0.5, 1.5), 0, 255))
            draw.rectangle((x0, y0, x0 + w // 3, y0 + h // 5), fill=shade)
    else:  # "noise": speckled clutter
        for _ in range(60):
            x0, y0 = rng.integers(0, w), rng.integers(0, h)
            shade = tuple(int(v) for v in rng.integers(0, 256, size=3))
            draw.ellipse((x0, y0, x0 + 3, y0 + 3), fill=shade)


def _draw_torso_pattern(draw, ident: dict, box: tuple[float, float, float, float], view: str):
    x0, y0, x1, y1 = box
    color = ident["pattern_color"]
    pattern = ident["pattern"]
    if pattern == "hstripes":
        step = max(2.0, (y1 - y0) / 6)
        y = y0
        while y < y1:
            draw.rectangle((x0, y, x1, min(y1, y + step / 2)), fill=color)
            y += step
    elif pattern == "vstripes":
        step = max(2.0, (x1 - x0) / 4)
        x = x0
        while x < x1:
            draw.rectangle((x, y0, min(x1, x + step / 2), y1), fill=color)
            x += step
    elif pattern == "checks":
        sx, sy = (x1 - x0) / 4, (y1 - y0) / 4
        for i in range(4):
            for j in range(4):
                if (i + j) % 2 == 0:
                    draw.rectangle((x0 + i * sx, y0 + j * sy, x0 + (i + 1) * sx, y0 + (j + 1) * sy), fill=color)
    elif pattern == "logo" and view == "front":
        cx, cy = (x0 + x1) / 2, y0 + (y1 - y0) * 0.4
        r = (x1 - x0) * 0.22
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=color)


def _draw_person(draw, rng, ident: dict, cam: dict, view: str, h: int, w: int):
    scale = cam["scale"] * ident["height"] * rng.uniform(0.95, 1.05)
    body_h = h * scale
    top = h - body_h - h * rng.uniform(0.0, 0.05)
    cx = w / 2 + w * rng.uniform(-0.08, 0.08)
    half_w = w * 0.2 * ident["width"] * (0.65 if view == "side" else 1.0)
    head_r = body_h * 0.075
    neck = top + 2 * head_r
    hip = neck + body_h * ident["torso"]
    foot = top + body_h
    stride = rng.uniform(0.0, 0.6) * half_w * (1.6 if view == "side" else 0.7)

    if ident["accessory"] == "backpack" and view != "front":
        off = half_w * (0.9 if view == "side" else 0.0)
        bw = half_w * (0.8 if view == "back" else 0.5)
        draw.rectangle((cx - bw + off, neck + 2, cx + bw + off, hip - 2), fill=ident["accessory_color"])

    pants = ident["pants"]
    leg_w = max(1.0, half_w * 0.42)
    knee = hip + (foot - hip) * 0.5
    for sign in (-1, 1):
        hx = cx + sign * half_w * 0.45
        fx = hx + sign * stride
        draw.line((hx, hip, fx, foot), fill=pants, width=int(leg_w * 2))
        if ident["shorts"]:
            draw.line(((hx + fx) / 2, knee, fx, foot), fill=ident["skin"], width=int(leg_w * 1.6))
        draw.rectangle((fx - leg_w, foot - 3, fx + leg_w + 1, foot), fill=ident["shoes"])

    draw.rectangle((cx - half_w, neck, cx + half_w, hip), fill=ident["shirt"])
    _draw_torso_pattern(draw, ident, (cx - half_w, neck, cx + half_w, hip), view)
    arm = ident["shirt"] if ident["long_sleeves"] else ident["skin"]
    for sign in (-1, 1):
        ax = cx + sign * (half_w + max(1.0, half_w * 0.2))
        draw.line((ax, neck + 2, ax + sign * stride * 0.3, hip + 2), fill=arm, width=max(2, int(half_w * 0.35)))

    if ident["accessory"] == "shoulder_bag":
        side = 1 if view != "side" else -1
        draw.line((cx - side * half_w, neck, cx + side * half_w, hip), fill=ident["accessory_color"], width=2)
        draw.rectangle(
            (cx + side * half_w - 3, hip - 6, cx + side * half_w + 5, hip + 4), fill=ident["accessory_color"]
        )

    face = ident["hair"] if view == "back" else ident["skin"]
    draw.ellipse((cx - head_r, top, cx + head_r, top + 2 * head_r), fill=face)
    draw.chord((cx - head_r, top, cx + head_r, top + 2 * head_r), 180, 360, fill=ident["hair"])
    if ident["accessory"] == "hat":
        draw.rectangle(
            (cx - head_r * 1.3, top - 1, cx + head_r * 1.3, top + head_r * 0.6), fill=ident["accessory_color"]
        )


def _apply_light_and_style(img: Image.Image, rng, cam: dict, style: DomainStyle) -> Image.Image:
    arr = np.asarray(img, dtype=np.float32) * cam["gain"]
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if style.hue_shift:
        hsv = np.asarray(img.convert("HSV")).copy()
        hsv[..., 0] = (hsv[..., 0].astype(np.int32) + int(style.hue_shift * 256)) % 256
        img = Image.fromarray(hsv, "HSV").convert("RGB")
    img = ImageEnhance.Color(img).enhance(style.saturation)
    img = ImageEnhance.Contrast(img).enhance(style.contrast)
    img = ImageEnhance.Brightness(img).enhance(style.brightness)
    if style.blur:
        img = img.filter(ImageFilter.GaussianBlur(style.blur))
    if style.noise:
        arr = np.asarray(img, dtype=np.float32) + rng.normal(0, style.noise, size=(img.height, img.width, 3))
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return img


def render(
    rng: np.random.Generator, ident: dict, cam: dict, style: DomainStyle, view: str | None = None
) -> Image.Image:
    """One image of `ident` seen by `cam` in the domain's style (from `view`, else one the camera draws)."""
    h, w = style.size
    view = view or VIEWS[rng.choice(len(VIEWS), p=cam["views"])]
    img = Image.new("RGB", (w, h))
    draw = ImageDraw.Draw(img)
    _draw_background(draw, rng, style, cam, h, w)
    _draw_person(draw, rng, ident, cam, view, h, w)
    img = img.rotate(np.degrees(cam["tilt"]), resample=Image.BILINEAR, fillcolor=cam["background"])
    return _apply_light_and_style(img, rng, cam, style)


def _write_split(out_dir, rng, style, cams, pids, size: SyntheticSize, query_dir=None, frame: int = 0) -> int:
    """Writes every image of `pids`; with `query_dir`, one image per camera (two cameras) goes there.
    Frame numbers count on from `frame`; returns the last one."""
    os.makedirs(out_dir, exist_ok=True)
    if query_dir:
        os.makedirs(query_dir, exist_ok=True)
    for pid, ident in pids:
        n_cams = rng.integers(2, min(size.max_cams_per_id, style.num_cams) + 1)
        cam_ids = rng.choice(style.num_cams, size=n_cams, replace=False)
        query_cams = set(cam_ids[:2].tolist()) if query_dir else set()
        for c in cam_ids.tolist():
            n_imgs = rng.integers(2, size.max_images_per_cam + 1)
            for k in range(n_imgs):
                frame += int(rng.integers(1, 40))
                name = f"{pid:04d}_c{c + 1}s1_{frame:06d}_{k + 1:02d}.jpg"
                target = query_dir if (k == 0 and c in query_cams) else out_dir
                img = render(rng, ident, cams[c], style)
                img.save(osp.join(target, name), quality=style.jpeg_quality)
    return frame


def generate_domain(root: str, name: str, size: SyntheticSize | None = None, seed: int = 0) -> str:
    """Writes domain `name` under `root/name` (`size`: else its default), atomically: a crash leaves
    no half-written domain.

    Returns the domain's folder. The result depends only on (name, size, seed), which the folder's
    `STAMP` records.
    """
    style, size = DOMAIN_STYLES[name], size or DEFAULT_SIZES[name]
    rng = np.random.default_rng([seed, style.seed_offset])
    cams = [_camera(rng) for _ in range(style.num_cams)]
    first = min(size.test_ids, _TEST_IDS_DRAWN_FIRST)
    idents = [_identity(rng, style) for _ in range(size.train_ids + first)]
    train = list(zip(range(1, size.train_ids + 1), idents[: size.train_ids]))
    test = list(zip(range(size.train_ids + 1, size.train_ids + first + 1), idents[size.train_ids :]))

    refuse_symlink_loops(root, [name])
    final = osp.join(root, name)
    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}-", dir=root)
    try:
        _write_split(osp.join(tmp, "bounding_box_train"), rng, style, cams, train, size)
        query, gallery = osp.join(tmp, "query"), osp.join(tmp, "bounding_box_test")
        frame = _write_split(gallery, rng, style, cams, test, size, query)
        if size.test_ids > first:
            more = [(size.train_ids + first + 1 + i, _identity(rng, style)) for i in range(size.test_ids - first)]
            _write_split(gallery, rng, style, cams, more, size, query, frame)
        _write_stamp(tmp, name, size, seed)
        try:
            os.replace(tmp, final)
        except OSError:
            if not osp.isdir(final):
                raise
            shutil.rmtree(tmp)  # another process (e.g. another torchrun rank) wrote the same domain first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def generate(
    root: str,
    names: Sequence[str] = tuple(DOMAIN_STYLES),
    size: SyntheticSize | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> list[str]:
    """Generates the named domains under `root` (`size`: every one's, else each one's default); one
    already there is kept (and named) unless `overwrite`, which writes the new one aside and swaps it
    in, so a crash keeps the old one, or unless it is out of date and the defaults are asked for
    (`ensure_domain`)."""
    written = []
    for name in names:
        folder = osp.join(root, name)
        wanted = size or DEFAULT_SIZES[name]
        if not osp.isdir(folder):
            written.append(generate_domain(root, name, wanted, seed))
        elif overwrite:
            written.append(_replace_domain(root, name, wanted, seed))
        elif (wanted, seed) == (DEFAULT_SIZES[name], 0) and _outdated(_made(folder), name):
            written.append(ensure_domain(root, name))
        else:
            print(
                f"=> {folder} exists: kept as it is, not regenerated with these sizes and seed "
                "(--overwrite replaces it)"
            )
    return written


def _stamp(name: str, size: SyntheticSize, seed: int) -> dict:
    return {
        "generator": GENERATOR_VERSION,
        "domain": name,
        "size": dataclasses.asdict(size),
        "seed": seed,
        # Made by this version's defaults: replaced once they change. Any other size or seed was asked
        # for on purpose (torchreid-fgdi-synthetic's options) and is kept.
        "default": size == DEFAULT_SIZES[name] and seed == 0,
    }


def _write_stamp(folder: str, name: str, size: SyntheticSize, seed: int) -> None:
    with open(osp.join(folder, STAMP), "w") as f:
        json.dump(_stamp(name, size, seed), f, indent=2)
        f.write("\n")


def _settings(size: SyntheticSize, seed: int) -> str:
    return ", ".join(f"{key} {value}" for key, value in dataclasses.asdict(size).items()) + f", seed {seed}"


def _made(folder: str) -> tuple[str, int, SyntheticSize, int, bool] | None:
    """(domain, generator version, size, seed, custom) from the domain folder's stamp; None without
    a readable one."""
    try:
        with open(osp.join(folder, STAMP)) as f:
            stamp = json.load(f)
        size, seed = SyntheticSize(**stamp["size"]), int(stamp["seed"])
        return str(stamp["domain"]), stamp["generator"], size, seed, stamp["default"] is not True
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _outdated(made: tuple | None, name: str) -> tuple[str, SyntheticSize, int] | None:
    """Why the domain `made` (`_made`) is not what the generator makes now, and the size and seed to
    make it with; None if it is (a custom size or seed included: kept as made)."""
    default = DEFAULT_SIZES[name]
    if made is None:
        return f"it has no readable {STAMP} (it was made before the generator recorded its settings)", default, 0
    domain, version, size, seed, custom = made
    if domain != name:
        return f"its {STAMP} says it was generated as {domain}", default, 0
    if version != GENERATOR_VERSION:
        redo = (size, seed) if custom else (default, 0)
        return f"it was made by generator version {version}, this is version {GENERATOR_VERSION}", *redo
    if custom or (size, seed) == (default, 0):
        return None
    return f"it was made with an older version's defaults ({_settings(size, seed)})", default, 0


def ensure_domain(root: str, name: str) -> str:
    """`root/name` as the generator makes it now: generated when missing, and regenerated (written
    aside, then swapped in) when made by an older version's defaults or before folders recorded
    their settings, so stale data never gives a normal-looking number. A domain generated with
    other sizes or another seed on purpose is used as it is, with a line saying so."""
    folder = osp.join(root, name)
    made = _made(folder) if osp.isdir(folder) else None
    if made and _outdated(made, name) is None:
        if made[-1]:
            print(f"=> {folder}: generated on purpose with {_settings(*made[2:4])}, not the default size")
        return folder
    refuse_symlink_loops(root, [name])
    os.makedirs(root, exist_ok=True)
    lock = os.open(root, os.O_RDONLY)  # the data root itself: one process (run, torchrun rank) writes, no lock file
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not osp.isdir(folder):
            print(f'=> Generating synthetic domain "{name}" in "{folder}"')
            return generate_domain(root, name, DEFAULT_SIZES[name])
        outdated = _outdated(_made(folder), name)
        if outdated:
            why, size, seed = outdated
            print(f"=> {folder} is out of date: {why}; regenerating it with {_settings(size, seed)}")
            _replace_domain(root, name, size, seed)
    finally:
        os.close(lock)
    return folder


def _replace_domain(root: str, name: str, size: SyntheticSize, seed: int) -> str:
    """`root/name` written anew beside the old one, then swapped in; the old one is deleted last."""
    folder = osp.join(root, name)
    aside = tempfile.mkdtemp(prefix=f".{name}-replacing-", dir=root)
    old = osp.join(aside, "old")
    try:
        fresh = generate_domain(aside, name, size, seed)
        os.replace(folder, old)
        try:
            os.replace(fresh, folder)
        except OSError:
            os.replace(old, folder)
            raise
    except BaseException:
        if not osp.isdir(old):  # a failed put-back leaves the old domain here: never delete it
            shutil.rmtree(aside, ignore_errors=True)
        raise
    shutil.rmtree(aside, ignore_errors=True)
    return folder
