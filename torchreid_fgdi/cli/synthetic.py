"""``torchreid-fgdi-synthetic --root DIR``: the generator's command."""

from __future__ import annotations

import dataclasses
import sys

from ..synthetic.render import DEFAULT_SIZES, DOMAIN_STYLES, SyntheticSize, generate
from .parsers import command_parser
from .refusals import console_script

SIZE_HELP = {
    "train_ids": "training identities per domain",
    "test_ids": "test identities per domain",
    "max_cams_per_id": "most cameras an identity appears in, 2 or more",
    "max_images_per_cam": "most images of an identity per camera, 2 or more",
}


def synthesize(argv: list[str] | None = None) -> list[str]:
    """Writes the domains asked for (a domain already there is kept unless --overwrite); returns their folders."""
    parser = command_parser(
        "torchreid-fgdi-synthetic",
        "Writes the synthetic multi-domain re-ID benchmark in Market-1501 layout, one folder per domain.\n"
        "The images depend only on the sizes and the seed, which each domain's generated.json records;\n"
        "a domain already there is kept unless --overwrite. Sizes or a seed other than the defaults\n"
        "mark the domain as made on purpose: training and testing then use it as it is.",
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
    for field in dataclasses.fields(SyntheticSize):
        own = [
            f"{name} {getattr(size, field.name)}"
            for name, size in DEFAULT_SIZES.items()
            if getattr(size, field.name) != field.default
        ]
        parser.add_argument(
            f"--{field.name.replace('_', '-')}",
            type=int,
            help=f"{SIZE_HELP[field.name]} (default: {'; '.join([str(field.default), *own])})",
        )
    parser.add_argument("--seed", type=int, default=0, help="random seed of the identities, cameras and images")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace domains already there (the new one is written aside, then swapped in)",
    )
    args = parser.parse_args(argv)
    given = {option: getattr(args, option) for option in SIZE_HELP if getattr(args, option) is not None}
    for option, value in given.items():
        least = 2 if option.startswith("max_") else 1
        if value < least:
            parser.error(f"--{option.replace('_', '-')} must be at least {least}, got {value}")
    written = []
    for name in args.domains:
        size = dataclasses.replace(DEFAULT_SIZES[name], **given)
        written += generate(args.root, [name], size, args.seed, args.overwrite)
    for folder in written:
        print(f"wrote {folder}")
    return written


main = console_script(synthesize)


if __name__ == "__main__":
    sys.exit(main())
