"""``torchreid-fgdi-weights``: list the released weights `hub.REGISTRY` knows, or download one.

A name also works as ``fgdi.clip_weights`` (or ``pretrained=`` of the model builders).
"""

from __future__ import annotations

import argparse
import os.path as osp

from . import hub


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="torchreid-fgdi-weights", description=__doc__.split("\n\n")[0])
    parser.add_argument("--download", metavar="NAME", help="fetch NAME into torch's cache and print its path")
    args = parser.parse_args(argv)
    if args.download:
        print(hub.get_weights(args.download))
        return
    for name, entry in hub.REGISTRY.items():
        cached = osp.isfile(osp.join(hub.cache_dir(), entry.filename))
        print(f"{name:<22} {'cached' if cached else 'not cached':<11} {entry.description}\n{'':<34} {entry.url}")


if __name__ == "__main__":
    main()
