"""One way in for CLIP weights: an open_clip tag or a local file, resolved before anything is built.

A tag is looked up in the local caches first; if it is not there and its host cannot be reached
within a few seconds, the error says how to pass a local file instead of waiting out
open_clip's and huggingface_hub's retries.
"""

from __future__ import annotations

import copy
import os
import zipfile
from collections.abc import Callable

import open_clip
import torch
from torch import nn

from ..errors import ConfigError
from ..utils.checkpoint import read_checkpoint
from ..utils.digest import sha256sum
from .hub import (
    REGISTRY,
    WeightsUnavailableError,
    check_weights,
    fetch_by_hand,
    get_weights,
    host_reachable,
    local_weights,
    registered_name,
)

# name -> maker of weights this package makes rather than fetches (the synthetic benchmark's tiny CLIP,
# registered by `integration.registry`), so every path that builds a model reads the name alike.
_MADE_WEIGHTS: dict[str, Callable[[], str]] = {}
_READY_WEIGHTS: dict[str, Callable[[], str | None]] = {}


def register_made_weights(name: str, make: Callable[[], str], ready: Callable[[], str | None] = lambda: None) -> None:
    """`pretrained=name` then means the file `make()` returns (made, or found cached, on first use);
    `ready()` is that file when it is already there (shipped or cached), else None, without making it."""
    _MADE_WEIGHTS[name] = make
    _READY_WEIGHTS[name] = ready


def ready_made_weights(weights: str) -> str | None:
    """The file behind made weights `weights` if it is already there (`register_made_weights`), else None."""
    return _READY_WEIGHTS[weights]()


def made_weights(weights: object) -> bool:
    """Whether `weights` names weights this package makes on first use (`register_made_weights`)."""
    return isinstance(weights, str) and weights in _MADE_WEIGHTS


_JIT_META_KEYS = ("input_resolution", "context_length", "vocab_size")
_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".tar")
_NOT_PICKLES = (".safetensors", ".npz", ".npy")  # the files open_clip reads without torch.load


def _hf_location(tag_cfg: dict) -> tuple[str, list[str]] | None:
    if not tag_cfg.get("hf_hub"):
        return None
    repo, filename = os.path.split(tag_cfg["hf_hub"])
    filename = filename or open_clip.constants.HF_WEIGHTS_NAME
    if filename == open_clip.constants.HF_WEIGHTS_NAME:
        return repo, [open_clip.constants.HF_SAFE_WEIGHTS_NAME, filename]
    return repo, [filename]


def _cached_copy(tag_cfg: dict, cache_dir: str | None) -> str | None:
    hf = _hf_location(tag_cfg)
    if hf:
        from huggingface_hub import try_to_load_from_cache

        for filename in hf[1]:
            found = try_to_load_from_cache(hf[0], filename, cache_dir=cache_dir)
            if isinstance(found, str):
                return found
    if tag_cfg.get("url"):
        path = os.path.join(cache_dir or os.path.expanduser("~/.cache/clip"), os.path.basename(tag_cfg["url"]))
        if os.path.isfile(path):
            return path
    return None


def _tag_cfg(arch: str, weights: str) -> dict:
    tag_cfg = open_clip.get_pretrained_cfg(arch, weights)
    if not tag_cfg:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        raise ConfigError(
            f"{weights!r} is neither a file nor an open_clip tag for {arch} (tags: {', '.join(tags) or 'none'})"
        )
    return tag_cfg


def find_weights(arch: str | dict, weights: str, cache_dir: str | None = None) -> str | None:
    """The local file behind `weights` for `arch` (see `resolve_weights`), or None when it is not on
    this machine but can be had: its host answers (downloaded on first use), or this package makes it
    (`made_weights`); nothing is downloaded or made here.

    A tag for a file of `hub.REGISTRY` (OpenAI's weights: the ``pretrained=True`` of every fgdi
    variant but ``fgdi_tiny``) is read from the registry's path first, the one its offline error
    names, then from open_clip's caches."""
    if os.path.isfile(weights):
        return weights
    if made_weights(weights):
        return None  # made on first use, by `resolve_weights`
    if os.sep in weights or weights.endswith(_FILE_SUFFIXES):
        raise FileNotFoundError(f"CLIP weights file {weights!r} does not exist")
    if isinstance(arch, dict):
        raise FileNotFoundError(f"a config-dict CLIP takes weights from a local file only, got {weights!r}")
    if weights in REGISTRY:
        return check_weights(weights, cache_dir)
    tag_cfg = _tag_cfg(arch, weights)
    registered = registered_name(tag_cfg.get("url", ""))
    found = (registered and local_weights(registered, cache_dir)) or _cached_copy(tag_cfg, cache_dir)
    if found:
        return found
    hf = _hf_location(tag_cfg)
    if hf:
        from huggingface_hub import constants

        source, probe = f"{constants.ENDPOINT}/{hf[0]}", constants.ENDPOINT
    else:
        source = probe = tag_cfg["url"]
    if host_reachable(probe):
        return None
    if registered:  # the registry's advice: the file, and the path this lookup reads first
        also = " (as pretrained=True and torchreid's model.pretrained True mean)" if weights == "openai" else ""
        fetch = f"{fetch_by_hand(registered, cache_dir)}; the tag {weights!r}{also} reads it from there"
    else:
        fetch = f"download one where there is internet ({source})"
    raise WeightsUnavailableError(
        f"cannot fetch CLIP weights {weights!r} for {arch}: {probe} is unreachable (offline?) and they are "
        f"not in the local cache: {fetch}. Pass a local file instead, e.g. build_model(..., pretrained="
        f"'/path/to/{arch}.pt') or `fgdi.clip_weights: /path/to/{arch}.pt` in a config. Accepted files: "
        "OpenAI's JIT archive, an open_clip checkpoint (.bin/.pt/.safetensors) or a CLIP state dict."
    )


def resolve_weights(arch: str | dict, weights: str, cache_dir: str | None = None) -> str:
    """The local file behind `weights`: a file path, a name of weights this package makes
    (`register_made_weights`), a name in `torchreid_fgdi.models.hub.REGISTRY`
    (downloaded and checked once), or an open_clip tag for `arch` (a config-dict `arch` takes a file only)."""
    found = find_weights(arch, weights, cache_dir)
    if found:
        return found
    if made_weights(weights):
        return _MADE_WEIGHTS[weights]()
    if weights in REGISTRY:
        return get_weights(weights, cache_dir)
    return open_clip.download_pretrained(_tag_cfg(arch, weights), cache_dir=cache_dir)


def tag_uses_quick_gelu(arch: str | dict, weights: str | None) -> bool:
    """QuickGELU unless `weights` is an open_clip tag trained with GELU (OpenAI's weights and the
    authors' code use QuickGELU; a file or a registered name is assumed to be OpenAI's, and so is a
    config-dict CLIP's). A name that is no tag of `arch` is a file, even one not on this machine (a
    checkpoint's recorded config names the file it was trained from): it gives no GELU."""
    if isinstance(arch, dict) or not weights or os.path.isfile(weights) or weights in REGISTRY:
        return True
    tag = open_clip.get_pretrained_cfg(arch, weights)
    return bool(tag.get("quick_gelu", False)) if tag else True


def _is_torchscript(path: str) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


# sha256 of TorchScript archives besides OpenAI's published CLIP ones that may be loaded (add yours).
TRUSTED_TORCHSCRIPT: set[str] = set()


def _check_trusted_archive(path: str) -> None:
    """Loading a TorchScript archive runs the TorchScript code inside it, so only archives known by
    their sha256 are loaded: OpenAI's published CLIP files and those in `TRUSTED_TORCHSCRIPT`."""
    digest = sha256sum(path)
    if digest not in TRUSTED_TORCHSCRIPT | {entry.sha256 for entry in REGISTRY.values()}:
        raise ConfigError(
            f"{path} is a TorchScript archive that is not one of OpenAI's published CLIP files (sha256 {digest}); "
            "loading it would run the code it contains. Save its weights as a state dict on a machine you trust "
            "(torch.save(torch.jit.load(path).state_dict(), 'clip.pt')) and pass that file, or, if you trust "
            "this archive, add its sha256 to torchreid_fgdi.models.clip_weights.TRUSTED_TORCHSCRIPT"
        )


def _load_file(clip: nn.Module, path: str) -> None:
    if _is_torchscript(path):
        _check_trusted_archive(path)
        state = torch.jit.load(path, map_location="cpu").state_dict()
        rebuilt = {name for name, _ in clip.named_buffers()} - set(clip.state_dict())  # e.g. attn_mask
        for key in (*_JIT_META_KEYS, *rebuilt):
            state.pop(key, None)
        clip.load_state_dict(state)
    else:
        if not path.endswith(_NOT_PICKLES):  # read by torch.load: damage or code refused in one line first
            read_checkpoint(path, mmap=True)
        open_clip.load_checkpoint(clip, path, strict=True)


def create_clip(
    arch: str | dict, weights: str | None = None, quick_gelu: bool | None = None, cache_dir: str | None = None
) -> tuple[nn.Module, object]:
    """An ``open_clip.CLIP`` and its tokenizer.

    Args:
        arch: an open_clip model name (``'ViT-B-16'``, ``'RN50'``...) or an open_clip model config dict.
        weights: ``None`` (random init), an open_clip tag, or a local file.
        quick_gelu: ``None`` follows the weights (see `tag_uses_quick_gelu`).
        cache_dir: where tags are downloaded (open_clip's default when ``None``).
    """
    if isinstance(arch, dict):
        name, model_cfg = "custom CLIP config", copy.deepcopy(arch)
    else:
        name, model_cfg = arch, open_clip.get_model_config(arch)
        if model_cfg is None:
            raise ValueError(f"unknown open_clip model {arch!r}; known: {', '.join(open_clip.list_models())}")
    path = resolve_weights(arch, weights, cache_dir) if weights else None
    if quick_gelu is None:
        quick_gelu = tag_uses_quick_gelu(arch, weights)
    model_cfg.pop("custom_text", None)
    clip = open_clip.CLIP(**model_cfg, quick_gelu=quick_gelu)
    if path:
        try:
            _load_file(clip, path)
        except (RuntimeError, AssertionError) as err:  # open_clip asserts on some size mismatches
            details = " ".join(line.strip() for line in str(err).splitlines()[:3])[:400]
            raise ConfigError(
                f"{path} does not hold {name} weights ({details}); pick the fgdi model whose backbone matches "
                "the file (see torchreid_fgdi.models.VARIANTS)"
            ) from err
    tokenizer = open_clip.get_tokenizer(arch) if isinstance(arch, str) else open_clip.SimpleTokenizer()
    return clip.eval(), tokenizer
