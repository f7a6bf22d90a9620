import importlib

import torchreid

import torchreid_fgdi
from torchreid_fgdi import compat, registry


def test_datasets_registered_once_and_idempotently():
    table = compat.image_dataset_registry()
    before = dict(table)
    registry.register_all()
    registry.register_all()
    importlib.reload(registry).register_all()
    assert table == before
    for name in ("synth_a", "synth_b", "synth_c", "synth_d"):
        assert table[name] is torchreid_fgdi.data.IMAGE_DATASETS[name]


def test_torchreid_builds_registered_dataset_by_name(tiny_root):
    dataset = torchreid.data.datasets.init_image_dataset("synth_b", root=tiny_root, mode="query", verbose=False)
    assert len(dataset) == len(dataset.query) > 0
