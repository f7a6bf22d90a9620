"""Configs: torchreid's yacs keys plus ``fgdi.*``, read from YAML and the command line, checked, then
read once into `RunSettings`.

Why a package of its own: the keys and their defaults (`defaults`), reading files (`loading`),
rejecting a bad config early (`checks`) and turning a config into typed settings (`settings`) are
four jobs with one owner each. It sits above `engine`: it builds the engine's settings, and the
engine never reads a config.
"""

from ..errors import ConfigError
from .checks import TORCHREID_KEYS, unread_keys, unread_warnings
from .defaults import get_default_config
from .loading import load_config, load_config_text, read_config_file
from .settings import EVALUATION_DIR, RunSettings, output_dir

__all__ = [
    "EVALUATION_DIR",
    "ConfigError",
    "RunSettings",
    "TORCHREID_KEYS",
    "get_default_config",
    "load_config",
    "load_config_text",
    "output_dir",
    "read_config_file",
    "unread_keys",
    "unread_warnings",
]
