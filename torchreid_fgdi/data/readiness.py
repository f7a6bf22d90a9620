"""Is every dataset of a run on disk, in the layout its torchreid class reads? Checked before any work.

torchreid itself would try a dead download URL (or fail deep inside parsing) for a missing
folder; here a run with a missing part does not start, and the message shows the expected
layout and where the dataset is obtained.
"""

from __future__ import annotations

import errno
import os
import os.path as osp
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from ..errors import DatasetsNotReadyError
from .name_checks import (
    DUKEMTMCREID_DIR,
    MARKET1501_DIR,
    MARKET_STYLE_FOLDERS,
    MSMT17_LISTS,
    MSMT17_RELEASES,
    NAME_CHECKS,
)

_SHOWN = 10


@dataclass(frozen=True)
class Layout:
    """`variants`: alternative lists of paths under ``root`` (any one complete list is enough)."""

    variants: tuple[tuple[str, ...], ...]
    source: str


def _one(*paths: str) -> tuple[tuple[str, ...], ...]:
    return (paths,)


_MSMT17 = tuple(
    (
        f"msmt17/{release}/{train}",
        f"msmt17/{release}/{test}",
        *(f"msmt17/{release}/list_{name}.txt" for name in MSMT17_LISTS),
    )
    for release, train, test in MSMT17_RELEASES
)

LAYOUTS: dict[str, Layout] = {
    "market1501": Layout(
        _one(*(f"{MARKET1501_DIR}/{d}" for d in MARKET_STYLE_FOLDERS)),
        "Market-1501-v15.09.15.zip, https://zheng-lab.cecs.anu.edu.au/Project/project_reid.html",
    ),
    "dukemtmcreid": Layout(
        _one(*(f"{DUKEMTMCREID_DIR}/{d}" for d in MARKET_STYLE_FOLDERS)),
        "DukeMTMC-reID.zip (withdrawn by its authors: use a copy you are licensed to use)",
    ),
    "msmt17": Layout(_MSMT17, "MSMT17_V1 or MSMT17_V2 on request from https://www.pkuvmc.com/dataset.html"),
    "cuhk03": Layout(
        _one(
            "cuhk03/cuhk03_release/cuhk-03.mat",
            "cuhk03/cuhk03_new_protocol_config_detected.mat",
            "cuhk03/cuhk03_new_protocol_config_labeled.mat",
        ),
        "cuhk03_release.zip from https://www.ee.cuhk.edu.hk/~xgwang/CUHK_identification.html; the two "
        "new-protocol .mat files from https://github.com/zhunzhong07/person-re-ranking (evaluation/data/CUHK03)",
    ),
    "cuhksysu": Layout(
        _one("cuhksysu/cropped_images"),
        "CUHK-SYSU (https://github.com/ShuangLI59/person_search), person boxes cropped to "
        "cropped_images/p<pid>_s<scene>_<n>.jpg",
    ),
    "cuhk02": Layout(
        _one(*(f"cuhk02/Dataset/P{i}/{cam}" for i in range(1, 6) for cam in ("cam1", "cam2"))),
        "CUHK02 on request from https://www.ee.cuhk.edu.hk/~xgwang/CUHK_identification.html",
    ),
    "prid": Layout(
        _one("prid2011/prid_2011/single_shot/cam_a", "prid2011/prid_2011/single_shot/cam_b"),
        "prid_2011.zip, https://www.tugraz.at/institute/icg/research/team-bischof/lrs/downloads/prid11",
    ),
    "grid": Layout(
        _one(
            "grid/underground_reid/probe",
            "grid/underground_reid/gallery",
            "grid/underground_reid/features_and_partitions.mat",
        ),
        "underground_reid.zip, https://personal.ie.cuhk.edu.hk/~ccloy/downloads_qmul_underground_reid.html",
    ),
    "viper": Layout(
        _one("viper/VIPeR/cam_a", "viper/VIPeR/cam_b"), "VIPeR.v1.0.zip, https://vision.soe.ucsc.edu/node/178"
    ),
    "ilids": Layout(
        _one("ilids/i-LIDS_Pedestrian/Persons"), "i-LIDS_Pedestrian.tgz, https://www.eecs.qmul.ac.uk/~jason/data/"
    ),
}


def _present(root: str, path: str) -> bool:
    full = osp.join(root, path)
    return osp.isfile(full) or (osp.isdir(full) and any(os.scandir(full)))


def symlink_loop(path: str) -> str | None:
    """The first folder on `path` (`path` included) that is a symbolic link leading back to itself, if any."""
    parts = osp.abspath(path).split(os.sep)
    for end in range(2, len(parts) + 1):
        folder = os.sep.join(parts[:end])
        try:
            os.stat(folder)
        except OSError as err:
            return folder if err.errno == errno.ELOOP else None
    return None


def refuse_symlink_loops(root: str, folders: Iterable[str] = ()) -> None:
    """Refuses a data root, or a dataset's folder (`folders`, under `root`), that is a symbolic link
    leading back to itself, before any work: creating or reading it would fail as "File exists" or
    "Not a directory", naming a temporary folder."""
    root_fix = "point the link at the folder holding the datasets, or set data.root / --root to that folder"
    folder_fix = "point the link at the dataset's folder, or remove it (a synthetic domain is then generated again)"
    checked = [(root, "data.root", root_fix), *((osp.join(root, f), "dataset folder", folder_fix) for f in folders)]
    for path, what, fix in checked:
        loop = symlink_loop(path)
        if loop:
            raise DatasetsNotReadyError(
                f"{what} {loop} is a symlink loop (a link that leads back to itself), nothing was started: {fix}"
            )


def dataset_folders(names: Iterable[str], generated: Collection[str] = ()) -> list[str]:
    """The folders under the data root that the datasets `names` are read from (`generated`: as in
    `check_datasets`; a dataset of unknown layout has none)."""
    folders = []
    for name in names:
        if name in generated:
            folders.append(name)
        elif name in LAYOUTS:
            folders += [path for variant in LAYOUTS[name].variants for path in variant]
    return folders


def check_datasets(root: str, names: Iterable[str], generated: Collection[str] = ()) -> dict[str, str]:
    """{name: 'found' | 'generated on first use' | 'not checked (unknown layout)' | 'missing: <paths>'}.

    `generated`: the names of datasets that make themselves in ``root/<name>`` when missing (the
    synthetic domains, `synthetic.SYNTHETIC_DATASETS`).
    """
    status = {}
    for name in dict.fromkeys(names):
        if name in generated:
            status[name] = "found" if osp.isdir(osp.join(root, name)) else "generated on first use"
        elif name not in LAYOUTS:
            status[name] = "not checked (unknown layout)"
        else:
            missing = [[p for p in variant if not _present(root, p)] for variant in LAYOUTS[name].variants]
            best = min(missing, key=len)
            status[name] = "found" if not best else "missing: " + ", ".join(best)
    return status


def malformed_files(root: str, status: dict[str, str]) -> dict[str, list[str]]:
    """{name: problems} for the found datasets (`check_datasets` status) whose file names or list
    files torchreid would misread."""
    found = [n for n, state in status.items() if state == "found" and n in NAME_CHECKS]
    problems = {name: NAME_CHECKS[name](root) for name in found}
    return {name: listed for name, listed in problems.items() if listed}


def ensure_datasets(root: str, names: Iterable[str], generated: Collection[str] = ()) -> None:
    """Prints each dataset's status; raises `DatasetsNotReadyError` if any is missing (with layouts and
    sources), is a symlink loop, or has files torchreid would misread (each named). `generated`: as in
    `check_datasets`."""
    names = list(names)
    refuse_symlink_loops(root, dataset_folders(names, generated))
    status = check_datasets(root, names, generated)
    width = max(len(n) for n in status)
    print(f"=> Datasets under {osp.abspath(root)}")
    for name, state in status.items():
        print(f"  {name:<{width}}  {state}")
    missing = [n for n, state in status.items() if state.startswith("missing")]
    if missing:
        parts = []
        for name in missing:
            layouts = " or ".join("{" + ", ".join(v) + "}" for v in LAYOUTS[name].variants)
            parts.append(f"- {name}: expected under {osp.abspath(root)}: {layouts}\n  obtain: {LAYOUTS[name].source}")
        raise DatasetsNotReadyError(
            f"{len(missing)} dataset(s) not ready, nothing was started (set data.root / --root to the folder "
            "holding them):\n" + "\n".join(parts)
        )
    malformed = malformed_files(root, status)
    if malformed:
        shown = [f"- {name}: {len(p)} problem(s)\n    " + "\n    ".join(p[:_SHOWN]) for name, p in malformed.items()]
        raise DatasetsNotReadyError(
            "files torchreid would misread or crash on, nothing was started:\n"
            + "\n".join(shown)
            + ("\n  (first problems only)" if any(len(p) > _SHOWN for p in malformed.values()) else "")
        )
