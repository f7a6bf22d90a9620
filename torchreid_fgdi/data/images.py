"""Reading images: the robust reader every loader uses (torchreid's own is patched to it), a quick
look at every file before any work (or a full decode for ``data.skip_unreadable_images``), which
also hashes the training images' bytes for the run's data fingerprint."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Collection, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from PIL import Image, ImageOps

from ..errors import UnreadableImageError
from ..utils.digest import sha256sum

_READ_ATTEMPTS = 3
_LISTED = 10  # unreadable files named in a refusal
# The bytes a whole file of each format ends with (JPEG's end-of-image marker may be followed
# by a little padding or camera data, so it is looked for near the end).
_ENDINGS = {"JPEG": (b"\xff\xd9", 4096), "PNG": (b"IEND", 64)}


def read_image(path: str) -> Image.Image:
    """torchreid's `read_image`, but a file that cannot be decoded fails with its path.

    torchreid retries forever on any IOError ("Will redo. Don't worry. Just chill."), so one
    corrupt or truncated file hangs training inside a DataLoader worker. A few retries cover a
    flaky network file system; then the error names the file. Grayscale, RGBA, CMYK and palette
    images are converted to RGB, as torchreid does, after turning the image as its EXIF orientation
    says (as the CLIP-FGDI authors read images; torchreid does not). `integration.compat` installs
    it as torchreid's `read_image`.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f'image "{path}" does not exist')
    if not stat.S_ISREG(os.stat(path).st_mode):  # opening a named pipe would wait forever
        raise UnreadableImageError(f'"{path}" is not a regular file (a named pipe, device or folder): remove it')
    for attempt in range(_READ_ATTEMPTS):
        try:
            with Image.open(path) as img:
                return ImageOps.exif_transpose(img).convert("RGB")
        except Image.DecompressionBombError as err:
            raise UnreadableImageError(f'image "{path}" is implausibly large ({err}): replace or remove it') from err
        except OSError as err:
            if attempt == _READ_ATTEMPTS - 1:
                raise UnreadableImageError(f'cannot decode image "{path}" ({err}): replace or remove the file') from err
            time.sleep(0.1)


def _problem(path: str) -> str | None:
    try:
        read_image(path)
    except OSError as err:
        return str(err)
    return None


def _quick_problem(path: str) -> str | None:
    """Why `path` cannot be a whole image, from its type, header and last bytes (no decoding)."""
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            return "not a regular file (a named pipe, device or folder)"
        if os.path.getsize(path) == 0:
            return "empty file"
        with Image.open(path) as img:
            kind = img.format
        ending = _ENDINGS.get(kind)
        if ending:
            with open(path, "rb") as f:
                f.seek(max(0, os.path.getsize(path) - ending[1]))
                if ending[0] not in f.read():
                    return f"truncated {kind} (its end marker is missing)"
    except Image.DecompressionBombError as err:
        return f"implausibly large: {err}"
    except OSError as err:
        return f"not an image PIL can read ({err})"
    return None


def _scan(check, paths, workers: int, hashed: Collection[str] = ()) -> tuple[dict[str, str], dict[str, str]]:
    """One look at each file: ({path: why} for those `check` finds a problem with, {path: sha256 of its
    bytes} for the others that are in `hashed`; the file is still in the page cache from the check)."""
    paths, hashed = sorted(set(paths)), set(hashed)

    def look(path: str) -> tuple[str | None, str | None]:
        why = check(path)
        return why, sha256sum(path) if why is None and path in hashed else None

    with ThreadPoolExecutor(max(workers, 1)) as pool:
        looks = list(pool.map(look, paths))
    problems = {path: why for path, (why, _) in zip(paths, looks) if why}
    return problems, {path: digest for path, (_, digest) in zip(paths, looks) if digest}


def unreadable_images(paths: Iterable[str], workers: int = 2) -> dict[str, str]:
    """{path: why} for every path PIL cannot fully decode (missing, empty, truncated, not an image).

    Decoding releases the GIL, so threads scan in parallel.
    """
    return _scan(_problem, paths, workers)[0]


def damaged_images(paths: Iterable[str], workers: int = 2) -> dict[str, str]:
    """{path: why} for files that are surely not whole images (seconds for a dataset, unlike a full decode)."""
    return _scan(_quick_problem, paths, workers)[0]


@dataclass(frozen=True)
class CheckedImages:
    """What the look at every image before any work found."""

    unreadable: dict[str, str]  # {path: why} of the images left out (data.skip_unreadable_images)
    digests: dict[str, str]  # {path: sha256 of its bytes} of the readable images asked for


def check_images(
    item_lists: list[list], workers: int, skip_unreadable: bool = False, hashed: Collection[str] = ()
) -> CheckedImages:
    """Looks once at every image of the (path, ...) item lists before any work, and hashes the bytes of
    those in `hashed` (the training images: the run's data fingerprint reads their contents, so an image
    changed under the same name is seen). With `skip_unreadable`, the images that cannot be decoded are
    dropped from the lists and reported; otherwise files that are surely not whole images are refused."""
    if skip_unreadable:
        return _drop_unreadable(item_lists, workers, hashed)
    return CheckedImages({}, _refuse_damaged(item_lists, workers, hashed))


def _refuse_damaged(item_lists: list[list], workers: int, hashed: Collection[str]) -> dict[str, str]:
    """Fails before any work on a file of the item lists that is surely not a whole image (a named pipe,
    an empty or truncated file), instead of in a DataLoader worker, perhaps after all of training; the
    digests of `hashed`."""
    bad, digests = _scan(_quick_problem, [item[0] for items in item_lists for item in items], workers, hashed)
    if bad:
        listed = "\n  ".join(f"{p}: {why}" for p, why in list(bad.items())[:_LISTED])
        raise UnreadableImageError(
            f"{len(bad)} image file(s) cannot be read, nothing was started:\n  {listed}\n"
            "Replace or remove them, or set data.skip_unreadable_images True to leave them out"
        )
    return digests


def _drop_unreadable(item_lists: list[list], workers: int, hashed: Collection[str]) -> CheckedImages:
    """Removes every image that cannot be decoded from the item lists (in place, so the loaders reading
    them see it) and reports them."""
    print("=> data.skip_unreadable_images: decoding every image once")
    bad, digests = _scan(_problem, [item[0] for items in item_lists for item in items], workers, hashed)
    for items in item_lists:
        items[:] = [item for item in items if item[0] not in bad]
    if bad:
        print(f"=> Skipped {len(bad)} unreadable image(s):\n  " + "\n  ".join(f"{p}: {w}" for p, w in bad.items()))
    return CheckedImages(bad, digests)
