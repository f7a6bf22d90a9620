"""The console scripts ``pip install`` creates, one per command (declared in ``pyproject.toml``).

Each command's ``main`` returns its results to Python callers; a console script passes what its
function returns to `sys.exit`, so these wrappers run the command and return nothing (exit 0).
"""

from __future__ import annotations


def train() -> None:
    """``torchreid-fgdi``: train and test from configs."""
    from .training import main  # each command imports only what it runs

    main()


def benchmark() -> None:
    """``torchreid-fgdi-benchmark``: models side by side, or a whole protocol."""
    from .benchmark import main

    main()


def search() -> None:
    """``torchreid-fgdi-search``: rank a folder of images against queries."""
    from .search import main

    main()


def export() -> None:
    """``torchreid-fgdi-export``: the image encoder as ONNX / TorchScript."""
    from .export import main

    main()


def weights() -> None:
    """``torchreid-fgdi-weights``: list or download released weights."""
    from .weights import main

    main()


def synthetic() -> None:
    """``torchreid-fgdi-synthetic``: write the synthetic benchmark."""
    from .data.synthetic.cli import main

    main()


def pretrain() -> None:
    """``torchreid-fgdi-pretrain``: pretrain the synthetic benchmark's tiny CLIP (once; cached)."""
    from .pretrain import main

    main()
