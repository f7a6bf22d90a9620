"""Stage-3 training step: prompt features cached once (this engine) vs re-encoded at every step.

The authors' code re-encodes each batch's identity and domain prompt features with the text
encoder before every stage-3 step, although they are constant there; this engine encodes them
once. Same model, batch and loss; steps alternate between the two ways so that both see the
same machine load. Prints steps/s of each and the ratio, for fgdi_tiny and for ViT-B/16, with
the training step in fp32 and under bf16 autocast; the re-encoding runs outside autocast, as in
the authors' code (their AMP covers the training step only). ``--tiny``: fgdi_tiny at batch 8,
one step (seconds; the test suite runs it so).

    python scripts/benchmarks/stage3_step.py [--steps 6] [--tiny]
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import stage3_datamanager

from torchreid_fgdi.config import RunSettings, load_config
from torchreid_fgdi.engine import ImageFGDIEngine
from torchreid_fgdi.models import build_fgdi

NUM_IDS, NUM_DOMAINS = 64, 3


def _engine(variant: str, image_size, precision: str) -> ImageFGDIEngine:
    """The engine over a stand-in data manager: stage 3 reads only the identities' domains from it."""
    datamanager = stage3_datamanager(NUM_IDS, NUM_DOMAINS)
    model = build_fgdi(variant, NUM_IDS, num_domains=NUM_DOMAINS, pretrained=False, image_size=image_size)
    settings = RunSettings.from_config(load_config(opts=["fgdi.precision", precision])).fgdi
    engine = ImageFGDIEngine(datamanager, model, settings=settings, use_gpu=False)
    engine.enter("stage3")
    return engine


def _reencoded_step(engine: ImageFGDIEngine, batch: dict) -> None:
    """The authors' step: encode the batch's prompts (eval, no grad), then the same training step."""
    engine.model.eval()
    with torch.no_grad():
        engine.model.text_features(batch["pid"])
        engine.model.text_features(batch["pid"], batch["dsetid"])
    engine.model.train()
    engine.forward_backward(batch)


def bench(variant: str, batch_size: int, image_size, steps: int, precision: str) -> tuple[float, float]:
    torch.manual_seed(0)
    engine = _engine(variant, image_size, precision)
    pids = torch.arange(batch_size // 4).repeat_interleave(4) * 3 % NUM_IDS
    batch = {"img": torch.randn(batch_size, 3, *image_size), "pid": pids, "dsetid": pids % NUM_DOMAINS}
    engine.model.train()
    engine.forward_backward(batch)  # warm-up
    _reencoded_step(engine, batch)
    cached = reencoded = 0.0
    for _ in range(steps):
        start = time.perf_counter()
        engine.model.train()
        engine.forward_backward(batch)
        cached += time.perf_counter() - start
        start = time.perf_counter()
        _reencoded_step(engine, batch)
        reencoded += time.perf_counter() - start
    return steps / cached, steps / reencoded


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--tiny", action="store_true", help="fgdi_tiny at batch 8, one step: seconds (for the tests)")
    args = parser.parse_args()
    runs = (("fgdi_tiny", 48, (64, 32)), ("fgdi", 8, (224, 224)))
    if args.tiny:
        runs, args.steps = (("fgdi_tiny", 8, (64, 32)),), 1
    print(f"torch threads: {torch.get_num_threads()}")
    for variant, batch_size, size in runs:
        for precision in ("fp32", "bf16"):
            cached, reencoded = bench(variant, batch_size, size, args.steps, precision)
            print(
                f"{variant} batch {batch_size} at {size[0]}x{size[1]}, step in {precision}: "
                f"cached {cached:.2f} steps/s, "
                f"re-encoded every step {reencoded:.2f} steps/s, ratio {cached / reencoded:.2f}x",
                flush=True,
            )


if __name__ == "__main__":
    main()
