"""Peak memory and time of a stage-3 step with and without ``fgdi.grad_checkpointing``.

ViT-B/16 at 224x224 (random weights), each setting in a fresh process, so that its peak resident
memory is its own: one small warm-up step allocates Adam's state, then one step at each batch size
is measured as the rise of the peak resident memory above the memory held before it. The
difference between two batch sizes divided by their difference in images is the activation memory
per image, from which the memory of larger batches can be estimated; the ratio of the step times
with and without checkpointing at the larger batch too. ``--tiny``: the same code on fgdi_tiny at
its 64x32, batches 4 and 8 (seconds; the test suite runs it so; its memory figures mean little).

    python scripts/benchmarks/stage3_memory.py [--batches 8 16] [--precision bf16] [--tiny]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch
from _common import peak_rss_gib, stage3_datamanager

from torchreid_fgdi.config import RunSettings, load_config
from torchreid_fgdi.engine import ImageFGDIEngine
from torchreid_fgdi.models import build_fgdi

NUM_IDS, NUM_DOMAINS = 64, 3
MODELS = {False: ("fgdi", (224, 224)), True: ("fgdi_tiny", (64, 32))}  # by --tiny: variant, image size


def _rss_gib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**30


def _batch(size: int, image_size) -> dict:
    pids = torch.arange(size // 4).repeat_interleave(4) % NUM_IDS
    return {"img": torch.randn(size, 3, *image_size), "pid": pids, "dsetid": pids % NUM_DOMAINS}


def measure(batch_size: int, checkpointing: bool, precision: str, tiny: bool = False) -> dict:
    """One step's peak-memory rise (GiB) and seconds, in this process."""
    torch.manual_seed(0)
    variant, image_size = MODELS[tiny]
    datamanager = stage3_datamanager(NUM_IDS, NUM_DOMAINS)
    opts = ["fgdi.precision", precision, "fgdi.grad_checkpointing", str(checkpointing)]
    settings = RunSettings.from_config(load_config(opts=opts)).fgdi
    model = build_fgdi(variant, NUM_IDS, num_domains=NUM_DOMAINS, pretrained=False)
    engine = ImageFGDIEngine(datamanager, model, settings=settings, use_gpu=False)
    engine.enter("stage3")
    engine.model.train()
    engine.forward_backward(_batch(4, image_size))  # Adam's state exists from here on
    held = _rss_gib()
    start = time.perf_counter()
    engine.forward_backward(_batch(batch_size, image_size))
    return {"seconds": time.perf_counter() - start, "peak_rise": peak_rss_gib() - held}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs=2, default=[8, 16], help="two batch sizes, multiples of 4")
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    parser.add_argument("--tiny", action="store_true", help="fgdi_tiny, batches 4 and 8: seconds (for the tests)")
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # batch, checkpointing: the child's job
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(int(args.one[0]), args.one[1] == "True", args.precision, args.tiny)))
        return
    if args.tiny:
        args.batches = [4, 8]
    started = time.time()
    variant, (height, width) = MODELS[args.tiny]
    print(f"stage-3 step, {variant} at {height}x{width}, {args.precision}, {torch.get_num_threads()} threads")
    rows = {}
    for checkpointing in (False, True):
        for batch in args.batches:
            command = [sys.executable, __file__, "--precision", args.precision, *(["--tiny"] if args.tiny else [])]
            child = subprocess.run([*command, "--one", str(batch), str(checkpointing)], capture_output=True, text=True)
            if child.returncode:
                sys.exit(child.stderr)
            rows[checkpointing, batch] = json.loads(child.stdout.strip().splitlines()[-1])
            row = rows[checkpointing, batch]
            print(
                f"grad_checkpointing {checkpointing!s:<5} batch {batch:>3}: peak memory +{row['peak_rise']:.2f} GiB, "
                f"{row['seconds']:.1f} s/step",
                flush=True,
            )
        small, large = (rows[checkpointing, b] for b in args.batches)
        per_image = (large["peak_rise"] - small["peak_rise"]) / (args.batches[1] - args.batches[0]) * 1024
        print(f"grad_checkpointing {checkpointing!s:<5} activation memory per image: {per_image:.0f} MiB")
    large = args.batches[1]
    ratio = rows[True, large]["seconds"] / rows[False, large]["seconds"]
    print(f"grad_checkpointing step time at batch {large}: {ratio:.2f}x the step without it")
    print(f"took {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
