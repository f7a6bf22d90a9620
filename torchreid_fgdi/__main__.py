"""``python -m torchreid_fgdi``: the ``torchreid-fgdi`` command (`torchreid_fgdi.cli.train`)."""

import sys

from .cli.train import main

if __name__ == "__main__":
    sys.exit(main())
