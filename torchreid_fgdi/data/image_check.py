"""Finding the images of a dataset that cannot be decoded, for ``data.skip_unreadable_images``."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from ..compat import read_image


def _problem(path: str) -> str | None:
    try:
        read_image(path)
    except OSError as err:
        return str(err)
    return None


def unreadable_images(paths, workers: int = 2) -> dict[str, str]:
    """{path: why} for every path PIL cannot fully decode (missing, empty, truncated, not an image).

    Decoding releases the GIL, so threads scan in parallel.
    """
    paths = sorted(set(paths))
    with ThreadPoolExecutor(max(workers, 1)) as pool:
        problems = pool.map(_problem, paths)
    return {path: why for path, why in zip(paths, problems) if why}
