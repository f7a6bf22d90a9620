"""Training and test precision: one rule for which precision runs where."""

from __future__ import annotations

import contextlib

import torch

from ..errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_AUTOCAST = {"fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_precision(precision: str, device: torch.device, key: str = "fgdi.precision") -> str:
    """``auto``: fp16 autocast (with a grad scaler) on CUDA, fp32 elsewhere; fp16 needs CUDA."""
    if precision not in PRECISIONS:
        raise ConfigError(f"{key} must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(f"{key} fp16 needs CUDA; use bf16 or fp32 on CPU")
    return precision


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast to `precision` (a resolved one); fp32 runs as written."""
    dtype = _AUTOCAST.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
