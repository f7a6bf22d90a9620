"""What `import torchreid_fgdi` adds to torchreid's registries: only the plugin's datasets, models and
sampler, each name building the plugin's class, and registering again changes nothing."""

import importlib

import pytest
import torchreid

from tests.fake_datasets import make_cuhksysu
from torchreid_fgdi.data import DomainBalancedIdentitySampler
from torchreid_fgdi.data.public import CUHKSYSU
from torchreid_fgdi.integration import registry
from torchreid_fgdi.integration.registry import IMAGE_DATASETS
from torchreid_fgdi.models import FGDI, MODEL_FACTORIES, VARIANTS, build_fgdi


def test_datasets_registered_once_and_idempotently():
    table = registry.image_dataset_registry()
    before = dict(table)
    registry.register_all()
    registry.register_all()
    importlib.reload(registry).register_all()
    assert table == before
    for name, cls in IMAGE_DATASETS.items():
        assert table[name] is cls, name


def test_a_generated_domain_name_builds_that_domain(tiny_root):
    dataset = torchreid.data.datasets.init_image_dataset("synth_b", root=tiny_root, mode="query", verbose=False)
    assert type(dataset) is IMAGE_DATASETS["synth_b"] and dataset.domain == "synth_b"
    assert len(dataset) == len(dataset.query) > 0
    assert all("/synth_b/query/" in path for path, *_ in dataset.query)


def test_a_public_name_the_plugin_replaces_builds_the_plugins_class(tmp_path):
    counts = make_cuhksysu(str(tmp_path))
    dataset = torchreid.data.datasets.init_image_dataset("cuhksysu", root=str(tmp_path), verbose=False)
    assert type(dataset) is CUHKSYSU
    assert dataset.num_train_pids == counts["train_ids"] and len(dataset.train) == counts["train_imgs"]


def test_the_plugin_adds_exactly_its_model_names_and_each_builds_fgdi():
    table = registry.model_registry()
    registry.register_all()
    added = {name for name, factory in table.items() if getattr(factory, "func", None) is build_fgdi}
    assert added == set(MODEL_FACTORIES) == set(VARIANTS)
    for name, factory in MODEL_FACTORIES.items():
        assert table[name] is factory, name
    model = torchreid.models.build_model("fgdi_tiny", 7, num_domains=3, pretrained=False)
    assert isinstance(model, FGDI)
    assert model.classifier.out_features == 7 and model.promptlearner.dmctx.shape[0] == 3


def test_build_model_forwards_plugin_arguments_and_rejects_unknown_names():
    with pytest.raises(KeyError, match="Unknown model: fgdi_huge.*fgdi_tiny"):
        torchreid.models.build_model("fgdi_huge", 7, num_domains=2)


def test_torchreids_sampler_builder_builds_the_plugins_sampler_by_name():
    items = [(f"{i}.jpg", i // 4, 0, i // 16) for i in range(48)]  # 3 domains x 4 pids x 4 images
    assert "DomainBalancedIdentitySampler" in torchreid.data.sampler.AVAI_SAMPLERS
    sampler = torchreid.data.sampler.build_train_sampler(
        items, "DomainBalancedIdentitySampler", batch_size=12, num_instances=4
    )
    assert isinstance(sampler, DomainBalancedIdentitySampler)
    assert sampler.pids_per_domain == 1 and len(list(sampler)) == 48
