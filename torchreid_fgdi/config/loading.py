"""Reading configs: YAML files (with ``_BASE_``) and command-line overrides over the defaults.

The result is a checked, frozen yacs node; `settings.RunSettings.from_config` reads it once into
what a run uses. `load_config_text` reads back the ``cfg.dump()`` a checkpoint records.
"""

from __future__ import annotations

import os.path as osp
from collections.abc import Sequence

from yacs.config import CfgNode as CN

from ..errors import ConfigError
from ..utils import config_yaml
from .checks import check_config, flat_items, typed_overrides
from .defaults import get_default_config


def _merged(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def read_config_file(path: str, _reading: tuple[str, ...] = ()) -> dict:
    """A YAML config as a dict; ``_BASE_: other.yaml`` (or a list, relative to the file) is read
    first and overridden, so a variant config holds only what differs."""
    real = osp.realpath(path)
    if real in _reading:
        chain = " -> ".join([*_reading, real])
        raise ConfigError(f"_BASE_ cycle: {chain}; a config cannot be its own base")
    data = config_yaml.parse_mapping(config_yaml.read_text(path), path)
    bases = data.pop("_BASE_", [])
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"_BASE_ in {path} must be a file name or a list of file names, got {bases!r}")
    merged: dict = {}
    for base in bases:
        merged = _merged(merged, read_config_file(osp.join(osp.dirname(path), base), (*_reading, real)))
    return _merged(merged, data)


def load_config(config_files: str | Sequence[str] = (), opts: Sequence[str] = ()) -> CN:
    """Defaults, then each YAML file in order (e.g. a model config, then a protocol config), then
    `KEY VALUE` pairs; checked (`checks.check_config`) and frozen. ``{model}`` in ``data.save_dir``
    becomes ``model.name``, so one protocol config serves every model."""
    cfg = get_default_config()
    for config_file in [config_files] if isinstance(config_files, str) else config_files:
        if config_file:
            cfg.merge_from_other_cfg(typed_overrides(cfg, flat_items(read_config_file(config_file)), config_file))
    opts = list(opts)
    if len(opts) % 2:
        raise ConfigError(f"command-line overrides must be KEY VALUE pairs, got an odd number: {opts}")
    cfg.merge_from_other_cfg(typed_overrides(cfg, dict(zip(opts[0::2], opts[1::2])), "the command line"))
    cfg.data.save_dir = cfg.data.save_dir.replace("{model}", cfg.model.name)
    check_config(cfg)
    cfg.freeze()
    return cfg


def load_config_text(text: str, where: str = "a checkpoint's config") -> CN:
    """A config dumped with ``cfg.dump()`` (as checkpoints record it). Keys and types are checked;
    what depends on the machine that trained (CUDA, datasets registered there) is not."""
    cfg = get_default_config()
    cfg.merge_from_other_cfg(typed_overrides(cfg, flat_items(config_yaml.parse_mapping(text, where)), where))
    cfg.freeze()
    return cfg
