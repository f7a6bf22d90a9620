"""TODO"""

from .defaults import *  # noqa: F403
from .defaults import get_default_config, load_config, load_config_text  # noqa: F401
