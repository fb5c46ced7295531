"""README tables and plots from ``framefusion eval`` results (eval.json), one run or two training seeds.

    python scripts/accuracy_report.py docs/eval_v2/seed0/eval.json docs/eval_v2/seed1/eval.json --out docs/eval_v2

Writes ``report.md`` in ``--out``:
- the main table of the first run: one row per method, one column per cost, each cell the accuracy with
  its 95% interval ("used X" where the method spent less than the cost), rows by their mean, the best
  cell of a column in bold;
- the split by camera motion: each method's change against untouched (points) on still-camera and
  moving-camera clips, per cost;
- per question kind at one cost (``--kind-cost``);
- with a second run: both seeds side by side (accuracy and rank per method, mean over costs), so the
  reader sees which conclusions survive a different training run;
and ``motion.png``: accuracy against cost, still camera and moving camera side by side, with intervals.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from framefusion.tools.compare import pyplot, save_figure  # noqa: E402
from framefusion.tools.evaluate import MOVING, STILL, UNTOUCHED  # noqa: E402

NAMES = {
    "framefusion": "FrameFusion",
    "framefusion-merge-only": "FrameFusion merge-only",
    "framefusion-prune-only": "FrameFusion prune-only",
    "fastv": "FastV (K=2)",
    "evs": "EVS",
    "vidcom2": "VidCom2",
    "fastvid": "FastVID",
    "holitom": "HoliTom",
    "input-merge": "input merge (DyCoke-style)",
    "random": "random pruning",
    "uniform": "uniform tokens",
    "uniform-frames": "uniform frames",
    "vidcom2@0.5+framefusion": "VidCom2 to 0.5, then FrameFusion",
    "evs@0.5+framefusion": "EVS to 0.5, then FrameFusion",
}


def name(label: str) -> str:
    return NAMES.get(label, label)


def load(path: str | Path) -> tuple[dict, list[dict]]:
    data = json.loads(Path(path).read_text())
    return data, data["rows"]


def by_method(rows: list[dict]) -> dict[str, dict[float, dict]]:
    """label -> cost -> row (untouched left out)."""
    table: dict[str, dict[float, dict]] = {}
    for r in rows:
        if r["label"] != UNTOUCHED:
            table.setdefault(r["label"], {})[r["cost"]] = r
    return table


def costs_of(table: dict[str, dict[float, dict]]) -> list[float]:
    """Every cost some method of ``table`` ran at, ascending."""
    return sorted({c for per in table.values() for c in per})


def mean_accuracy(per_cost: dict[float, dict], costs: list[float]) -> float:
    """A method's mean accuracy over those of ``costs`` it ran at."""
    return float(np.mean([per_cost[c]["accuracy"] for c in costs if c in per_cost]))


def by_mean(methods, table: dict[str, dict[float, dict]], costs: list[float]) -> list[str]:
    """``methods`` from the highest mean accuracy over ``costs`` down (ties keep their order)."""
    return sorted(methods, key=lambda m: -mean_accuracy(table[m], costs))


def cost_cells(per_cost: dict[float, dict], costs: list[float], fmt) -> list[str]:
    """One table cell per cost: ``fmt(row, cost)``, or empty where the method did not run at it."""
    return [fmt(per_cost[c], c) if c in per_cost else "" for c in costs]


def cell(acc: float, ci: list[float] | None, used: float | None = None, bold: bool = False) -> str:
    text = f"{acc:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
    text = f"**{text}**" if bold else text
    return text + (f" (used {used:.2f})" if used is not None else "")


def main_table(rows: list[dict]) -> list[str]:
    table, base = by_method(rows), rows[0]
    costs = costs_of(table)
    best = {c: max(table[m][c]["accuracy"] for m in table if c in table[m]) for c in costs}

    def accuracy(r: dict, c: float) -> str:
        used = r["achieved_cost"] if r["achieved_cost"] < c - 0.02 else None
        return cell(r["accuracy"], r.get("ci"), used, r["accuracy"] == best[c])

    lines = ["| method | " + " | ".join(f"cost {c:g}" for c in costs) + " | mean |", "|---" * (len(costs) + 2) + "|"]
    lines.append(f"| untouched | {cell(base['accuracy'], base.get('ci'))} |" + " |" * len(costs))
    for m in by_mean(table, table, costs):
        cells = cost_cells(table[m], costs, accuracy)
        lines.append(f"| {name(m)} | " + " | ".join(cells) + f" | {mean_accuracy(table[m], costs):.3f} |")
    return lines


def motion_table(rows: list[dict]) -> list[str]:
    """Points lost against untouched on each camera group: still / moving, per cost."""
    table, base = by_method(rows), rows[0]
    if not base.get("per_motion"):
        return ["(no camera-motion labels in this run)"]
    costs = costs_of(table)
    b = base["per_motion"]

    def change(r: dict, c: float) -> str:
        pm = r["per_motion"]
        return f"{100 * (pm[STILL] - b[STILL]):+.1f} / {100 * (pm[MOVING] - b[MOVING]):+.1f}"

    lines = [f"untouched: still camera {b[STILL]:.3f}, camera moves {b[MOVING]:.3f}", "",
             "| method | " + " | ".join(f"cost {c:g}: still / moving" for c in costs) + " |",
             "|---" * (len(costs) + 1) + "|"]  # fmt: skip
    for m in by_mean(table, table, costs):
        lines.append(f"| {name(m)} | " + " | ".join(cost_cells(table[m], costs, change)) + " |")
    return lines


def kind_table(rows: list[dict], cost: float) -> list[str]:
    table, base = by_method(rows), rows[0]
    kinds = sorted(base["per_kind"])
    lines = [f"| method (cost {cost:g}) | " + " | ".join(kinds) + " |", "|---" * (len(kinds) + 1) + "|"]
    lines.append("| untouched | " + " | ".join(cell(base["per_kind"][k], base["per_kind_ci"].get(k)) for k in kinds)
                 + " |")  # fmt: skip
    ranked = [m for m in table if cost in table[m]]
    for m in sorted(ranked, key=lambda m: -table[m][cost]["accuracy"]):
        r = table[m][cost]
        lines.append(f"| {name(m)} | " + " | ".join(cell(r["per_kind"][k], r["per_kind_ci"].get(k)) for k in kinds)
                     + " |")  # fmt: skip
    return lines


def seeds_table(first: list[dict], second: list[dict]) -> list[str]:
    """Mean accuracy over the common costs and rank, per method, under each training seed."""
    a, b = by_method(first), by_method(second)
    common = sorted(set(a) & set(b))
    costs = sorted({c for m in common for c in a[m]} & {c for m in common for c in b[m]})

    ma, mb = ({m: mean_accuracy(t[m], costs) for m in common} for t in (a, b))
    rank_a = {m: i + 1 for i, m in enumerate(by_mean(common, a, costs))}
    rank_b = {m: i + 1 for i, m in enumerate(by_mean(common, b, costs))}
    lines = [f"untouched: seed 0 {first[0]['accuracy']:.3f}, seed 1 {second[0]['accuracy']:.3f}; "
             f"mean over costs {', '.join(f'{c:g}' for c in costs)}", "",
             "| method | seed 0: mean (rank) | seed 1: mean (rank) | " +
             " | ".join(f"cost {c:g}: seed 0 / seed 1" for c in costs) + " |",
             "|---" * (len(costs) + 3) + "|"]  # fmt: skip
    for m in sorted(common, key=lambda m: rank_a[m]):
        per = [f"{a[m][c]['accuracy']:.3f} / {b[m][c]['accuracy']:.3f}" if c in a[m] and c in b[m] else ""
               for c in costs]  # fmt: skip
        lines.append(f"| {name(m)} | {ma[m]:.3f} ({rank_a[m]}) | {mb[m]:.3f} ({rank_b[m]}) | " + " | ".join(per) + " |")
    return lines


def motion_plot(rows: list[dict], path: Path, methods: list[str] | None = None) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    table, base = by_method(rows), rows[0]
    methods = [m for m in (methods or list(table)) if m in table]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, group in zip(axes, (STILL, MOVING)):
        ax.axhline(100 * base["per_motion"][group], color="black", linestyle="--", linewidth=0.8, label="untouched")
        for m in methods:
            costs = sorted(table[m])
            y = np.array([100 * table[m][c]["per_motion"][group] for c in costs])
            ci = np.array([table[m][c]["per_motion_ci"][group] for c in costs]) * 100
            err = np.clip(np.stack([y - ci[:, 0], ci[:, 1] - y]), 0, None)
            ax.errorbar(costs, y, yerr=err, marker="o", capsize=2, label=name(m),
                        linewidth=2.2 if m == "framefusion" else 1.0)  # fmt: skip
        ax.set(title=group, xlabel="cost (share of vision-token compute)", xlim=(0, 0.55))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (%)")
    axes[1].legend(fontsize=7, loc="lower right")
    fig.suptitle("Synthetic QA v2: accuracy by camera motion (bars: 95% bootstrap intervals)")
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="eval.json of the first run (and optionally a second seed's)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--kind-cost", type=float, default=0.2)
    p.add_argument("--plot-methods", nargs="*", default=["framefusion", "framefusion-prune-only", "fastv", "evs", "vidcom2",
                                                          "fastvid", "holitom", "random"])  # fmt: skip
    args = p.parse_args(argv)
    runs = [load(r) for r in args.runs]
    rows = runs[0][1]
    parts = ["## Accuracy", "", *main_table(rows), "", "## By camera motion (points vs untouched)", "",
             *motion_table(rows), "", f"## Per question kind at cost {args.kind_cost:g}", "",
             *kind_table(rows, args.kind_cost)]  # fmt: skip
    if len(runs) > 1:
        parts += ["", "## Two training seeds", "", *seeds_table(rows, runs[1][1])]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.md").write_text("\n".join(parts) + "\n")
    motion_plot(rows, args.out / "motion.png", args.plot_methods)
    print("\n".join(parts))


if __name__ == "__main__":
    main()
