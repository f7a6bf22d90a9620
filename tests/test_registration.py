import importlib

import pytest
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


def test_models_registered_once_and_idempotently():
    table = compat.model_registry()
    registry.register_all()
    for name, factory in torchreid_fgdi.models.MODEL_FACTORIES.items():
        assert table[name] is factory
    assert "osnet_ain_x0_25" in table


def test_build_model_still_builds_torchreid_models_and_rejects_unknown_names():
    model = torchreid.models.build_model("osnet_x0_25", 7, loss="triplet", pretrained=False)
    assert model.classifier.out_features == 7
    with pytest.raises(KeyError, match="Unknown model: fgdi_huge.*fgdi_tiny"):
        torchreid.models.build_model("fgdi_huge", 7, num_domains=2)


def test_torchreid_builds_registered_dataset_by_name(tiny_root):
    dataset = torchreid.data.datasets.init_image_dataset("synth_b", root=tiny_root, mode="query", verbose=False)
    assert len(dataset) == len(dataset.query) > 0
