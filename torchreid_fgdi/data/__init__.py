"""Data: the generated benchmark, its torchreid datasets, samplers and the domain data manager."""

from .datamanager import DomainImageDataManager
from .datasets import SYNTHETIC_DATASETS, SyntheticDomain
from .samplers import DomainBalancedIdentitySampler

IMAGE_DATASETS = dict(SYNTHETIC_DATASETS)

__all__ = ["IMAGE_DATASETS", "DomainBalancedIdentitySampler", "DomainImageDataManager", "SyntheticDomain"]
