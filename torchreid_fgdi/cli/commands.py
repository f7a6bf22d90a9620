"""The console scripts ``pip install`` creates, one per command (declared in ``pyproject.toml``).

Each runs its command's ``main`` through `refusals.run_command` and returns the exit status the
console script passes to `sys.exit`: 0, or 1 / 2 after a refusal printed as one ``error:`` line.
"""

from __future__ import annotations

from .refusals import run_command


def train(argv: list[str] | None = None) -> int:
    """``torchreid-fgdi``: train and test from configs."""
    from .train import main  # each command imports only what it runs

    return run_command(main, argv)


def benchmark(argv: list[str] | None = None) -> int:
    """``torchreid-fgdi-benchmark``: models side by side, or a whole protocol."""
    from .benchmark import main

    return run_command(main, argv)


def search(argv: list[str] | None = None) -> int:
    """``torchreid-fgdi-search``: rank a folder of images against queries."""
    from ..tools.search import main

    return run_command(main, argv)


def export(argv: list[str] | None = None) -> int:
    """``torchreid-fgdi-export``: the image encoder as ONNX / TorchScript."""
    from ..tools.export import main

    return run_command(main, argv)


def weights(argv: list[str] | None = None) -> int:
    """``torchreid-fgdi-weights``: list or download released weights."""
    from .weights import main

    return run_command(main, argv)


def synthetic(argv: list[str] | None = None) -> int:
    """``torchreid-fgdi-synthetic``: write the synthetic benchmark."""
    from .synthetic import main

    return run_command(main, argv)


def pretrain(argv: list[str] | None = None) -> int:
    """``torchreid-fgdi-pretrain``: pretrain the synthetic benchmark's tiny CLIP (once; cached)."""
    from ..synthetic.pretrain import main

    return run_command(main, argv)
