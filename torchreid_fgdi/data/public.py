"""Public datasets torchreid mis-handles for the cross-domain protocols, registered under torchreid's names."""

from __future__ import annotations

import glob
import os.path as osp
import re

import torchreid

_SYSU_NAME = re.compile(r"^p(\d+)_s\d+_\d+\.jpg$")


class CUHKSYSU(torchreid.data.ImageDataset):
    """CUHK-SYSU person boxes (``cuhksysu/cropped_images/p<pid>_s<scene>_<n>.jpg``), a training source.

    Replaces torchreid's class, which numbers identities in the iteration order of a set of
    strings (it changes with ``PYTHONHASHSEED``, so labels, classifier rows and prompt vectors
    differ between processes and a resumed run would train against other labels), reads files in
    file-system order, and gives an empty dataset, not an error, when the folder is missing.
    Every image is a training image (one camera); query and gallery hold one image, as torchreid's.
    """

    dataset_dir = "cuhksysu"

    def __init__(self, root: str = "", **kwargs):
        self.root = osp.abspath(osp.expanduser(root))
        self.data_dir = osp.join(self.root, self.dataset_dir, "cropped_images")
        self.check_before_run([self.data_dir])
        paths = sorted(glob.glob(osp.join(self.data_dir, "*.jpg")))
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


PUBLIC_DATASETS = {"cuhksysu": CUHKSYSU}
