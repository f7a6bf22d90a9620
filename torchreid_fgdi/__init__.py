"""CLIP-FGDI for torchreid: `import torchreid_fgdi` registers the plugin's datasets, models, samplers
and transforms into torchreid and applies the fixes in `torchreid_fgdi.integration.compat`
(`compat.apply()`, the only place the package changes torchreid or torch; `compat.revert()` undoes them)."""

from .integration import compat

compat.apply()

from .integration.registry import register_all  # noqa: E402

register_all()

__version__ = "0.1.0"
