"""torchreid image datasets for the generated domains, read from `root` like any other.

A missing domain is generated on first use, as torchreid downloads a missing public dataset, and
one made with an older version's defaults is made anew (`render.ensure_domain`).
"""

from __future__ import annotations

import os.path as osp

import torchreid

from ..data.folders import glob_with_literal_folders, parse_market_name
from .render import DOMAIN_STYLES, ensure_domain


class SyntheticDomain(torchreid.data.ImageDataset):
    """One generated domain (see `torchreid_fgdi.synthetic.render`) in Market-1501 layout.

    Args:
        root (str): folder holding the domain folders, e.g. ``reid-data``.

    Examples::

        import torchreid, torchreid_fgdi
        datamanager = torchreid.data.ImageDataManager(
            root='reid-data', sources=['synth_a', 'synth_b', 'synth_c'], targets='synth_d',
            height=64, width=32)
    """

    domain = ""

    def __init__(self, root: str = "", **kwargs):
        self.root = osp.abspath(osp.expanduser(root))
        self.dataset_dir = osp.join(self.root, self.domain)
        ensure_domain(self.root, self.domain)
        self.train_dir = osp.join(self.dataset_dir, "bounding_box_train")
        self.query_dir = osp.join(self.dataset_dir, "query")
        self.gallery_dir = osp.join(self.dataset_dir, "bounding_box_test")
        self.check_before_run([self.train_dir, self.query_dir, self.gallery_dir])
        train = self.process_dir(self.train_dir, relabel=True)
        query = self.process_dir(self.query_dir)
        gallery = self.process_dir(self.gallery_dir)
        super().__init__(train, query, gallery, **kwargs)

    @staticmethod
    def process_dir(dir_path: str, relabel: bool = False) -> list[tuple[str, int, int]]:
        items = [
            (path, *parse_market_name(path)) for path in sorted(glob_with_literal_folders(osp.join(dir_path, "*.jpg")))
        ]
        if not items:
            raise RuntimeError(f'no images in "{dir_path}": expected Market-1501 .jpg files there')
        if relabel:
            label = {pid: i for i, pid in enumerate(sorted({pid for _, pid, _ in items}))}
            items = [(path, label[pid], camid) for path, pid, camid in items]
        return items


# One torchreid dataset class per generated domain, registered under the domain's name (synth_a, ...).
SYNTHETIC_DATASETS = {
    name: type(name, (SyntheticDomain,), {"domain": name, "__doc__": SyntheticDomain.__doc__}) for name in DOMAIN_STYLES
}
