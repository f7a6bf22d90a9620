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


class RunFailedError(FGDIError, RuntimeError):
    """One of several runs side by side (``benchmark --jobs N``) was refused or killed; the others
    were stopped, and the message names them all."""


class NonFiniteFeaturesError(FGDIError, FloatingPointError):
    """A model gave NaN or infinite features: any ranking of them would be meaningless."""


class NonFiniteLossError(FGDIError, FloatingPointError):
    """A NaN or Inf loss: training stops before the step is applied."""


class UnreadableImageError(FGDIError, OSError):
    """An image file that PIL cannot decode (corrupt, truncated, empty or not an image)."""


class WeightsUnavailableError(FGDIError, RuntimeError):
    """Weights that are neither cached nor downloadable from here."""


class ChecksumError(FGDIError, ValueError):
    """A file whose sha256 (or size) is not the one published for it."""


class UnknownWeightsError(ConfigError, KeyError):
    """A released-weights name the registry does not hold: a usage error (exit 2), as a bad key is."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class DatasetsNotReadyError(FGDIError, FileNotFoundError):
    """Some dataset of the run is missing or incomplete under the data root."""


class WriteError(FGDIError, OSError):
    """A file could not be written; the message says why and that the previous version is intact."""


class CheckpointError(FGDIError, ValueError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


class MissingExtraError(FGDIError, ImportError):
    """A command needs a package of an optional extra that is not installed; the message names the
    extra and the ``pip install`` that brings it."""
