"""Training samplers that torchreid lacks."""

from __future__ import annotations

import random
from collections import defaultdict

from torch.utils.data import Sampler


class DomainBalancedIdentitySampler(Sampler):
    """P identities x K images per batch, with P / num_domains identities from every domain.

    torchreid's `RandomIdentitySampler` draws identities regardless of their source, so a batch
    over unequal sources is dominated by the largest; domain generalization wants every source
    in every batch. An identity with fewer than K images is sampled with replacement. Indices
    come out batch by batch, so a DataLoader with `batch_size=P*K` cuts exact P x K batches.

    Args:
        data_source (list): items (img_path, pid, camid, dsetid); `dsetid` is the domain.
        batch_size (int): P * K.
        num_instances (int): K, images per identity.
    """

    def __init__(self, data_source: list, batch_size: int, num_instances: int):
        self.index_dic = defaultdict(list)
        pids_of_domain = defaultdict(set)
        for index, (_, pid, _, dsetid) in enumerate(data_source):
            self.index_dic[pid].append(index)
            pids_of_domain[dsetid].add(pid)
        self.domains = {d: sorted(pids) for d, pids in sorted(pids_of_domain.items())}
        num_domains = len(self.domains)
        if batch_size % num_instances:
            raise ValueError(f"batch_size={batch_size} must be a multiple of num_instances={num_instances}")
        num_pids = batch_size // num_instances
        if num_pids % num_domains:
            raise ValueError(
                f"batch_size / num_instances = {num_pids} identities per batch cannot be split evenly over "
                f"{num_domains} domains: choose batch_size = num_instances x a multiple of {num_domains}"
            )
        self.pids_per_domain = num_pids // num_domains
        for d, pids in self.domains.items():
            if len(pids) < self.pids_per_domain:
                raise ValueError(
                    f"domain {d} has {len(pids)} identities, fewer than the {self.pids_per_domain} a batch needs"
                )
        self.batch_size = batch_size
        self.num_instances = num_instances
        self.length = self._count_batches() * batch_size

    def _chunks(self, pid: int) -> list[list[int]]:
        idxs = list(self.index_dic[pid])
        if len(idxs) < self.num_instances:
            idxs = random.choices(idxs, k=self.num_instances)
        random.shuffle(idxs)
        usable = len(idxs) - len(idxs) % self.num_instances
        return [idxs[i : i + self.num_instances] for i in range(0, usable, self.num_instances)]

    def _count_batches(self) -> int:
        """Upper bound on batches per epoch (the last ones depend on the draw), as torchreid estimates."""
        return min(
            sum(max(len(self.index_dic[p]), self.num_instances) // self.num_instances for p in pids)
            // self.pids_per_domain
            for pids in self.domains.values()
        )

    def __iter__(self):
        chunks = {pid: self._chunks(pid) for pid in self.index_dic}
        available = {d: list(pids) for d, pids in self.domains.items()}
        final = []
        while all(len(pids) >= self.pids_per_domain for pids in available.values()):
            for pids in available.values():
                for pid in random.sample(pids, self.pids_per_domain):
                    final.extend(chunks[pid].pop())
                    if not chunks[pid]:
                        pids.remove(pid)
        return iter(final)

    def __len__(self) -> int:
        return self.length
