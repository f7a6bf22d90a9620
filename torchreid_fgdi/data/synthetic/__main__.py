"""``python -m torchreid_fgdi.data.synthetic``: the ``torchreid-fgdi-synthetic`` command."""

import sys

from ...commands import synthetic

if __name__ == "__main__":
    sys.exit(synthetic())
