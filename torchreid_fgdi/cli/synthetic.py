"""``torchreid-fgdi-synthetic --root DIR``: the generator's command."""

from __future__ import annotations

import sys

from ..synthetic.render import DOMAIN_STYLES, SyntheticSize, generate
from .parsers import command_parser
from .refusals import console_script


def synthesize(argv: list[str] | None = None) -> list[str]:
    """Writes the domains asked for (a domain already there is kept unless --overwrite); returns their folders."""
    parser = command_parser(
        "torchreid-fgdi-synthetic",
        "Writes the synthetic multi-domain re-ID benchmark in Market-1501 layout, one folder per domain.\n"
        "The images depend only on the sizes and the seed; a domain already there is kept unless --overwrite.",
        [
            "torchreid-fgdi-synthetic --root reid-data  # all five domains, about 10 s",
            "torchreid-fgdi-synthetic --root reid-data --domains synth_d --train-ids 200 --seed 1 --overwrite",
        ],
    )
    parser.add_argument("--root", required=True, help="folder to write the domains into")
    parser.add_argument(
        "--domains",
        nargs="+",
        default=list(DOMAIN_STYLES),
        choices=list(DOMAIN_STYLES),
        metavar="NAME",
        help="domains to write; synth_v is for tuning only",
    )
    parser.add_argument("--train-ids", type=int, default=SyntheticSize.train_ids, help="training identities per domain")
    parser.add_argument("--test-ids", type=int, default=SyntheticSize.test_ids, help="test identities per domain")
    parser.add_argument(
        "--max-cams-per-id",
        type=int,
        default=SyntheticSize.max_cams_per_id,
        help="most cameras an identity appears in, 2 or more",
    )
    parser.add_argument(
        "--max-images-per-cam",
        type=int,
        default=SyntheticSize.max_images_per_cam,
        help="most images of an identity per camera, 2 or more",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed of the identities, cameras and images")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace domains already there (the new one is written aside, then swapped in)",
    )
    args = parser.parse_args(argv)
    for option, least in (("train_ids", 1), ("test_ids", 1), ("max_cams_per_id", 2), ("max_images_per_cam", 2)):
        if getattr(args, option) < least:
            parser.error(f"--{option.replace('_', '-')} must be at least {least}, got {getattr(args, option)}")
    size = SyntheticSize(args.train_ids, args.test_ids, args.max_cams_per_id, args.max_images_per_cam)
    written = generate(args.root, args.domains, size, args.seed, args.overwrite)
    for folder in written:
        print(f"wrote {folder}")
    return written


main = console_script(synthesize)


if __name__ == "__main__":
    sys.exit(main())
