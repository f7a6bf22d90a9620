"""torchreid-style entry point: `python scripts/main.py --config-file CFG [KEY VALUE ...]`.

The same as `python -m torchreid_fgdi` (`torchreid_fgdi.cli.train`), placed where torchreid users look for it.
"""

import sys

from torchreid_fgdi.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
