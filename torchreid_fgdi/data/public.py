"""Public datasets torchreid mis-handles for the cross-domain protocols, registered under torchreid's names."""

from __future__ import annotations

import os.path as osp
import re

import torchreid

from .folders import glob_with_literal_folders

_SYSU_NAME = re.compile(r"^p(\d+)_s\d+_\d+\.jpg$")


class CUHKSYSU(torchreid.data.ImageDataset):
    """CUHK-SYSU person boxes (``cuhksysu/cropped_images/p<pid>_s<scene>_<n>.jpg``), a training source.

    Replaces torchreid's class, which numbers identities in the iteration order of a set of
    strings (it changes with ``PYTHONHASHSEED``, so labels, classifier rows and prompt vectors
    differ between processes and a resumed run would train against other labels), reads files in
    file-system order, and gives an empty dataset, not an error, when the folder is missing.
    Every image is a training image (one camera); query and gallery hold one image, as torchreid's,
    and `combineall` adds nothing (``_train_only``), so that image does not come back as a new identity.
    """

    _train_only = True

    dataset_dir = "cuhksysu"

    def __init__(self, root: str = "", **kwargs):
        self.root = osp.abspath(osp.expanduser(root))
        self.data_dir = osp.join(self.root, self.dataset_dir, "cropped_images")
        self.check_before_run([self.data_dir])
        paths = sorted(glob_with_literal_folders(osp.join(self.data_dir, "*.jpg")))
        pids = []
        for path in paths:
            match = _SYSU_NAME.match(osp.basename(path))
            if match is None:
                raise ValueError(f'cannot parse "{path}": expected a CUHK-SYSU crop name like p11422_s16929_1.jpg')
            pids.append(int(match.group(1)))
        if not paths:
            raise RuntimeError(f'no images in "{self.data_dir}": expected CUHK-SYSU crops p<pid>_s<scene>_<n>.jpg')
        label = {pid: i for i, pid in enumerate(sorted(set(pids)))}
        train = [(path, label[pid], 0) for path, pid in zip(paths, pids)]
        super().__init__(train, train[:1], train[:1], **kwargs)


class CUHK02(torchreid.data.ImageDataset):
    """CUHK02 (``cuhk02/Dataset/P1..P5/cam1|cam2/<pid>_<n>.png``): P1-P4 train, P5 cam1 query / cam2 gallery.

    Replaces torchreid's class, which numbers each pair's identities in the iteration order of a
    set of strings (it changes with ``PYTHONHASHSEED``) and reads files in file-system order; the
    split, the camera ids (one per camera folder, 0..9) and the counts are torchreid's.
    """

    dataset_dir = "cuhk02"
    cam_pairs = ("P1", "P2", "P3", "P4", "P5")
    test_cam_pair = "P5"

    def __init__(self, root: str = "", **kwargs):
        self.root = osp.abspath(osp.expanduser(root))
        self.data_dir = osp.join(self.root, self.dataset_dir, "Dataset")
        self.check_before_run(
            [osp.join(self.data_dir, pair, cam) for pair in self.cam_pairs for cam in ("cam1", "cam2")]
        )
        train, query, gallery = [], [], []
        camid = 0
        for pair in self.cam_pairs:
            cams = [
                sorted(glob_with_literal_folders(osp.join(self.data_dir, pair, cam, "*.png")))
                for cam in ("cam1", "cam2")
            ]
            if pair == self.test_cam_pair:
                query = [(path, int(self._pid(path)), camid) for path in cams[0]]
                gallery = [(path, int(self._pid(path)), camid + 1) for path in cams[1]]
            else:
                pids = sorted({self._pid(path) for paths in cams for path in paths})
                offset = len({pid for _, pid, _ in train})
                label = {pid: offset + i for i, pid in enumerate(pids)}
                for c, paths in enumerate(cams):
                    train += [(path, label[self._pid(path)], camid + c) for path in paths]
            camid += 2
        super().__init__(train, query, gallery, **kwargs)

    @staticmethod
    def _pid(path: str) -> str:
        return osp.basename(path).split("_")[0]


PUBLIC_DATASETS = {"cuhksysu": CUHKSYSU, "cuhk02": CUHK02}
