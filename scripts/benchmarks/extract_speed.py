"""Feature extraction for fgdi ViT-B/16 in eval mode on CPU: images/s by precision, memory layout
and DataLoader workers, over real image files (the synthetic benchmark, resized to 224x224 by the
authors' test transform). ``--tiny``: the same code on fgdi_tiny at its 64x32 over a few images,
in seconds (the test suite runs it so).

    python scripts/benchmarks/extract_speed.py [--images 96] [--tiny]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
import torchreid

from torchreid_fgdi.data.transforms import clip_fgdi_transforms
from torchreid_fgdi.models import build_fgdi
from torchreid_fgdi.synthetic.render import SyntheticSize, generate_domain


def _loader(root: str, images: int, workers: int, size=(224, 224)) -> torch.utils.data.DataLoader:
    _, test_transform = clip_fgdi_transforms(*size)
    dataset = torchreid.data.datasets.init_image_dataset(
        "synth_a", root=root, mode="gallery", transform=test_transform, verbose=False
    )
    subset = torch.utils.data.Subset(dataset, range(min(images, len(dataset))))
    return torch.utils.data.DataLoader(subset, batch_size=32, num_workers=workers)


@torch.no_grad()
def images_per_second(model, loader, dtype, channels_last: bool) -> float:
    model = (
        model.to(memory_format=torch.channels_last)
        if channels_last
        else model.to(memory_format=torch.contiguous_format)
    )
    count, start = 0, time.perf_counter()
    for data in loader:
        images = data["img"].to(memory_format=torch.channels_last) if channels_last else data["img"]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
            model(images)
        count += len(images)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--tiny", action="store_true", help="fgdi_tiny over 8 images: seconds (for the tests)")
    args = parser.parse_args()
    variant, size, images = ("fgdi_tiny", (64, 32), 8) if args.tiny else ("fgdi", (224, 224), args.images)
    root = tempfile.mkdtemp()
    generate_domain(root, "synth_a", SyntheticSize(train_ids=4, test_ids=4 if args.tiny else 40))
    model = build_fgdi(variant, 10, pretrained=False).eval()
    images_per_second(model, _loader(root, 32, 0, size), "fp32", False)  # warm-up
    base = None
    for dtype, channels_last, workers in (
        ("fp32", False, 0),
        ("fp32", False, 2),
        ("fp32", True, 2),
        ("bf16", False, 2),
        ("bf16", True, 2),
    ):
        speed = images_per_second(model, _loader(root, images, workers, size), dtype, channels_last)
        base = base or speed
        layout = "channels-last" if channels_last else "contiguous"
        print(f"{dtype} {layout:13s} workers {workers}: {speed:6.1f} images/s ({speed / base:.2f}x)", flush=True)


if __name__ == "__main__":
    main()
