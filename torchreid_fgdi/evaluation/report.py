"""Result tables: one row per target, marked source or unseen, and the averages over targets."""

from __future__ import annotations

import numpy as np

RANKS = (1, 5, 10)


def average_results(results: dict[str, dict], names) -> dict:
    """Mean mAP and CMC over the targets `names` (the literature's 'average over targets')."""
    names = list(names)
    length = min(len(results[n]["cmc"]) for n in names)
    return {
        "mAP": float(np.mean([results[n]["mAP"] for n in names])),
        "cmc": np.mean([results[n]["cmc"][:length] for n in names], axis=0),
    }


def format_table(results: dict[str, dict], sources, title: str = "") -> str:
    """A Markdown table of mAP / Rank-k in percent, with the averages over source and over unseen targets."""
    head = "| target | domain | mAP | " + " | ".join(f"R{r}" for r in RANKS) + " |"
    lines = [f"### {title}" if title else "", head, "|" + "---|" * (3 + len(RANKS))]

    def row(name: str, kind: str, res: dict) -> str:
        ranks = " | ".join(f"{100 * res['cmc'][r - 1]:.1f}" if len(res["cmc"]) >= r else "-" for r in RANKS)
        return f"| {name} | {kind} | {100 * res['mAP']:.1f} | {ranks} |"

    unseen = [n for n in results if n not in sources]
    seen = [n for n in results if n in sources]
    for name, res in results.items():
        lines.append(row(name, "unseen" if name in unseen else "source", res))
    for kind, names in (("source", seen), ("unseen", unseen)):
        if len(names) > 1:
            lines.append(row("**average**", kind, average_results(results, names)))
    return "\n".join(line for line in lines if line) + "\n"
