"""``python -m torchreid_fgdi``: the ``torchreid-fgdi`` command (`torchreid_fgdi.training`)."""

from .training import main

if __name__ == "__main__":
    main()
