"""Training samplers that torchreid lacks."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Sequence

import torch
import torchreid
from torch.utils.data import Sampler

from ..errors import ConfigError

# Samplers that draw P identities x K images per batch (train.batch_size must be a multiple of K).
IDENTITY_SAMPLERS = ("RandomIdentitySampler", "DomainBalancedIdentitySampler")


def check_train_samplers(*names: str) -> None:
    """Refuses a sampler name neither torchreid nor the plugin knows."""
    for name in names:
        if name not in TRAIN_SAMPLERS:
            raise ConfigError(f"unknown train sampler {name!r}: choose one of {', '.join(TRAIN_SAMPLERS)}")


def check_pk_batch(batch_size: int, num_instances: int) -> None:
    """Refuses a batch that is not P x K: a DataLoader would cut batches across identities."""
    if batch_size % num_instances:
        raise ConfigError(
            f"train.batch_size {batch_size} is not a multiple of sampler.num_instances (K) {num_instances}: a P x K "
            f"batch needs batch_size = P * K, e.g. {max(batch_size // num_instances, 1) * num_instances} or "
            f"{(batch_size // num_instances + 1) * num_instances}"
        )


class DomainBalancedIdentitySampler(Sampler):
    """P identities x K images per batch, with P / num_domains identities from every domain.

    torchreid's `RandomIdentitySampler` draws identities regardless of their source, so a batch
    over unequal sources is dominated by the largest; domain generalization wants every source
    in every batch. An identity with fewer than K images is sampled with replacement. Indices
    come out batch by batch, so a DataLoader with `batch_size=P*K` cuts exact P x K batches.

    Distributed (``world_size`` > 1): every rank draws the same global P x K batches from a
    generator seeded with ``seed`` + epoch (`set_epoch`) and keeps its share of the identities
    (positions ``rank::world_size`` of each batch, K images each), so per step the ranks' batches
    are disjoint and together are the single-process batch; the DataLoader's batch size is then
    ``batch_size / world_size``.

    Args:
        data_source (list): items (img_path, pid, camid, dsetid); `dsetid` is the domain.
        batch_size (int): P * K, over all ranks.
        num_instances (int): K, images per identity.
        balance_domains (bool): False draws identities regardless of domain (torchreid's PK).
        rank, world_size (int): this process among the distributed ones.
        seed (int, optional): seeds each epoch's draw (required when distributed); ``None``
            uses Python's global ``random`` as torchreid's samplers do.
    """

    def __init__(
        self,
        data_source: list,
        batch_size: int,
        num_instances: int,
        balance_domains: bool = True,
        rank: int = 0,
        world_size: int = 1,
        seed: int | None = None,
    ):
        if world_size > 1 and seed is None:
            raise ValueError("a distributed sampler needs a seed, so that every rank draws the same batches")
        self.rank, self.world_size, self.seed, self.epoch = rank, world_size, seed, 0
        self.index_dic = defaultdict(list)
        pids_of_dsetid = defaultdict(set)
        for index, (_, pid, _, dsetid) in enumerate(data_source):
            self.index_dic[pid].append(index)
            pids_of_dsetid[dsetid if balance_domains else 0].add(pid)
        self.pids_of_dsetid = {dsetid: sorted(pids) for dsetid, pids in sorted(pids_of_dsetid.items())}
        num_domains = len(self.pids_of_dsetid)
        check_pk_batch(batch_size, num_instances)
        num_pids = batch_size // num_instances
        if num_pids % num_domains:
            raise ConfigError(
                f"batch_size / num_instances = {num_pids} identities per batch cannot be split evenly over "
                f"{num_domains} domains: choose batch_size = num_instances x a multiple of {num_domains}"
            )
        if num_pids % world_size:
            raise ConfigError(
                f"{num_pids} identities per batch cannot be shared by {world_size} processes: choose batch_size = "
                f"num_instances x a multiple of {world_size}"
            )
        self.pids_per_domain = num_pids // num_domains
        for dsetid, pids in self.pids_of_dsetid.items():
            if len(pids) < self.pids_per_domain:
                raise ConfigError(
                    f"domain {dsetid} has {len(pids)} identities, fewer than the {self.pids_per_domain} a batch needs"
                )
        self.batch_size = batch_size
        self.num_instances = num_instances
        self._drawn: tuple[int | None, list] | None = None  # (epoch, its batches) until `__iter__` takes them

    def set_epoch(self, epoch: int) -> None:
        """Distributed: a new draw for every epoch, the same on every rank."""
        self.epoch = epoch

    def _chunks(self, pid: int, rng) -> list[list[int]]:
        idxs = list(self.index_dic[pid])
        if len(idxs) < self.num_instances:
            idxs = rng.choices(idxs, k=self.num_instances)
        rng.shuffle(idxs)
        usable = len(idxs) - len(idxs) % self.num_instances
        return [idxs[i : i + self.num_instances] for i in range(0, usable, self.num_instances)]

    def global_batches(self) -> list[list[list[int]]]:
        """This epoch's batches over all ranks, each a list of P chunks of K indices."""
        rng = random if self.seed is None else random.Random(self.seed * 1_000_003 + self.epoch)
        chunks = {pid: self._chunks(pid, rng) for pid in self.index_dic}
        available = {dsetid: list(pids) for dsetid, pids in self.pids_of_dsetid.items()}
        batches = []
        while all(len(pids) >= self.pids_per_domain for pids in available.values()):
            batch = []
            for pids in available.values():
                for pid in rng.sample(pids, self.pids_per_domain):
                    batch.append(chunks[pid].pop())
                    if not chunks[pid]:
                        pids.remove(pid)
            batches.append(batch)
        return batches

    def _epoch_batches(self) -> list[list[list[int]]]:
        """This epoch's draw, made once for `__len__` and `__iter__` alike: how many batches an epoch
        has depends on the draw (identities run out unevenly), so a count made before it, as torchreid's
        samplers estimate theirs, can promise batches the epoch never has ('batch 6/7' at its end)."""
        key = None if self.seed is None else self.epoch  # unseeded: the next draw of the global generator
        if self._drawn is None or self._drawn[0] != key:
            self._drawn = (key, self.global_batches())
        return self._drawn[1]

    def __iter__(self):
        batches, self._drawn = self._epoch_batches(), None
        own = [batch[self.rank :: self.world_size] for batch in batches]
        return iter([index for batch in own for chunk in batch for index in chunk])

    def __len__(self) -> int:
        """The indices of this epoch's draw on this rank: a DataLoader's length is then its real batch count."""
        return len(self._epoch_batches()) * self.batch_size // self.world_size


SAMPLERS = {"DomainBalancedIdentitySampler": DomainBalancedIdentitySampler}  # the plugin's, by name
TRAIN_SAMPLERS = tuple(dict.fromkeys([*torchreid.reid.data.sampler.AVAI_SAMPLERS, *SAMPLERS]))  # torchreid's, ours


def check_identity_batches(
    items: list, sampler: str, batch_size: int, num_instances: int, sources: Sequence[str] = ()
) -> None:
    """Rejects P x K settings the training identities cannot fill, before any sampler is built
    (torchreid's `RandomIdentitySampler` would stop on a bare assert). `sources` names the dataset
    of each ``dsetid`` in the message.

    An identity with fewer than K images is sampled with replacement (torchreid's and the
    authors' behaviour, needed for CUHK-SYSU or MSMT17 with K=4), so that is reported, not refused.
    """
    if sampler not in IDENTITY_SAMPLERS:
        return
    counts = Counter(item[1] for item in items)
    most, needed = max(counts.values()), batch_size // num_instances
    if num_instances > most:
        raise ConfigError(
            f"sampler.num_instances (K) {num_instances} is more than the images of every training identity "
            f"(at most {most}): no batch could hold K different images of one identity; choose K <= {most}"
        )
    if len(counts) < needed:
        raise ConfigError(
            f"a batch of {batch_size} needs {needed} identities x K={num_instances} images, but the sources have "
            f"{len(counts)} identities{_per_source(items, sources)}: lower train.batch_size to at most "
            f"{len(counts) * num_instances}, or add sources"
        )
    few = sum(count < num_instances for count in counts.values())
    if few:
        print(f"=> {few} of {len(counts)} identities have < K={num_instances} images: sampled with replacement")


def _per_source(items: list, sources: Sequence[str]) -> str:
    """`` (synth_a 12, synth_b 12)``: the identities of each named source, for a message."""
    if not sources:
        return ""
    pids = defaultdict(set)
    for item in items:
        pids[item[3]].add(item[1])
    return f" ({', '.join(f'{name} {len(pids[dsetid])}' for dsetid, name in enumerate(sources))})"


def torchreid_sampler_name(name: str) -> str:
    """The sampler torchreid's data manager builds first: its own by name; for an identity sampler
    (built afterwards, once `check_identity_batches` passed) the plain ``RandomSampler``."""
    return "RandomSampler" if name in IDENTITY_SAMPLERS else name


def replacement_sampler(
    name: str,
    items: list,
    trainset: torch.utils.data.Dataset,
    batch_size: int,
    num_instances: int,
    *,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
) -> Sampler | None:
    """The sampler replacing the one torchreid's data manager built over `trainset` (whose training
    `items` are ``(path, pid, camid, dsetid)``), or None to keep it (one process, a torchreid sampler
    other than an identity sampler)."""
    ours = SAMPLERS.get(name)
    if world_size == 1 and ours:
        return ours(items, batch_size, num_instances, seed=seed)
    if world_size == 1 and name == "RandomIdentitySampler":
        return torchreid.reid.data.sampler.RandomIdentitySampler(items, batch_size, num_instances)
    if world_size == 1:
        return None
    if batch_size % world_size:
        raise ConfigError(f"batch_size {batch_size} must be a multiple of the {world_size} processes")
    if name == "RandomSampler":
        return torch.utils.data.DistributedSampler(
            trainset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
    if not ours and name != "RandomIdentitySampler":
        raise ConfigError(
            f"distributed training supports RandomSampler, RandomIdentitySampler and "
            f"DomainBalancedIdentitySampler, not {name}"
        )
    return DomainBalancedIdentitySampler(
        items, batch_size, num_instances, balance_domains=bool(ours), rank=rank, world_size=world_size, seed=seed
    )
