"""torchreid-style entry point: `python scripts/main.py --config-file CFG [KEY VALUE ...]`.

The same as `python -m torchreid_fgdi`, placed where torchreid users look for it.
"""

import sys

from torchreid_fgdi.cli.commands import train

if __name__ == "__main__":
    sys.exit(train())
