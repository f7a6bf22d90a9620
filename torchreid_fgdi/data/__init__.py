"""Data: the generated benchmark and its datasets, fixed public datasets, samplers, transforms, the data manager."""

from .datamanager import DomainImageDataManager
from .datasets import SYNTHETIC_DATASETS, SyntheticDomain
from .public import PUBLIC_DATASETS
from .samplers import DomainBalancedIdentitySampler

IMAGE_DATASETS = {**SYNTHETIC_DATASETS, **PUBLIC_DATASETS}

__all__ = ["IMAGE_DATASETS", "DomainBalancedIdentitySampler", "DomainImageDataManager", "SyntheticDomain"]
