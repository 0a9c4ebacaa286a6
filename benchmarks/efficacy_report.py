"""The efficacy study's `report.md` and plot: policies pooled over seeds, against the base at every temperature.

A policy's name is `<family>-s<seed>/iteration-<k>` for recipe runs (pooled over seeds into `<family>/iteration-<k>`:
mean, min and max) or any other name for a single policy (baselines).
"""

from __future__ import annotations

import re
from pathlib import Path
from statistics import mean


METRICS = ("chair_response", "chair_mention", "recall", "garbled", "partner_named")
_SEEDED = re.compile(r"^(?P<family>.+)-s(?P<seed>\d+)/(?P<policy>.+)$")


def pooled(policies: dict[str, dict]) -> dict[str, dict]:
    """Policies pooled over seeds: per name and decoding, each metric's `mean`, `min` and `max` and the `seeds`."""
    groups: dict[str, list[dict]] = {}
    seeds: dict[str, list[int]] = {}
    for name, table in policies.items():
        match = _SEEDED.match(name)
        key = f"{match['family']}/{match['policy']}" if match else name
        groups.setdefault(key, []).append(table)
        seeds.setdefault(key, []).append(int(match["seed"]) if match else -1)
    result = {}
    for key, tables in groups.items():
        decodings = [d for d in tables[0] if isinstance(tables[0][d], dict) and "chair_response" in tables[0][d]]
        result[key] = {"seeds": sorted(s for s in seeds[key] if s >= 0)}
        for decoding in decodings:
            values = {metric: [table[decoding][metric] for table in tables] for metric in METRICS}
            result[key][decoding] = {
                metric: {"mean": mean(v), "min": min(v), "max": max(v)} for metric, v in values.items()
            }
            dominated = [set(table[decoding].get("dominated_by", [])) for table in tables]
            result[key][decoding]["dominated_by"] = sorted(set.union(*dominated)) if dominated else []
    return result


def relative_change(value: float, base: float) -> float:
    """(value - base) / base, the change relative to the base (0 when the base is 0)."""
    return (value - base) / base if base else 0.0


def _cell(stat: dict[str, float]) -> str:
    text = f"{100 * stat['mean']:.1f}"
    return text if stat["min"] == stat["max"] else f"{text} ({100 * stat['min']:.1f}-{100 * stat['max']:.1f})"


def decoding_table(pools: dict[str, dict], decodings: list[str]) -> list[str]:
    """The markdown rows of every policy at each of `decodings` (mean and min-max over seeds)."""
    lines = [
        "| policy | seeds | decoding | CHAIR response % | CHAIR mention % | recall % | garbled % | absent partner named % "
        "| base temperatures at least as good |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, table in pools.items():
        for decoding in decodings:
            if decoding not in table:
                continue
            row = table[decoding]
            dominated = ", ".join(row["dominated_by"]) or ("-" if name == "base" else "none")
            cells = " | ".join(_cell(row[metric]) for metric in METRICS)
            lines.append(f"| {name} | {len(table['seeds']) or 1} | {decoding} | {cells} | {dominated} |")
    return lines


def relative_table(pools: dict[str, dict], targets: dict[str, str]) -> list[str]:
    """Markdown rows of each policy's change relative to the base at greedy and at T=1 (means over seeds)."""
    base = pools["base"]
    header = ["CHAIR response", "CHAIR mention", "recall"]
    lines = [
        "| policy | " + " | ".join(f"{h}, {d}" for h in header for d in ("greedy", "T=1")) + " | garbled, T=1 |",
        "|---|" + "---|" * 7,
    ]
    for name, table in pools.items():
        if name == "base" or "greedy" not in table or "T=1" not in table:
            continue
        cells = [
            f"{100 * relative_change(table[d][m]['mean'], base[d][m]['mean']):+.0f}%"
            for m in ("chair_response", "chair_mention", "recall")
            for d in ("greedy", "T=1")
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {100 * table['T=1']['garbled']['mean']:.1f}% |")
    lines.append("| target | " + " | ".join(targets[m] for m in ("chair", "chair", "chair", "chair", "recall", "recall"))
                 + f" | {targets['garbled']} |")  # fmt: skip
    return lines


def best_of_n_table(best_of_n: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """Markdown rows of each Best-of-N pick against the same policy's greedy answer."""
    lines = [
        "| policy | answer | CHAIR response % | CHAIR mention % | recall % | garbled % | CHAIR response vs greedy "
        "| recall vs greedy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, picks in best_of_n.items():
        greedy = picks["greedy"]
        for answer, row in picks.items():
            versus = (
                f"{100 * relative_change(row['chair_response'], greedy['chair_response']):+.0f}% | "
                f"{100 * relative_change(row['recall'], greedy['recall']):+.0f}%"
            )
            lines.append(
                f"| {name} | {answer} | {100 * row['chair_response']:.1f} | {100 * row['chair_mention']:.1f} | "
                f"{100 * row['recall']:.1f} | {100 * row['garbled']:.1f} | {versus} |"
            )
    return lines


def markdown_report(figures: dict, targets: dict[str, str] | None = None) -> str:
    """The study's report: settings, the decoding table, changes relative to the base, Best-of-N, timings."""
    targets = targets or {"chair": "<= -60%", "recall": ">= -10%", "garbled": "<= 5%"}
    pools = pooled(figures["policies"])
    decodings = ["greedy"] + [f"T={t:g}" for t in figures["temperatures"] if t]
    lines = [
        "# Efficacy study",
        "",
        f"Base policy `{figures['base']}`; {figures['scenes']} held-out scenes (first scene seed "
        f"{figures['first_scene_seed']}); decodings {', '.join(decodings)}. Values are means over seeds (min-max).",
        "",
        *decoding_table(pools, decodings),
        "",
        "Change relative to the base at the same decoding:",
        "",
        *relative_table(pools, targets),
    ]
    if figures.get("best_of_n"):
        lines += ["", "Best-of-N at temperature 1.0 against the same policy's greedy answer:", ""]
        lines += best_of_n_table(figures["best_of_n"])
    if figures.get("wall_seconds"):
        lines += ["", "Wall time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in figures["wall_seconds"].items())]
    return "\n".join(lines) + "\n"


def plot(figures: dict, path: str | Path, policies: list[str] | None = None) -> Path:
    """CHAIR response against recall: the base's temperature curve and each pooled policy's (greedy marked)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pools = pooled(figures["policies"])
    decodings = ["greedy"] + [f"T={t:g}" for t in figures["temperatures"] if t]
    figure, axes = plt.subplots(figsize=(7.5, 5.5))
    for name in ["base"] + [n for n in (policies or list(pools)) if n != "base"]:
        table = pools[name]
        points = [(table[d]["recall"]["mean"], table[d]["chair_response"]["mean"]) for d in decodings if d in table]
        style = {"color": "black", "linewidth": 2.5} if name == "base" else {}
        line = axes.plot([100 * x for x, _ in points], [100 * y for _, y in points], marker="o", label=name, **style)
        axes.scatter([100 * points[0][0]], [100 * points[0][1]], s=90, marker="*", color=line[0].get_color())
    axes.set_xlabel("recall % (objects in the scene that the answer names)")
    axes.set_ylabel("CHAIR response % (answers naming an absent object)")
    axes.set_title("Each policy from greedy (star) to temperature 1.0")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)
