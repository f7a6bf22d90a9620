"""``python -m torchreid_fgdi``: the ``torchreid-fgdi`` command (`torchreid_fgdi.cli.train`)."""

import sys

from .cli.commands import train

if __name__ == "__main__":
    sys.exit(train())
