"""The identity samplers on identities with fewer than K images, and each process's share of the
training data when the data manager is distributed (``world_size`` > 1, as torchrun sets it)."""

from collections import Counter

import pytest
import torch

from torchreid_fgdi.data import DomainBalancedIdentitySampler, DomainImageDataManager
from torchreid_fgdi.data.samplers import check_identity_batches

K = 4
# 3 domains x 2 identities; identity 0 has one image, identity 3 two, the others five.
IMAGES_PER_PID = {0: 1, 1: 5, 2: 5, 3: 2, 4: 5, 5: 5}
ITEMS = [(f"{pid}_{n}.jpg", pid, n % 2, pid // 2) for pid, count in IMAGES_PER_PID.items() for n in range(count)]


def _chunks(indices: list[int]) -> list[list[int]]:
    return [indices[i : i + K] for i in range(0, len(indices), K)]


def test_an_identity_with_fewer_than_k_images_fills_its_k_places_with_repeats():
    sampler = DomainBalancedIdentitySampler(ITEMS, batch_size=3 * K, num_instances=K, seed=0)
    for epoch in range(5):
        sampler.set_epoch(epoch)
        chunks = _chunks(list(sampler))
        pid_of_chunk = []
        for chunk in chunks:
            (pid,) = {ITEMS[i][1] for i in chunk}  # K images of one identity
            pid_of_chunk.append(pid)
        assert sorted(pid_of_chunk) == list(IMAGES_PER_PID)  # every identity once, the short ones too
        by_pid = dict(zip(pid_of_chunk, chunks))
        assert [ITEMS[i][0] for i in by_pid[0]] == ["0_0.jpg"] * K  # its only image, K times
        assert {ITEMS[i][0] for i in by_pid[3]} <= {"3_0.jpg", "3_1.jpg"}
        for pid in (1, 2, 4, 5):
            assert len(set(by_pid[pid])) == K  # enough images: K different ones


def test_identities_with_fewer_than_k_images_are_reported_not_refused(capsys):
    check_identity_batches(ITEMS, "DomainBalancedIdentitySampler", batch_size=3 * K, num_instances=K)
    assert "2 of 6 identities have < K=4 images: sampled with replacement" in capsys.readouterr().out


def _ranks(root: str, sampler: str) -> list[DomainImageDataManager]:
    kwargs = dict(root=root, sources=["synth_a", "synth_b", "synth_c"], targets="synth_d", height=32, width=16)
    kwargs.update(workers=0, use_gpu=False, train_sampler=sampler, batch_size_train=24, num_instances=K, seed=3)
    return [DomainImageDataManager(**kwargs, rank=rank, world_size=2) for rank in (0, 1)]


def test_random_sampler_gives_each_process_a_disjoint_half_reshuffled_per_epoch(tiny_root):
    ranks = _ranks(tiny_root, "RandomSampler")
    samplers = [dm.train_loader.sampler for dm in ranks]
    assert all(isinstance(s, torch.utils.data.DistributedSampler) for s in samplers)
    assert [dm.train_loader.batch_size for dm in ranks] == [12, 12]  # the global batch of 24, shared
    shares = [list(s) for s in samplers]
    images = len(ranks[0].train_items)
    assert len(shares[0]) == len(shares[1]) == images // 2
    assert not set(shares[0]) & set(shares[1])
    samplers[0].set_epoch(1)
    assert list(samplers[0]) != shares[0]
    batch = next(iter(ranks[1].train_loader))
    assert batch["img"].shape[0] == 12


def test_random_identity_sampler_shares_each_global_pk_batch_without_domain_balance(tiny_root):
    ranks = _ranks(tiny_root, "RandomIdentitySampler")
    items = ranks[0].train_items
    samplers = [dm.train_loader.sampler for dm in ranks]
    assert all(isinstance(s, DomainBalancedIdentitySampler) for s in samplers)
    assert list(samplers[0].pids_of_dsetid) == [0]  # every identity in one pool: torchreid's PK
    single = DomainBalancedIdentitySampler(items, 24, K, balance_domains=False, seed=3)
    whole, halves = list(single), [list(s) for s in samplers]
    assert len(halves[0]) == len(halves[1]) == len(whole) // 2 > 0
    for step in range(len(whole) // 24):
        a, b = (half[step * 12 : (step + 1) * 12] for half in halves)
        assert not set(a) & set(b)
        assert sorted(a + b) == sorted(whole[step * 24 : (step + 1) * 24])
        for share in (a, b):
            assert sorted(Counter(items[i][1] for i in share).values()) == [K] * 3  # whole identities


def test_a_sampler_without_a_distributed_form_is_refused(tiny_root):
    with pytest.raises(ValueError, match="distributed training supports RandomSampler, RandomIdentitySampler"):
        _ranks(tiny_root, "SequentialSampler")


@pytest.mark.parametrize("seed", [1, None])
def test_a_loaders_length_is_the_number_of_batches_its_epoch_really_has(tiny_root, seed):
    """Identities run out unevenly, so a draw can make fewer batches than an estimate promises (with
    seed 1, epoch 0 has 6 batches of 24 where the estimate said 7): the length is the draw's own."""
    kwargs = dict(root=tiny_root, sources=["synth_a", "synth_b", "synth_c"], targets="synth_d", height=32, width=16)
    kwargs.update(workers=0, use_gpu=False, train_sampler="DomainBalancedIdentitySampler", batch_size_train=24)
    loader = DomainImageDataManager(**kwargs, num_instances=K, seed=1).train_loader
    loader.sampler.seed = seed  # None: torchreid's way (`build_train_sampler`), the global generator draws
    counted = []
    for epoch in range(4):
        loader.sampler.set_epoch(epoch)
        promised = len(loader)
        counted.append((promised, sum(1 for _ in loader.batch_sampler)))
    assert all(promised == real for promised, real in counted), counted
    if seed == 1:
        assert counted[0] == (6, 6)  # the draw that ends early
