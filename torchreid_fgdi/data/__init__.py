"""Data: fixed public datasets, image reading, samplers, transforms, the data manager."""

from .datamanager import DomainImageDataManager
from .public import PUBLIC_DATASETS
from .samplers import SAMPLERS, DomainBalancedIdentitySampler

__all__ = ["PUBLIC_DATASETS", "SAMPLERS", "DomainBalancedIdentitySampler", "DomainImageDataManager"]
