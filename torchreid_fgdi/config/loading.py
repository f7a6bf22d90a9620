"""Reading configs: YAML files (with ``_BASE_``) and command-line overrides over the defaults.

The result is a checked, frozen yacs node; `settings.RunSettings.from_config` reads it once into
what a run uses. `load_config_text` reads back the ``cfg.dump()`` a checkpoint records.

A config is named by its path, or, for the configs installed with the package (``configs/`` in
a clone links to them), by its name there: ``synthetic/fgdi_tiny``, with or without ``.yaml``
or a leading ``configs/``. A file at the path always wins; `resolve_config_file` is the one rule,
for every command's ``--config-file`` and for ``_BASE_``.
"""

from __future__ import annotations

import difflib
import glob
import os
import os.path as osp
from collections.abc import Sequence

from yacs.config import CfgNode as CN

from ..errors import ConfigError
from ..utils import config_yaml
from .checks import check_config, flat_items, typed_overrides
from .defaults import get_default_config

PACKAGED_CONFIGS = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), "configs")  # package data
LIST_COMMAND = "torchreid-fgdi --list-configs"


def packaged_config_names() -> list[str]:
    """Every packaged config by the name that reads it: ``models/fgdi``, ``synthetic/fgdi_tiny``, ..."""
    paths = glob.glob(osp.join(glob.escape(PACKAGED_CONFIGS), "**", "*.yaml"), recursive=True)
    return sorted(osp.splitext(osp.relpath(path, PACKAGED_CONFIGS))[0].replace(os.sep, "/") for path in paths)


def _packaged_name(name: str) -> str:
    """`name` as a packaged config's name: no ``configs/`` in front, no suffix ('' if it cannot be one)."""
    parts = [part for part in osp.normpath(name).split(os.sep) if part not in ("", ".")]
    if osp.isabs(name) or ".." in parts:
        return ""
    parts = parts[1:] if parts[:1] == ["configs"] else parts
    return "/".join(parts).removesuffix(".yaml").removesuffix(".yml")


def _closest(name: str) -> list[str]:
    """Up to three packaged names like `name`: those with its file name first, then difflib's."""
    names = packaged_config_names()
    wanted = _packaged_name(name) or osp.basename(name)
    same_file = [n for n in names if n.rsplit("/", 1)[-1] == wanted.rsplit("/", 1)[-1]]
    alike = difflib.get_close_matches(wanted, names, n=3, cutoff=0.6)
    return list(dict.fromkeys([*same_file, *alike]))[:3]


def resolve_config_file(name: str, base_of: str = "") -> str:
    """The config file `name` means: the file at `name` (for a ``_BASE_``, relative to the config
    `base_of` that names it) if there is one, else the packaged config it names (`_packaged_name`);
    refused in one line with the closest packaged names otherwise."""
    path = osp.join(osp.dirname(base_of), name) if base_of else name
    if osp.isfile(path):
        return path
    packaged = osp.join(PACKAGED_CONFIGS, _packaged_name(name) + ".yaml")
    if _packaged_name(name) and osp.isfile(packaged):
        return packaged
    if base_of:
        missing = f"_BASE_ {name} of {base_of}: {path} does not exist"
    else:
        missing = f"config file {name} does not exist" + ("" if osp.isabs(name) else f" in {os.getcwd()}")
    closest = _closest(name)
    hint = f"closest: {', '.join(closest)}; " if closest else ""
    raise ConfigError(
        f"{missing}; the configs installed with the package are read by name, e.g. synthetic/fgdi_tiny "
        f"({hint}{LIST_COMMAND} lists them)"
    )


def packaged_note(name: str, path: str) -> str:
    """The line that says a config name was read from the package ('' if `name` was the file itself)."""
    return "" if path == name else f"=> Config {name}: the one installed with the package, {path}"


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
        merged = _merged(merged, read_config_file(resolve_config_file(base, path), (*_reading, real)))
    return _merged(merged, data)


def load_config(config_files: str | Sequence[str] = (), opts: Sequence[str] = ()) -> CN:
    """Defaults, then each YAML file in order (e.g. a model config, then a protocol config), then
    `KEY VALUE` pairs; checked (`checks.check_config`) and frozen. ``{model}`` in ``data.save_dir``
    becomes ``model.name``, so one protocol config serves every model. A file may be a packaged
    config's name (`resolve_config_file`); a line says which file was read then."""
    cfg = get_default_config()
    for config_file in [config_files] if isinstance(config_files, str) else config_files:
        if config_file:
            path = resolve_config_file(config_file)
            note = packaged_note(config_file, path)
            if note:
                print(note)
            cfg.merge_from_other_cfg(typed_overrides(cfg, flat_items(read_config_file(path)), config_file))
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
