"""Downloads: the registry of known weights, a reachability check, and fetches checked against a sha256.

A leaf module, as timm's ``_hub`` and open_clip's ``pretrained`` are: everything that downloads
(`models.clip_weights`, the ``torchreid-fgdi-weights`` command) imports it, and it imports none
of them.

`REGISTRY` names the files this package knows how to fetch (URL, size, sha256). `weights_path(name)`
is the one place a registered file lives (torch's cache, ``$TORCH_HOME/hub/checkpoints``, under
the registry's file name): `get_weights(name)` reads it from there or downloads it there, and
every offline message names that path, so a file put there by hand is the one that is read. A download is
fetched with gdown (Google Drive links and plain URLs) into a temporary file beside its
destination, and renamed into place only when its size and sha256 match; a wrong or truncated
file is deleted and named in the error, and an existing file is never overwritten. Offline, the
error says which file to fetch by hand and where to put it, within seconds instead of after
the download libraries' retries.
"""

from __future__ import annotations

import os
import os.path as osp
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass

import torch

from ..errors import ChecksumError, UnknownWeightsError, WeightsUnavailableError
from ..utils import atomic
from ..utils.digest import sha256sum

PROBE_TIMEOUT = 4.0


def host_reachable(url: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """Any HTTP answer counts; the probe runs in a thread because DNS lookups ignore socket timeouts."""
    answered = threading.Event()

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout)
            answered.set()
        except urllib.error.HTTPError:
            answered.set()
        except (OSError, ValueError):
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return answered.is_set()


def _verify(path: str, sha256: str, size: int | None, what: str) -> None:
    if size is not None and os.path.getsize(path) != size:
        raise ChecksumError(f"{what} has {os.path.getsize(path)} bytes, expected {size}")
    got = sha256sum(path)
    if got != sha256.lower():
        raise ChecksumError(f"{what} has sha256 {got}, expected {sha256.lower()}")


def by_hand(url: str, path: str, sha256: str) -> str:
    """What every error about a file that cannot be downloaded from here says to do, in one wording:
    fetch it elsewhere and put it where the download would have gone."""
    return f"download {url} by hand and put it at {osp.abspath(path)} (sha256 {sha256})"


def _existing(path: str, sha256: str, size: int | None) -> str | None:
    """`path` if a file is there, checked against `sha256`; None if there is none."""
    if not osp.isfile(path):
        return None
    try:
        _verify(path, sha256, size, path)
    except ChecksumError as err:
        raise ChecksumError(f"{err}: a different or damaged file; move it away to download again") from err
    return path


def _check_reachable(url: str, path: str, sha256: str) -> None:
    if not host_reachable(url):
        raise WeightsUnavailableError(f"cannot reach {url} from here (offline?): {by_hand(url, path, sha256)}")


def download(url: str, path: str, sha256: str, size: int | None = None, quiet: bool = False) -> str:
    """`path`, downloaded from `url` unless already there; both checked against `sha256`."""
    if _existing(path, sha256, size):
        return path
    _check_reachable(url, path, sha256)
    manual = by_hand(url, path, sha256)

    def fetch(tmp: str) -> None:
        import gdown  # slow to import; only a real download needs it

        try:
            got = gdown.download(url, tmp, quiet=quiet)
        except Exception as err:  # gdown raises requests', urllib3's and its own errors
            raise WeightsUnavailableError(f"downloading {url} failed ({err}): {manual}") from err
        if got is None or not osp.isfile(tmp):
            raise WeightsUnavailableError(f"downloading {url} gave no file: {manual}")
        try:
            _verify(tmp, sha256, size, f"the download of {url}")
        except ChecksumError as err:
            raise ChecksumError(f"{err}; it was deleted, nothing was written to {path}. Retry, or {manual}") from err

    return atomic.write_atomically(path, fetch)


@dataclass(frozen=True)
class ReleasedWeights:
    url: str
    sha256: str
    filename: str
    size: int | None
    description: str
    trained: bool = False  # trained CLIP-FGDI weights, not a backbone the models start from


def _openai(checksum: str, filename: str, description: str) -> ReleasedWeights:
    """OpenAI publishes each CLIP archive under its own sha256."""
    url = f"https://openaipublic.azureedge.net/clip/models/{checksum}/{filename}"
    return ReleasedWeights(url, checksum, f"openai-clip-{filename}", None, description)


# CLIP-FGDI's authors have not released trained weights ("coming soon" in their README); their
# entries belong here, with URL, size and sha256, once published.
REGISTRY: dict[str, ReleasedWeights] = {
    "clip-vit-b16-openai": _openai(
        "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f",
        "ViT-B-16.pt",
        "OpenAI CLIP ViT-B/16 (JIT archive): the backbone of fgdi / fgdi_vit_b16",
    ),
    "clip-vit-b32-openai": _openai(
        "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
        "ViT-B-32.pt",
        "OpenAI CLIP ViT-B/32: fgdi_vit_b32",
    ),
    "clip-vit-l14-openai": _openai(
        "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836",
        "ViT-L-14.pt",
        "OpenAI CLIP ViT-L/14: fgdi_vit_l14",
    ),
    "clip-rn50-openai": _openai(
        "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762",
        "RN50.pt",
        "OpenAI CLIP RN50: fgdi_rn50",
    ),
    "clip-rn101-openai": _openai(
        "8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599",
        "RN101.pt",
        "OpenAI CLIP RN101: fgdi_rn101",
    ),
}


def cache_dir() -> str:
    """torch's checkpoint cache, where torchreid and torchvision keep downloaded weights too."""
    return osp.join(torch.hub.get_dir(), "checkpoints")


def weights_path(name: str, folder: str | None = None) -> str:
    """Where registered weights `name` are kept: `folder`, else torch's cache."""
    if name not in REGISTRY:
        raise UnknownWeightsError(f"no released weights named {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return osp.join(folder or cache_dir(), REGISTRY[name].filename)


def registered_name(url: str) -> str | None:
    """The registry's name for the file at `url`, if it holds that file."""
    return next((name for name, entry in REGISTRY.items() if entry.url == url), None)


def local_weights(name: str, folder: str | None = None) -> str | None:
    """The copy of registered weights `name` at `weights_path`, checked against its sha256; None if
    there is none."""
    path = weights_path(name, folder)
    return _existing(path, REGISTRY[name].sha256, REGISTRY[name].size)


def fetch_by_hand(name: str, folder: str | None = None) -> str:
    """What to do when registered weights `name` cannot be downloaded from here: `by_hand`, naming
    the path `local_weights` reads."""
    entry = REGISTRY[name]
    return by_hand(entry.url, weights_path(name, folder), entry.sha256)


def check_weights(name: str, folder: str | None = None) -> str | None:
    """Registered weights `name` are to be had without downloading anything yet: their checked local
    copy, or None when it is missing but its host answers (downloaded on first use); refused with
    `fetch_by_hand`'s advice when neither."""
    local = local_weights(name, folder)
    if local is None:
        _check_reachable(REGISTRY[name].url, weights_path(name, folder), REGISTRY[name].sha256)
    return local


def get_weights(name: str, folder: str | None = None, quiet: bool = False) -> str:
    """The local path of registered weights `name`, downloaded and checked on first use."""
    path = weights_path(name, folder)
    entry = REGISTRY[name]
    return download(entry.url, path, entry.sha256, entry.size, quiet)
