"""The optional extras: what each brings, and the refusal a command gives without it.

``pip install torchreid-fgdi`` installs what importing the plugin and training need. Three
features need more, each from its extra (``pip install "torchreid-fgdi[<extra>]"``; ``all`` brings
the three, and ``scripts/env.sh`` installs everything):

- ``pretrain``: ``open_clip_torch[training]`` (open_clip_train with pandas, webdataset, ...), to
  pretrain the synthetic benchmark's tiny CLIP;
- ``search``: ``faiss-cpu``, faiss's exact top-k for searches over 20,000+ gallery images;
- ``export``: ``onnx``, ``onnxscript`` and ``onnxruntime``, for ``--format onnx``.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from ..errors import MissingExtraError

PACKAGE = "torchreid-fgdi"


def install_command(extra: str) -> str:
    return f'pip install "{PACKAGE}[{extra}]"'


def require(extra: str, modules: Sequence[str], needed_by: str, otherwise: str = "") -> None:
    """Imports each of `modules`; the first that is missing refuses with the extra that brings it.

    `needed_by` says what needs them, e.g. ``"the ONNX export (--format onnx)"``; `otherwise`, if
    given, what works without them (the message ends with it).
    """
    for module in modules:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            missing = err.name or module
            raise MissingExtraError(
                f"{needed_by} needs {missing}, which is not installed: it comes with the {extra} extra, "
                f"{install_command(extra)}" + (f"; {otherwise}" if otherwise else ""),
                name=missing,
            ) from err


def available(module: str) -> bool:
    """Whether `module` imports (a missing optional dependency is False, not an error)."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError:
        return False
    return True
