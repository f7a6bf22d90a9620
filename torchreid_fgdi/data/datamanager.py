"""A torchreid ImageDataManager that knows which source domain each training image comes from."""

from __future__ import annotations

import functools

import torch
import torchreid

from . import random_splits as splits
from . import train_items
from .images import check_images
from .samplers import check_identity_batches, check_train_samplers, replacement_sampler, torchreid_sampler_name


class DomainImageDataManager(torchreid.data.ImageDataManager):
    """Multi-source data with a contiguous domain id (torchreid's ``dsetid``) per source dataset.

    Everything of torchreid's ImageDataManager works as before; on top of it:

    - ``num_train_domains`` and ``domain_pid_ranges`` (the [start, stop) of the relabelled pids of
      each domain; pids are contiguous across sources, in the order of ``sources``);
    - ``train_sampler='DomainBalancedIdentitySampler'``: P x K batches with P / num_domains
      identities from every source (torchreid's samplers remain available by name);
    - ``train_loader_test``: every training image once, in order, with the test transform
      (CLIP-FGDI's stage 2 caches un-augmented image features from it);
    - ``combineall`` applies per source (Protocol-3 trains on train+query+gallery of each source);
    - ``world_size`` > 1 (torchrun): every rank gets its disjoint share of each seeded P x K batch
      (`DomainBalancedIdentitySampler`; ``RandomIdentitySampler`` without domain balance);
    - ``transforms=['clip_fgdi']``: the authors' train / test pipelines (`data.transforms`), which
      torchreid's ImageDataManager builds too once ``import torchreid_fgdi`` registered them;
    - ``test_splits``: PRID, GRID, VIPeR and iLIDS are tested on their random splits
      0..test_splits-1 (`test_split_loaders`); 1 keeps torchreid's single ``split_id``;
    - ``skip_unreadable_images``: decode every image once, drop those that fail and report them
      (``skipped_images``); by default files that are surely not whole images are refused before
      any work, and a bad image that gets past that fails when read, naming its path;
    - ``fingerprint()``: the training list's fingerprint, the images' contents included;
    - P x K settings the identities cannot fill are refused before training
      (`check_identity_batches`).

    Args:
        Same as ``torchreid.data.ImageDataManager``.

    Examples::

        import torchreid_fgdi
        datamanager = torchreid_fgdi.data.DomainImageDataManager(
            root='reid-data', sources=['synth_a', 'synth_b', 'synth_c'], targets='synth_d',
            height=64, width=32, batch_size_train=24, num_instances=4,
            train_sampler='DomainBalancedIdentitySampler', workers=0)
        print(datamanager.num_train_domains, datamanager.domain_pid_ranges)
    """

    def __init__(
        self,
        root: str = "",
        sources=None,
        targets=None,
        *,
        train_sampler: str = "RandomSampler",
        batch_size_train: int = 32,
        batch_size_test: int = 32,
        num_instances: int = 4,
        test_splits: int = 1,
        skip_unreadable_images: bool = False,
        market1501_distractors: bool = False,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        **kwargs,
    ):
        splits.check_test_splits(test_splits)
        check_train_samplers(train_sampler, kwargs.get("train_sampler_t", "RandomSampler"))
        self.root, self.test_splits, self.batch_size_test = root, test_splits, batch_size_test
        self._dataset_kwargs = {k: kwargs[k] for k in splits.DATASET_OPTIONS if k in kwargs}
        super().__init__(
            root=root,
            sources=sources,
            targets=targets,
            train_sampler=torchreid_sampler_name(train_sampler),
            batch_size_train=batch_size_train,
            batch_size_test=batch_size_test,
            num_instances=num_instances,
            **kwargs,
        )
        self.train_items = self.train_loader.dataset.train
        self.num_train_domains = self.train_loader.dataset.num_datasets
        added = 0
        if market1501_distractors and kwargs.get("combineall") and "market1501" in self.sources:
            added = self._add_market1501_distractors()
        self.domain_pid_ranges = train_items.pid_ranges(self.train_items, self.num_train_domains)
        training = [item[0] for item in self.train_items]
        checked = check_images(self._image_lists(), kwargs.get("workers", 4), skip_unreadable_images, training)
        self.skipped_images, self._image_digests = checked.unreadable, checked.digests
        check_identity_batches(self.train_items, train_sampler, batch_size_train, num_instances, self.sources)
        sampler = replacement_sampler(
            train_sampler, self.train_items, self.train_loader.dataset, batch_size_train, num_instances,
            rank=rank, world_size=world_size, seed=seed,
        )  # fmt: skip
        if sampler is None and (self.skipped_images or added) and train_sampler != "RandomSampler":
            sampler = self._torchreid_sampler(train_sampler, batch_size_train, num_instances, kwargs)  # items changed
        if sampler is not None:
            self.train_loader = self._loader(
                self.train_loader.dataset, sampler=sampler, batch_size=batch_size_train // world_size, drop_last=True
            )
        # torchreid's Dataset needs non-empty query/gallery lists; mode="train" reads only `train`.
        items = self.train_items
        testset = torchreid.data.ImageDataset(items, items, items, transform=self.transform_te, verbose=False)
        self.train_loader_test = self._loader(testset, batch_size=batch_size_test, shuffle=False, drop_last=False)

    def _add_market1501_distractors(self) -> int:
        """`train_items.add_market1501_distractors`, counted as one more training identity."""
        market_dsetid = self.sources.index("market1501")
        added = train_items.add_market1501_distractors(
            self.train_items, market_dsetid, self.root, **self._dataset_kwargs
        )
        trainset = self.train_loader.dataset
        trainset.num_train_pids = self._num_train_pids = self._num_train_pids + 1
        return added

    def _image_lists(self) -> list[list]:
        """The train, query and gallery item lists the loaders read (the same list objects)."""
        return [self.train_items] + [
            loader.dataset.data for loaders in self.test_loader.values() for loader in loaders.values()
        ]

    def _torchreid_sampler(self, name: str, batch_size: int, num_instances: int, kwargs: dict):
        """torchreid's sampler `name` built again, over the training list as it is now."""
        return torchreid.data.sampler.build_train_sampler(
            self.train_items,
            name,
            batch_size=batch_size,
            num_instances=num_instances,
            num_cams=kwargs.get("num_cams", 1),
            num_datasets=kwargs.get("num_datasets", 1),
        )

    def fingerprint(self) -> str:
        """sha256 of the training list (paths under `root`, the sha256 of each image's bytes, pid, camid,
        dsetid): checkpoints record it, so a run is never resumed on other images, other contents under
        the same names, or other labels that happen to have the same settings. Computed once (the list
        is fixed once the manager is built; the image digests come from the look at every image before
        training): the run's resume check and its engine both ask for it."""
        return self._fingerprint

    @functools.cached_property
    def _fingerprint(self) -> str:
        return train_items.fingerprint(self.train_items, self.root, self._image_digests)

    def test_split_ids(self, name: str) -> list[int] | None:
        """The random splits target `name` is tested on, or ``None`` for its one fixed split."""
        return splits.split_ids(name, self.test_splits)

    def test_split_loaders(self, name: str, split_id: int) -> dict[str, torch.utils.data.DataLoader]:
        """Query and gallery loaders of target `name` on random split `split_id`."""
        datasets = splits.split_datasets(
            name, self.root, split_id, self.transform_te, self.skipped_images, **self._dataset_kwargs
        )
        return {
            mode: self._loader(dataset, batch_size=self.batch_size_test, shuffle=False, drop_last=False)
            for mode, dataset in datasets.items()
        }

    def _loader(self, dataset, **kwargs) -> torch.utils.data.DataLoader:
        template = self.train_loader
        return torch.utils.data.DataLoader(dataset, num_workers=template.num_workers, pin_memory=self.use_gpu, **kwargs)
