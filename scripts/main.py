"""torchreid-style entry point: `python scripts/main.py --config-file CFG [KEY VALUE ...]`.

The same as `python -m torchreid_fgdi`, placed where torchreid users look for it.
"""

from torchreid_fgdi.training import main

if __name__ == "__main__":
    main()
