"""Zero-shot attribute retrieval: does a CLIP link words to what they name in an image?

For each attribute of held-out captioned people (shirt colour, pattern, shorts or trousers,
accessory) every image is matched against one text prompt per value ("a person in a red
shirt", ...), and the best-matching prompt is its prediction. Accuracy is compared with the
majority-value rate, the best a model that ignores the image can do.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable

import torch
from PIL import Image

PROMPTS = {
    "shirt": "a person in a {} shirt",
    "pattern": "a person in a {} shirt",
    "bottom": "a person wearing {}",
    "accessory": "a person with a {}",
}


@torch.no_grad()
def attribute_accuracy(
    model: torch.nn.Module,
    tokenizer: Callable,
    preprocess: Callable[[Image.Image], torch.Tensor],
    labels_csv: str,
    batch_size: int = 256,
) -> dict[str, dict[str, float]]:
    """{attribute: {"accuracy", "majority", "values"}} over the images of `labels_csv`
    (`data.synthetic.captions` layout); accessory "none" is left out (no prompt names it)."""
    with open(labels_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    model.eval()
    images = torch.cat(
        [
            _encode(model, torch.stack([preprocess(Image.open(r["filepath"]).convert("RGB")) for r in chunk]))
            for chunk in (rows[i : i + batch_size] for i in range(0, len(rows), batch_size))
        ]
    )
    results = {}
    for attribute, template in PROMPTS.items():
        keep = [i for i, r in enumerate(rows) if r[attribute] != "none"]
        truth = [rows[i][attribute] for i in keep]
        values = sorted(set(truth))
        text = model.encode_text(tokenizer([template.format(v) for v in values]))
        text = text / text.norm(dim=-1, keepdim=True)
        predicted = (images[keep] @ text.t()).argmax(1).tolist()
        correct = sum(values[p] == t for p, t in zip(predicted, truth))
        results[attribute] = {
            "accuracy": correct / len(truth),
            "majority": Counter(truth).most_common(1)[0][1] / len(truth),
            "values": len(values),
        }
    return results


def _encode(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    feats = model.encode_image(images)
    return feats / feats.norm(dim=-1, keepdim=True)


def above_majority(result: dict[str, float]) -> bool:
    """Whether an attribute's zero-shot accuracy beats answering its majority value for every image."""
    return result["accuracy"] > result["majority"]


def format_accuracy(results: dict[str, dict[str, float]]) -> str:
    """A Markdown table of the probe, with its verdict per attribute."""
    lines = [
        "| attribute | values | zero-shot accuracy | majority value | above majority |",
        "|---|---|---|---|---|",
    ]
    for attribute, r in results.items():
        verdict = "yes" if above_majority(r) else "no"
        lines.append(f"| {attribute} | {r['values']} | {r['accuracy']:.1%} | {r['majority']:.1%} | {verdict} |")
    return "\n".join(lines)
