from collections import Counter

import pytest
import torch
import torchreid

import torchreid_fgdi
from torchreid_fgdi.data import DomainBalancedIdentitySampler, DomainImageDataManager

SOURCES = ["synth_a", "synth_b", "synth_c"]


def _manager(root, **kwargs):
    args = dict(root=root, sources=SOURCES, targets="synth_d", height=32, width=16, workers=0, use_gpu=False)
    args.update(kwargs)
    return DomainImageDataManager(**args)


def test_torchreid_datamanager_gives_dsetid_per_source(tiny_root):
    dm = torchreid.data.ImageDataManager(
        root=tiny_root, sources=SOURCES, targets="synth_d", height=32, width=16, workers=0, use_gpu=False
    )
    train = dm.train_loader.dataset.train
    for dsetid, name in enumerate(SOURCES):
        paths = {path for path, _, _, d in train if d == dsetid}
        assert paths and all(f"/{name}/" in p for p in paths)
    assert {d for *_, d in train} == {0, 1, 2}


def test_pids_contiguous_across_sources_and_domain_ranges(tiny_root):
    dm = _manager(tiny_root)
    assert dm.num_train_domains == 3
    assert dm.num_train_pids == 36
    assert dm.domain_pid_ranges == [(0, 12), (12, 24), (24, 36)]
    for _, pid, _, dsetid in dm.train_items:
        start, stop = dm.domain_pid_ranges[dsetid]
        assert start <= pid < stop


def test_combineall_adds_test_identities_per_source(tiny_root):
    dm = _manager(tiny_root, combineall=True)
    assert dm.num_train_pids == 3 * (12 + 8)
    assert dm.domain_pid_ranges == [(0, 20), (20, 40), (40, 60)]


@pytest.mark.parametrize("sampler", ["RandomIdentitySampler", "DomainBalancedIdentitySampler"])
def test_identity_samplers_give_p_by_k_batches(tiny_root, sampler):
    dm = _manager(tiny_root, train_sampler=sampler, batch_size_train=12, num_instances=2)
    batches = list(dm.train_loader)
    assert len(batches) >= 3
    for batch in batches:
        counts = Counter(batch["pid"].tolist())
        assert len(counts) == 6 and set(counts.values()) == {2}
        if sampler == "DomainBalancedIdentitySampler":
            pid_domain = dict(zip(batch["pid"].tolist(), batch["dsetid"].tolist()))
            assert Counter(pid_domain.values()) == {0: 2, 1: 2, 2: 2}


def test_domain_balanced_sampler_rejects_uneven_split():
    items = [(f"{i}.jpg", i // 4, 0, i // 16) for i in range(48)]  # 3 domains x 4 pids x 4 images
    with pytest.raises(ValueError, match="cannot be split evenly over 3 domains"):
        DomainBalancedIdentitySampler(items, batch_size=16, num_instances=4)
    assert len(list(DomainBalancedIdentitySampler(items, batch_size=12, num_instances=4))) == 48


def test_train_loader_test_is_ordered_and_unaugmented(tiny_root):
    dm = _manager(tiny_root, transforms=["random_flip", "random_crop"], batch_size_test=16)
    first = list(dm.train_loader_test)
    second = list(dm.train_loader_test)
    paths = [p for b in first for p in b["impath"]]
    assert paths == [item[0] for item in dm.train_items]
    assert torch.equal(torch.cat([b["img"] for b in first]), torch.cat([b["img"] for b in second]))
    assert torch.cat([b["dsetid"] for b in first]).tolist() == [item[3] for item in dm.train_items]


def test_missing_domain_is_generated_on_first_use(tmp_path):
    dataset = torchreid_fgdi.synthetic.SYNTHETIC_DATASETS["synth_d"](root=str(tmp_path), verbose=False)
    assert (tmp_path / "synth_d" / "query").is_dir()
    assert dataset.num_train_pids == 60


def test_clip_fgdi_transforms_standardise_each_image_and_reach_every_loader(tiny_root, capsys):
    dm = _manager(tiny_root, targets=["synth_d"], transforms=["clip_fgdi"], batch_size_train=12)
    out = capsys.readouterr().out  # the pipelines that run are listed, once; torchreid's list is not
    assert out.count("Building train transforms (clip_fgdi) ...") == out.count("Building train transforms") == 1
    assert "+ PerImageNorm(each channel of each image to mean 0, std 1" in out and "normalization (mean=" not in out
    torch.manual_seed(0)
    for batch in (next(iter(dm.train_loader)), next(iter(dm.test_loader["synth_d"]["query"]))):
        images = batch["img"]
        assert images.shape[1:] == (3, 32, 16)
        torch.testing.assert_close(images.mean(dim=(2, 3)), torch.zeros(images.shape[:2]), atol=1e-4, rtol=0)
        torch.testing.assert_close(
            images.std(dim=(2, 3), unbiased=False), torch.ones(images.shape[:2]), atol=1e-2, rtol=0
        )
    assert dm.train_loader_test.dataset.transform is dm.transform_te
    with pytest.raises(ValueError, match="whole pipeline"):
        _manager(tiny_root, transforms=["clip_fgdi", "random_flip"])


def test_distributed_sampler_shares_each_global_batch_disjointly(tiny_root):
    items = _manager(tiny_root).train_items
    kwargs = dict(batch_size=24, num_instances=4, seed=5)
    single = DomainBalancedIdentitySampler(items, **kwargs)
    ranks = [DomainBalancedIdentitySampler(items, rank=r, world_size=2, **kwargs) for r in (0, 1)]
    for epoch in (0, 1):
        for sampler in (single, *ranks):
            sampler.set_epoch(epoch)
        whole, halves = list(single), [list(r) for r in ranks]
        assert len(halves[0]) == len(halves[1]) == len(whole) // 2 > 0
        for step in range(len(whole) // 24):
            a, b = halves[0][step * 12 : (step + 1) * 12], halves[1][step * 12 : (step + 1) * 12]
            assert not set(a) & set(b)
            assert sorted(a + b) == sorted(whole[step * 24 : (step + 1) * 24])
            for half in (a, b):  # whole identities: K images of 3 identities
                assert sorted(Counter(items[i][1] for i in half).values()) == [4, 4, 4]
    single.set_epoch(0)
    first = list(single)
    single.set_epoch(1)
    assert list(single) != first  # reshuffled per epoch
    with pytest.raises(ValueError, match="needs a seed"):
        DomainBalancedIdentitySampler(items, 24, 4, rank=0, world_size=2)
    with pytest.raises(ValueError, match="cannot be shared by 4 processes"):
        DomainBalancedIdentitySampler(items, 24, 4, rank=0, world_size=4, seed=0)
