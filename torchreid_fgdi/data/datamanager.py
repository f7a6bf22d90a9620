"""A torchreid ImageDataManager that knows which source domain each training image comes from."""

from __future__ import annotations

import hashlib
import os.path as osp
from collections import Counter

import torch
import torchreid

from ..errors import ConfigError
from ..integration.compat import UnreadableImageError
from .image_check import damaged_images, unreadable_images
from .samplers import IDENTITY_SAMPLERS, DomainBalancedIdentitySampler
from .transforms import CLIP_FGDI, clip_fgdi_transforms

SAMPLERS = {"DomainBalancedIdentitySampler": DomainBalancedIdentitySampler}
TRAIN_SAMPLERS = tuple(dict.fromkeys([*torchreid.reid.data.sampler.AVAI_SAMPLERS, *SAMPLERS]))  # torchreid's, ours
MIN_TEST_SPLITS = 1  # 1: torchreid's single split_id
# Small targets the literature evaluates over their 10 random splits (torchreid generates them).
SPLIT_TARGETS = ("prid", "grid", "viper", "ilids")


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
    - ``transforms=['clip_fgdi']``: the authors' train / test pipelines (`data.transforms`);
    - ``test_splits``: PRID, GRID, VIPeR and iLIDS are tested on their random splits
      0..test_splits-1 (`test_split_loaders`); 1 keeps torchreid's single ``split_id``;
    - ``skip_unreadable_images``: decode every image once, drop those that fail and report them
      (``skipped_images``); by default a bad image fails when read, naming its path;
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
        if test_splits < MIN_TEST_SPLITS:
            raise ConfigError(f"test_splits must be >= {MIN_TEST_SPLITS} (1: only split_id), got {test_splits}")
        for name in (train_sampler, kwargs.get("train_sampler_t", "RandomSampler")):
            if name not in TRAIN_SAMPLERS:
                raise ConfigError(f"unknown train sampler {name!r}: choose one of {', '.join(TRAIN_SAMPLERS)}")
        self.root, self.test_splits, self.batch_size_test = root, test_splits, batch_size_test
        self._dataset_kwargs = {
            k: kwargs[k] for k in ("cuhk03_labeled", "cuhk03_classic_split", "market1501_500k") if k in kwargs
        }
        ours = SAMPLERS.get(train_sampler)
        super().__init__(
            root=root,
            sources=sources,
            targets=targets,
            train_sampler="RandomSampler" if ours else train_sampler,
            batch_size_train=batch_size_train,
            batch_size_test=batch_size_test,
            num_instances=num_instances,
            **kwargs,
        )
        trainset = self.train_loader.dataset
        transforms = kwargs.get("transforms") or []
        transforms = [transforms] if isinstance(transforms, str) else list(transforms)
        if CLIP_FGDI in transforms:
            self._use_clip_fgdi_transforms(transforms, kwargs.get("height", 256), kwargs.get("width", 128))
        self.train_items = trainset.train
        self.num_train_domains = trainset.num_datasets
        distractors = 0
        if market1501_distractors and kwargs.get("combineall") and "market1501" in self.sources:
            distractors = self._add_market1501_distractors(trainset)
        self.domain_pid_ranges = self._pid_ranges(self.train_items, self.num_train_domains)
        workers = kwargs.get("workers", 4)
        self.skipped_images = self._drop_unreadable(workers) if skip_unreadable_images else {}
        if not skip_unreadable_images:
            self._refuse_damaged(workers)
        check_identity_batches(self.train_items, train_sampler, batch_size_train, num_instances)
        sampler = self._train_sampler(train_sampler, batch_size_train, num_instances, rank, world_size, seed)
        if sampler is None and (self.skipped_images or distractors) and train_sampler != "RandomSampler":
            sampler = torchreid.data.sampler.build_train_sampler(
                self.train_items,
                train_sampler,
                batch_size=batch_size_train,
                num_instances=num_instances,
                num_cams=kwargs.get("num_cams", 1),
                num_datasets=kwargs.get("num_datasets", 1),
            )
        if sampler is not None:
            per_rank = batch_size_train // world_size
            self.train_loader = self._loader(trainset, sampler=sampler, batch_size=per_rank, drop_last=True)
        # torchreid's Dataset needs non-empty query/gallery lists; mode="train" reads only `train`.
        items = self.train_items
        testset = torchreid.data.ImageDataset(items, items, items, transform=self.transform_te, verbose=False)
        self.train_loader_test = self._loader(testset, batch_size=batch_size_test, shuffle=False, drop_last=False)

    def _add_market1501_distractors(self, trainset) -> int:
        """Market-1501's gallery distractors (pid 0, "0000_*.jpg") as one more training identity, as the
        CLIP-FGDI authors train (1,502 classes with combineall); torchreid drops them as junk. The new
        identity closes Market-1501's pid range; the sources after it move up by one. Returns the
        number of images added."""
        market_dsetid = self.sources.index("market1501")
        gallery = torchreid.data.datasets.init_image_dataset(
            "market1501", root=self.root, mode="gallery", verbose=False, **self._dataset_kwargs
        )
        market = [item for item in self.train_items if item[3] == market_dsetid]
        camera_offset = min(item[2] for item in market) - min(item[2] for item in gallery.train)  # torchreid's __add__
        added = [(path, camid + camera_offset) for path, pid, camid, *_ in gallery.gallery if pid == 0]
        new_pid = 1 + max(item[1] for item in market)
        self.train_items[:] = [
            (path, pid + (pid >= new_pid), camid, dsetid) for path, pid, camid, dsetid in self.train_items
        ] + [(path, new_pid, camid, market_dsetid) for path, camid in added]
        trainset.num_train_pids = self._num_train_pids = self._num_train_pids + 1
        print(f"=> market1501.train_distractors: {len(added)} distractor images train as identity {new_pid}")
        return len(added)

    def fingerprint(self) -> str:
        """sha256 of the training list (paths under `root`, pid, camid, dsetid): checkpoints record it,
        so a run is never resumed on other images or labels that happen to have the same settings."""
        root = osp.abspath(self.root)
        digest = hashlib.sha256()
        for path, pid, camid, dsetid in sorted(self.train_items):
            digest.update(f"{osp.relpath(path, root)}\t{pid}\t{camid}\t{dsetid}\n".encode())
        return digest.hexdigest()

    def _train_sampler(self, name: str, batch_size: int, num_instances: int, rank: int, world_size: int, seed: int):
        """The sampler replacing torchreid's, or None to keep it (one process, a torchreid sampler)."""
        ours = SAMPLERS.get(name)
        if world_size == 1:
            return ours(self.train_items, batch_size, num_instances, seed=seed) if ours else None
        if batch_size % world_size:
            raise ConfigError(f"batch_size {batch_size} must be a multiple of the {world_size} processes")
        if name == "RandomSampler":
            trainset = self.train_loader.dataset
            return torch.utils.data.DistributedSampler(
                trainset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True
            )
        if not ours and name != "RandomIdentitySampler":
            raise ConfigError(
                f"distributed training supports RandomSampler, RandomIdentitySampler and "
                f"DomainBalancedIdentitySampler, not {name}"
            )
        return DomainBalancedIdentitySampler(
            self.train_items,
            batch_size,
            num_instances,
            balance_domains=bool(ours),
            rank=rank,
            world_size=world_size,
            seed=seed,
        )

    def _image_lists(self) -> list[list]:
        """The train, query and gallery item lists the loaders read (the same list objects)."""
        return [self.train_items] + [
            loader.dataset.data for loaders in self.test_loader.values() for loader in loaders.values()
        ]

    def _refuse_damaged(self, workers: int) -> None:
        """Fails before any work on a file that is surely not a whole image (a named pipe, an empty
        or truncated file), instead of in a DataLoader worker, perhaps after all of training."""
        bad = damaged_images([item[0] for items in self._image_lists() for item in items], workers)
        if bad:
            listed = "\n  ".join(f"{p}: {why}" for p, why in list(bad.items())[:10])
            raise UnreadableImageError(
                f"{len(bad)} image file(s) cannot be read, nothing was started:\n  {listed}\n"
                "Replace or remove them, or set data.skip_unreadable_images True to leave them out"
            )

    def _drop_unreadable(self, workers: int) -> dict[str, str]:
        """Removes every image that cannot be decoded from the train, query and gallery lists (in
        place, so the loaders see it) and reports them; {path: why}."""
        lists = self._image_lists()
        print("=> data.skip_unreadable_images: decoding every image once")
        bad = unreadable_images([item[0] for items in lists for item in items], workers)
        for items in lists:
            items[:] = [item for item in items if item[0] not in bad]
        if bad:
            print(f"=> Skipped {len(bad)} unreadable image(s):\n  " + "\n  ".join(f"{p}: {w}" for p, w in bad.items()))
        return bad

    def _use_clip_fgdi_transforms(self, transforms: list, height: int, width: int) -> None:
        if len(transforms) > 1:
            raise ConfigError(f"transforms {CLIP_FGDI!r} is a whole pipeline; do not combine it with {transforms}")
        self.transform_tr, self.transform_te = clip_fgdi_transforms(height, width)
        self.train_loader.dataset.transform = self.transform_tr
        for loaders in self.test_loader.values():
            for loader in loaders.values():
                loader.dataset.transform = self.transform_te

    def test_split_ids(self, name: str) -> list[int] | None:
        """The random splits target `name` is tested on, or ``None`` for its one fixed split."""
        return list(range(self.test_splits)) if name in SPLIT_TARGETS and self.test_splits > 1 else None

    def test_split_loaders(self, name: str, split_id: int) -> dict[str, torch.utils.data.DataLoader]:
        """Query and gallery loaders of target `name` on random split `split_id`."""
        loaders = {}
        for mode in ("query", "gallery"):
            dataset = torchreid.data.datasets.init_image_dataset(
                name,
                root=self.root,
                split_id=split_id,
                mode=mode,
                transform=self.transform_te,
                verbose=False,
                **self._dataset_kwargs,
            )
            dataset.data[:] = [item for item in dataset.data if item[0] not in self.skipped_images]
            loaders[mode] = self._loader(dataset, batch_size=self.batch_size_test, shuffle=False, drop_last=False)
        return loaders

    def _loader(self, dataset, **kwargs) -> torch.utils.data.DataLoader:
        template = self.train_loader
        return torch.utils.data.DataLoader(dataset, num_workers=template.num_workers, pin_memory=self.use_gpu, **kwargs)

    @staticmethod
    def _pid_ranges(items: list, num_domains: int) -> list[tuple[int, int]]:
        pids = [set() for _ in range(num_domains)]
        for _, pid, _, dsetid in items:
            pids[dsetid].add(pid)
        ranges = [(min(p), max(p) + 1) for p in pids]
        for dsetid, ((start, stop), p) in enumerate(zip(ranges, pids)):
            if len(p) != stop - start:
                raise RuntimeError(f"pids of domain {dsetid} are not contiguous: {sorted(p)[:10]}...")
        return ranges


def check_identity_batches(items: list, sampler: str, batch_size: int, num_instances: int) -> None:
    """Rejects P x K settings the training identities cannot fill, before any work.

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
            f"{len(counts)} identities: lower train.batch_size to at most {len(counts) * num_instances}"
        )
    few = sum(count < num_instances for count in counts.values())
    if few:
        print(f"=> {few} of {len(counts)} identities have < K={num_instances} images: sampled with replacement")
