"""The base of the plugin's exceptions, and the config error every layer raises.

`except FGDIError` catches every failure this package diagnoses itself (a bad setting, a damaged
checkpoint, an unusable run folder, ...), and nothing else. Each error keeps the built-in class
it always had as a second base, so existing ``except ValueError`` / ``except OSError`` still work.
This module imports nothing from the package: the data layer and the config layer both use it.
"""

from __future__ import annotations


class FGDIError(Exception):
    """An error this package diagnosed; the message says what is wrong and how to fix it."""


class ConfigError(FGDIError, ValueError):
    """A setting (config key, command-line override or builder argument) that cannot work; the
    message names the key and the fix."""


class RunFolderError(FGDIError, RuntimeError):
    """The run cannot use this folder or this checkpoint; nothing was written."""
