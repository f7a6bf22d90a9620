"""``python -m torchreid_fgdi``: the ``torchreid-fgdi`` command (`torchreid_fgdi.training`)."""

import sys

from .commands import train

if __name__ == "__main__":
    sys.exit(train())
