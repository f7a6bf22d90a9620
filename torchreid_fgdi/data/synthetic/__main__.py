"""``python -m torchreid_fgdi.data.synthetic``: the ``torchreid-fgdi-synthetic`` command."""

from .cli import main

if __name__ == "__main__":
    main()
