"""Result tables: one row per target, marked source or unseen, and the averages over targets.

The engines keep each result as ``results.json`` stores it (`as_stored`), so a table rebuilt from
the file (``torchreid-fgdi-benchmark --collect``) rounds exactly as the run's did.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

import numpy as np
from scipy import stats

from .rerank import K1, K2, LAMBDA

RANKS = (1, 5, 10)
SOURCE, UNSEEN = "source", "unseen"
AVERAGES = "averages"  # the results.json key of the per-domain means, beside the targets' names
RERANKED = "reranked"  # the results.json key present when the distances were re-ranked (test.rerank)
DIAGNOSTICS = "diagnostics"  # the results.json key of what a text-guided method's text stages did
RESERVED = (AVERAGES, RERANKED, DIAGNOSTICS)  # results.json keys beside the targets' names


def rerank_note(models: Sequence[str] = ()) -> str:
    """The line below a table of re-ranked numbers (of `models`, in a side-by-side table): a re-ranked
    mAP is not comparable with a plain one."""
    whose = f" of {', '.join(models)}" if models else ""
    return (
        f"Re-ranked distances{whose} (test.rerank: k-reciprocal, k1 {K1}, k2 {K2}, lambda {LAMBDA}): "
        "not comparable with numbers that are not."
    )


def average_results(results: dict[str, dict], names: Iterable[str]) -> dict:
    """Mean mAP and CMC over the targets `names` (the literature's 'average over targets')."""
    names = list(names)
    length = min(len(results[n]["cmc"]) for n in names)
    return {
        "mAP": float(np.mean([results[n]["mAP"] for n in names])),
        "cmc": np.mean([results[n]["cmc"][:length] for n in names], axis=0),
    }


def split_summary(per_split: list[dict]) -> dict:
    """A target's result over its random splits: the mean (as `mAP` / `cmc`), the spread, each split."""
    mean = average_results(dict(enumerate(per_split)), range(len(per_split)))
    return {
        **mean,
        "mAP_std": float(np.std([r["mAP"] for r in per_split])),
        "rank1_std": float(np.std([r["cmc"][0] for r in per_split])),
        "splits": per_split,
    }


def images_tested(sizes: Sequence[Sequence[int]]) -> str:
    """'16 query / 41 gallery images', or over random splits 'mean of 10 splits of 50 query / 98-102 gallery images'."""

    def span(values: list[int]) -> str:
        return f"{min(values)}" if min(values) == max(values) else f"{min(values)}-{max(values)}"

    counts = f"{span([q for q, _ in sizes])} query / {span([g for _, g in sizes])} gallery images"
    return counts if len(sizes) == 1 else f"mean of {len(sizes)} splits of {counts}"


def result_to_json(res: dict) -> dict:
    """A result as ``results.json`` keeps it; ``images``: the (query, gallery) image counts it was
    tested on, per split, so results of other test splits are never averaged or compared as one."""
    out = {"mAP": res["mAP"], "cmc": np.asarray(res["cmc"])[:50].tolist()}
    if "images" in res:
        out["images"] = [[int(q), int(g)] for q, g in res["images"]]
    if "splits" in res:
        out.update(mAP_std=res["mAP_std"], rank1_std=res["rank1_std"])
        out["splits"] = [result_to_json(r) for r in res["splits"]]
    return out


def result_from_json(data: dict) -> dict:
    res = {**data, "cmc": np.asarray(data["cmc"], dtype=np.float64)}
    if "splits" in data:
        res["splits"] = [result_from_json(r) for r in data["splits"]]
    return res


def as_stored(res: dict) -> dict:
    """`res` as ``results.json`` keeps it (float64, CMC to rank 50).

    The evaluators give a float32 CMC (torchreid's, bit for bit); an average of float32 values and
    one of the same values read back as float64 can fall on either side of a rounding tie.
    """
    return result_from_json(result_to_json(res))


def domains(names: Iterable[str], sources: Collection[str]) -> dict[str, str]:
    """Each target's domain: a training source, or unseen."""
    return {name: SOURCE if name in sources else UNSEEN for name in names}


def results_to_json(
    results: dict[str, dict], sources: Collection[str], reranked: bool = False, diagnostics: dict | None = None
) -> dict:
    """``results.json``: every target's result with its ``domain``, then ``averages``: for each domain
    with targets, the mean over them (`average_results`) and their names (``targets``); for
    re-ranked distances, ``reranked`` with the re-ranking's settings; and a text-guided method's
    ``diagnostics`` as given (`engine.diagnostics.measure`)."""
    taken = [name for name in RESERVED if name in results]
    if taken:
        raise ValueError(
            f"a target may not be named {', '.join(map(repr, taken))}: results.json keeps the domain means, "
            "the re-ranking and the diagnostics under these keys"
        )
    kind = domains(results, sources)
    out = {name: {**result_to_json(res), "domain": kind[name]} for name, res in results.items()}
    groups = {group: [n for n in results if kind[n] == group] for group in (SOURCE, UNSEEN)}
    out[AVERAGES] = {
        group: {**result_to_json(average_results(results, names)), "targets": names}
        for group, names in groups.items()
        if names
    }
    if reranked:
        out[RERANKED] = {"k1": K1, "k2": K2, "lambda": LAMBDA}
    if diagnostics:
        out[DIAGNOSTICS] = diagnostics
    return out


def results_from_json(data: dict) -> dict[str, dict]:
    """The per-target results of a ``results.json`` (older files, without ``averages``, too)."""
    return {name: result_from_json(res) for name, res in data.items() if name not in RESERVED}


def format_split_table(results: dict[str, dict]) -> str:
    """Per-split mAP / Rank-1 of the targets tested over random splits, with mean ± std ('' if none)."""
    split = {n: r for n, r in results.items() if "splits" in r}
    if not split:
        return ""
    lines = ["", "| target | splits | mAP (mean ± std) | R1 (mean ± std) | mAP per split |", "|---|---|---|---|---|"]
    for name, res in split.items():
        each = " ".join(f"{100 * r['mAP']:.1f}" for r in res["splits"])
        lines.append(
            f"| {name} | {len(res['splits'])} | {100 * res['mAP']:.1f} ± {100 * res['mAP_std']:.1f} | "
            f"{100 * res['cmc'][0]:.1f} ± {100 * res['rank1_std']:.1f} | {each} |"
        )
    return "\n".join(lines) + "\n"


def _value(res: dict, rank: int | None) -> float | None:
    """mAP (rank None) or Rank-k in percent; None when the CMC is shorter than k."""
    if rank is None:
        return 100 * res["mAP"]
    return 100 * float(res["cmc"][rank - 1]) if len(res["cmc"]) >= rank else None


def _percent(res: dict, rank: int | None) -> str:
    value = _value(res, rank)
    return "-" if value is None else f"{value:.1f}"


def _cell(per_seed: list[dict], rank: int | None) -> list[str]:
    """In percent: one seed's value, or the mean and sample std (ddof=1) over several seeds."""
    if len(per_seed) == 1:
        return [_percent(per_seed[0], rank)]
    values = [_value(res, rank) for res in per_seed]
    if None in values:
        return ["-", "-"]
    return [f"{np.mean(values):.1f}", f"{np.std(values, ddof=1):.1f}"]


def _rows(results: dict[str, dict], sources) -> list[tuple[str, str, dict]]:
    """(target, 'source'/'unseen', result) per target, then the averages over each group of >1."""
    kind = domains(results, sources)
    rows = [(n, kind[n], r) for n, r in results.items()]
    for group in (SOURCE, UNSEEN):
        names = [n for n in results if kind[n] == group]
        if len(names) > 1:
            rows.append(("**average**", group, average_results(results, names)))
    return rows


def format_table(
    results: dict[str, dict],
    sources: Sequence[str],
    title: str = "",
    ranks: Sequence[int] = RANKS,
    reranked: bool = False,
) -> str:
    """A Markdown table of mAP / Rank-k (each of `ranks`, ``-`` past a short CMC) in percent, with the
    averages over source and over unseen targets; re-ranked numbers say so below it."""
    head = "| target | domain | mAP | " + " | ".join(f"R{r}" for r in ranks) + " |"
    lines = [f"### {title}" if title else "", head, "|" + "---|" * (3 + len(ranks))]
    for name, kind, res in _rows(results, sources):
        lines.append(f"| {name} | {kind} | " + " | ".join(_percent(res, r) for r in (None, *ranks)) + " |")
    table = "\n".join(line for line in lines if line) + "\n"
    return table + (f"\n{rerank_note()}\n" if reranked else "")


def t_critical(n: int) -> float:
    """The two-sided 95% t value for the mean of `n` paired differences (n - 1 degrees of freedom):
    the verdict's bound and the table's note read the same one."""
    return float(stats.t.ppf(0.975, n - 1))


def paired_difference(values: Sequence[float], base: Sequence[float]) -> tuple[float, float, str]:
    """The mean of the per-seed differences ``values[i] - base[i]`` (seed i of both), its standard
    error (their sample std / sqrt(n)) and a verdict: ``higher`` or ``lower`` when the two-sided 95%
    t-interval (n - 1 degrees of freedom) of the mean excludes 0, else ``tie``. Needs n >= 2."""
    diffs = np.subtract(values, base, dtype=np.float64)
    mean, se = float(np.mean(diffs)), float(np.std(diffs, ddof=1) / np.sqrt(len(diffs)))
    if abs(mean) <= t_critical(len(diffs)) * se:
        return mean, se, "tie"
    return mean, se, "higher" if mean > 0 else "lower"


def _difference(per_seed: list[dict], base: list[dict], rank: int | None) -> list[str]:
    """`paired_difference` of mAP (rank None) or Rank-k in points: mean, standard error, verdict."""
    values, reference = [_value(r, rank) for r in per_seed], [_value(r, rank) for r in base]
    if None in values or None in reference:
        return ["-", "-", "-"]
    mean, se, verdict = paired_difference(values, reference)
    return [f"{mean:+.1f}", f"{se:.1f}", verdict]


def _difference_table(tables: dict[str, list[list]], versus: str, seeds: int) -> str:
    """The Markdown of each other model's paired difference from `versus`, in mAP and R1."""
    others = [m for m in tables if m != versus]
    md = [
        "",
        f"Difference from {versus}, paired by seed: the mean of the per-seed differences ± its standard error "
        f"(std of the differences / sqrt({seeds})), in points; higher or lower when the 95% t-interval "
        f"(t = {t_critical(seeds):.2f} for {seeds} seeds) excludes 0, else tie.",
        "",
        "| target | domain | " + " | ".join(f"{m} mAP | {m} R1" for m in others) + " |",
        "|" + "---|" * (2 + 2 * len(others)),
    ]
    base = tables[versus]
    for i, (name, kind, _) in enumerate(base[0]):
        cells = []
        for m in others:
            for rank in (None, 1):
                mean, se, verdict = _difference([r[i][2] for r in tables[m]], [r[i][2] for r in base], rank)
                cells.append("-" if mean == "-" else f"{mean} ± {se} {verdict}")
        md.append(f"| {name} | {kind} | " + " | ".join(cells) + " |")
    return "\n".join(md)


def compare_tables(
    runs: dict[str, list[dict[str, dict]]],
    sources: Sequence[str],
    reference: dict[str, tuple[float, float]] | None = None,
    versus: str | None = None,
) -> tuple[str, str]:
    """Several models' results side by side, as Markdown (mAP / R1) and CSV (mAP, R1, R5, R10).

    With several seeds a cell is the mean ± sample std over the seeds (an average row averages each
    seed's targets first, so its spread is the spread of that average), the Markdown ends with a
    line giving the number of seeds, and the CSV has the columns
    ``model,target,domain,seeds,mAP,mAP_std,R1,R1_std,R5,R5_std,R10,R10_std``. With several seeds
    and models, each model's difference from `versus` (default: the first model), paired by seed
    (`paired_difference`), follows as a second table and as the CSV columns
    ``versus,mAP_diff,mAP_diff_se,mAP_verdict,R1_diff,R1_diff_se,R1_verdict`` (``-`` on `versus`'s rows).

    Args:
        runs: model label -> that model's per-row results (the same rows for all), one dict per
            seed, in the same order of seeds for every model (one: plain numbers).
        sources: the rows that are training domains (the others are unseen).
        reference: optional row -> (mAP, R1) in percent, shown as a ``paper`` column.
        versus: the model the others are compared with.
    """
    labels = list(runs)
    counts = {len(per_seed) for per_seed in runs.values()}
    if len(counts) != 1 or 0 in counts:
        got = ", ".join(f"{label}: {len(per_seed)}" for label, per_seed in runs.items())
        raise ValueError(f"every model needs results for the same number of seeds (at least one); got {got}")
    seeds = counts.pop()
    versus = versus or labels[0]
    if versus not in runs:
        raise ValueError(f"the model to compare with, {versus!r}, is not one of the models: {', '.join(labels)}")
    differences = seeds > 1 and len(labels) > 1
    tables = {label: [_rows(results, sources) for results in per_seed] for label, per_seed in runs.items()}
    head = [f"{m} mAP | {m} R1" for m in labels] + (["paper mAP | paper R1"] if reference is not None else [])
    md = ["| target | domain | " + " | ".join(head) + " |", "|" + "---|" * (2 + 2 * len(head))]
    metrics = ("mAP", *(f"R{r}" for r in RANKS))
    if seeds == 1:
        csv = ["model,target,domain," + ",".join(metrics)]
    else:
        csv = ["model,target,domain,seeds," + ",".join(f"{k},{k}_std" for k in metrics)]
        if differences:
            csv[0] += ",versus," + ",".join(f"{k}_diff,{k}_diff_se,{k}_verdict" for k in ("mAP", "R1"))
    for i, (name, kind, _) in enumerate(tables[labels[0]][0]):
        cells = []
        for m in labels:
            per_seed = [rows[i][2] for rows in tables[m]]
            values = [_cell(per_seed, r) for r in (None, *RANKS)]
            cells.append(" | ".join(" ± ".join(v) for v in values[:2]))
            counted = [str(seeds)] if seeds > 1 else []
            compared = []
            if differences:
                base = [rows[i][2] for rows in tables[versus]]
                compared = [versus] + [x for r in (None, 1) for x in _difference(per_seed, base, r)]
                compared = compared if m != versus else ["-"] * len(compared)
            csv.append(",".join([m, name.strip("*"), kind, *counted] + [x for v in values for x in v] + compared))
        if reference is not None:
            cells.append(" | ".join(f"{v:.1f}" for v in reference[name]) if name in reference else "- | -")
        md.append(f"| {name} | {kind} | " + " | ".join(cells) + " |")
    if seeds > 1:
        md.append(f"\nmAP and R1 in percent: mean ± sample std over {seeds} seeds.")
    if differences:
        md.append(_difference_table(tables, versus, seeds))
    return "\n".join(md) + "\n", "\n".join(csv) + "\n"
