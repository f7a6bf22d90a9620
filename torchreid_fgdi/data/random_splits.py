"""Testing small targets on their random splits: PRID, GRID, VIPeR and iLIDS are evaluated in the
literature over 10 random splits (torchreid generates them), not torchreid's single ``split_id``."""

from __future__ import annotations

import torchreid

from ..errors import ConfigError

MIN_TEST_SPLITS = 1  # 1: torchreid's single split_id
SPLIT_TARGETS = ("prid", "grid", "viper", "ilids")
# The dataset options of torchreid's data manager that a dataset built again needs too.
DATASET_OPTIONS = ("cuhk03_labeled", "cuhk03_classic_split", "market1501_500k")


def check_test_splits(test_splits: int) -> None:
    if test_splits < MIN_TEST_SPLITS:
        raise ConfigError(f"test_splits must be >= {MIN_TEST_SPLITS} (1: only split_id), got {test_splits}")


def split_ids(name: str, test_splits: int) -> list[int] | None:
    """The random splits target `name` is tested on, or ``None`` for its one fixed split."""
    return list(range(test_splits)) if name in SPLIT_TARGETS and test_splits > 1 else None


def split_datasets(name: str, root: str, split_id: int, transform, skipped=(), **dataset_kwargs) -> dict:
    """{'query': dataset, 'gallery': dataset} of target `name` on random split `split_id`, without the
    `skipped` image paths."""
    datasets = {}
    for mode in ("query", "gallery"):
        dataset = torchreid.data.datasets.init_image_dataset(
            name, root=root, split_id=split_id, mode=mode, transform=transform, verbose=False, **dataset_kwargs
        )
        dataset.data[:] = [item for item in dataset.data if item[0] not in skipped]
        datasets[mode] = dataset
    return datasets
