"""Checkpoint files, in one place: reading (with an error that names the file and what is wrong
with it), writing (atomically: the FGDI engine's files and torchreid's ``model.pth.tar-<epoch>``),
the config a checkpoint records, and finding a folder's newest intact checkpoint.

`torch.load` on a damaged file raises `EOFError`, a zip-reader error or an unpickling error from
deep inside PyTorch, none of which say which file or what to do; weights that are NaN load
silently and then give a normal-looking table of random rankings. A file written in place and cut
short by a kill is the newest one, the one a resume picks: every write here is atomic.
"""

from __future__ import annotations

import os.path as osp
import pickle
import re
import warnings
import zipfile
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from ..errors import CheckpointError
from . import atomic

_CODE = re.compile(r"GLOBAL ([\w.]+)")  # what the safe loader's refusal says a pickle would have called
_SAFE_LOADER_REFUSAL = "Weights only load failed"  # how torch.load(weights_only=True)'s refusal opens


def _a_folder(path: str) -> CheckpointError:
    return CheckpointError(
        f"checkpoint {path} is a folder, not a file: name the checkpoint file itself, or move the folder "
        "away if it stands where a run saves its checkpoints"
    )


def _loader_said(err: Exception) -> str:
    """What `torch.load` found wrong, in one line. The safe loader's refusal opens with advice to load
    the file with ``weights_only=False``, which runs any code it holds: its reason alone is given."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if lines and lines[0].startswith(_SAFE_LOADER_REFUSAL):
        reasons = [line for line in lines[1:] if not line.startswith(("Please file an issue", "Check the doc"))]
        return "PyTorch's safe loader: " + (
            reasons[0].removeprefix("WeightsUnpickler error:").strip() if reasons else "refused"
        )
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def read_checkpoint(path: str, mmap: bool = False) -> dict:
    """The checkpoint at `path` (a dict), loaded with PyTorch's safe loader on the CPU (`mmap`: its
    tensors read from the file only when touched, to look at a few entries of a large file; a file in
    PyTorch's legacy format, as older torchreid runs saved, cannot be mapped and is read whole)."""
    if osp.isdir(path):
        raise _a_folder(path)
    if not osp.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist (or is not a file)")
    if osp.getsize(path) == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): its save was cut short; use an earlier one")
    try:
        with warnings.catch_warnings():  # torch's note on a pickle protocol it may not read: the error says it
            warnings.filterwarnings("ignore", "Detected pickle protocol")
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
    except Exception as err:  # a damaged legacy-format file can fail anywhere inside the unpickler
        code = _CODE.search(str(err))
        if isinstance(err, pickle.UnpicklingError) and (code or zipfile.is_zipfile(path)):
            named = f"it names {code.group(1)}" if code else _loader_said(err)
            raise CheckpointError(
                f"checkpoint {path} holds Python objects beyond tensors and plain data ({named}), which the safe "
                "loader refuses: loading them could run code; re-save its state_dict on the machine that made it"
            ) from err
        raise CheckpointError(
            f"checkpoint {path} is not a readable PyTorch file (truncated, damaged or not a checkpoint: "
            f"{_loader_said(err)}); use an earlier one"
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


def write_checkpoint(state: dict, path: str, *also: str) -> str:
    """Writes `state` to `path` atomically, then makes each of `also` another name of that file
    (each atomically, in order: a kill in between leaves the earlier names written). Returns `path`."""
    atomic.save(state, path)
    for other in also:
        atomic.link(path, other)
    return path


def save_torchreid_checkpoint(
    state: dict, save_dir: str, is_best: bool = False, remove_module_from_keys: bool = False
) -> None:
    """torchreid's `save_checkpoint` (same files, same printout), written atomically.

    torchreid writes ``model.pth.tar-<epoch>`` in place, so a run killed during a save leaves a
    truncated newest checkpoint, the one a resume picks.
    """
    if remove_module_from_keys:
        state["state_dict"] = {k.removeprefix("module."): v for k, v in state["state_dict"].items()}
    fpath = osp.join(save_dir, f"model.pth.tar-{state['epoch']}")
    write_checkpoint(state, fpath)
    print(f'Checkpoint saved to "{fpath}"')
    if is_best:
        write_checkpoint(state, osp.join(save_dir, "model-best.pth.tar"))


NO_CONFIG_FIX = "pass --config-file <the training config> (config_file= in Python)"


def recorded_config_text(state: Mapping, path: str, fix: str = NO_CONFIG_FIX) -> str:
    """The config (YAML text) the checkpoint `state`, read from `path`, records; `CheckpointError`
    naming the file and `fix` if it records none (torchreid's own checkpoints do not)."""
    text = state.get("config") if isinstance(state, Mapping) else None
    if not text:
        raise CheckpointError(f"{path} does not record its config (the checkpoints of this package's runs do): {fix}")
    return text


def newest_intact(paths: Iterable[str], key: Callable[[str, dict], Any], skipping: str = "model.resume auto") -> str:
    """Of the checkpoint files `paths` (those that do not exist are passed over), the one with the
    greatest ``key(path, state)``, or '' if none is intact. A damaged file, or one `key` cannot read
    (KeyError / ValueError), is skipped with a line saying so, prefixed by `skipping`. A folder under
    one of the names is refused: the run's next save under that name would fail."""
    found = []
    for path in paths:
        if osp.isdir(path):
            raise _a_folder(path)
        if not osp.isfile(path):
            continue
        try:
            found.append((key(path, read_checkpoint(path, mmap=True)), path))
        except (CheckpointError, KeyError, ValueError) as err:
            print(f"=> {skipping}: skipping {path}: {err}")
    return max(found)[1] if found else ""
