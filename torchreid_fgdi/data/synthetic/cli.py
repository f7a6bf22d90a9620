"""``torchreid-fgdi-synthetic --root DIR`` (or ``python -m torchreid_fgdi.data.synthetic``): the generator's command."""

from __future__ import annotations

import argparse

from . import DOMAIN_STYLES, SyntheticSize, generate


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="torchreid-fgdi-synthetic",
        description="Writes the synthetic multi-domain re-ID benchmark in Market-1501 layout.",
    )
    parser.add_argument("--root", required=True, help="folder to write the domains into")
    parser.add_argument("--domains", nargs="+", default=list(DOMAIN_STYLES), choices=list(DOMAIN_STYLES))
    parser.add_argument("--train-ids", type=int, default=SyntheticSize.train_ids)
    parser.add_argument("--test-ids", type=int, default=SyntheticSize.test_ids)
    parser.add_argument("--max-cams-per-id", type=int, default=SyntheticSize.max_cams_per_id)
    parser.add_argument("--max-images-per-cam", type=int, default=SyntheticSize.max_images_per_cam)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="regenerate domains that exist")
    args = parser.parse_args(argv)
    size = SyntheticSize(args.train_ids, args.test_ids, args.max_cams_per_id, args.max_images_per_cam)
    for folder in generate(args.root, args.domains, size, args.seed, args.overwrite):
        print(f"wrote {folder}")
