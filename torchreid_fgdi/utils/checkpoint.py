"""Reading a checkpoint file, with an error that names the file and what is wrong with it.

`torch.load` on a damaged file raises `EOFError`, a zip-reader error or an unpickling error from
deep inside PyTorch, none of which say which file or what to do; weights that are NaN load
silently and then give a normal-looking table of random rankings.
"""

from __future__ import annotations

import os.path as osp
import pickle
import zipfile
from collections.abc import Mapping

import torch

from ..errors import CheckpointError


def read_checkpoint(path: str, mmap: bool = False) -> dict:
    """The checkpoint at `path` (a dict), loaded with PyTorch's safe loader on the CPU (`mmap`: its
    tensors read from the file only when touched, to look at a few entries of a large file)."""
    if not osp.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist (or is not a file)")
    if osp.getsize(path) == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): its save was cut short; use an earlier one")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # a damaged legacy-format file can fail anywhere inside the unpickler
        if isinstance(err, pickle.UnpicklingError) and zipfile.is_zipfile(path):
            first = str(err).strip().splitlines()[0]
            raise CheckpointError(
                f"checkpoint {path} holds Python objects beyond tensors and plain data, which the safe loader "
                f"refuses ({first}); re-save its state_dict on the machine that made it"
            ) from err
        detail = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise CheckpointError(
            f"checkpoint {path} is not a readable PyTorch file (truncated, damaged or not a checkpoint: "
            f"{type(err).__name__}: {detail}); use an earlier one"
        ) from err
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a dict of weights")
    return state


def non_finite(state: Mapping) -> list[str]:
    """The keys of `state` whose tensor holds a NaN or an infinity."""
    return [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and not v.isfinite().all()]


def check_finite(state: Mapping, where: str) -> None:
    """Refuses weights with NaN or infinite values: every feature they give is meaningless."""
    bad = non_finite(state)
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise CheckpointError(
            f"{where} holds non-finite (NaN / Inf) weights in {shown}: it comes from a diverged run; "
            "use an earlier checkpoint"
        )
