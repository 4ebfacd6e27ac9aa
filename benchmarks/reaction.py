"""How a controller's LR answers the val loss, read off a benchmark's records.

Bold driver cuts the LR after an interval whose val loss rose and raises it after one
where it fell, so near the end of a run, where the val loss often stops falling, its LR
drifts down. A learned controller may hold its LR there instead. For each condition and
controller this prints, over the second half of every run: the share of intervals whose
val loss did not fall, and the mean change of log10 LR (the mean over the layers) at the
next decision after such an interval and after one where the val loss fell::

    python -m benchmarks.reaction runs/bench/summary.json [--controllers ganno,bold_driver]
        [--results runs/bench/results.jsonl]

Only the records the summary was built from count (as for `benchmarks.goals`), and runs
that diverged are left out. Bold driver's rows read log10(0.5) = -0.301 and
log10(1.25) = +0.097 by construction (where no LR bound holds it), a check on the reading
itself.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.goals import summary_records
from ganno_env.jsonl import read_lines

DEFAULT_CONTROLLERS = ("ganno", "bold_driver")


@dataclass
class Reaction:
    """One controller's answers on one condition, over the second half of its runs."""

    after_rise: list[float] = field(default_factory=list)  # log10 LR changes
    after_fall: list[float] = field(default_factory=list)

    @property
    def share_rose(self) -> float:
        total = len(self.after_rise) + len(self.after_fall)
        return len(self.after_rise) / total if total else float("nan")

    def add_run(self, val_curve: Sequence[float], lr_schedule: Sequence[Sequence[float]]) -> None:
        """`val_curve[t]` is the val loss that decision t sees (t = 0: at reset, then after
        interval t - 1) and `lr_schedule[t]` the layers' LRs it chose for interval t."""
        val = np.asarray(val_curve, dtype=np.float64)
        log_lr = np.log10(np.asarray(lr_schedule, dtype=np.float64)).mean(axis=1)
        decisions = min(len(log_lr), len(val))
        for t in range(max(1, decisions // 2), decisions):
            change = float(log_lr[t] - log_lr[t - 1])
            (self.after_rise if val[t] >= val[t - 1] else self.after_fall).append(change)


def reactions(
    summary: dict[str, Any], records: Sequence[dict[str, Any]], controllers: Sequence[str]
) -> dict[str, dict[str, Reaction]]:
    """{condition: {controller: Reaction}} over the runs that did not diverge."""
    table: dict[str, dict[str, Reaction]] = {}
    for controller in controllers:
        for record in summary_records(summary, records, controller):
            if record.get("diverged") or not record.get("lr_schedule"):
                continue
            by_controller = table.setdefault(record["condition"], {})
            by_controller.setdefault(controller, Reaction()).add_run(
                record["val_curve"], record["lr_schedule"]
            )
    return table


def _mean(values: list[float]) -> str:
    return f"{np.mean(values):+.3f}" if values else "-"


def reaction_table(table: dict[str, dict[str, Reaction]], controllers: Sequence[str]) -> str:
    """Markdown: one row per condition, three columns per controller."""
    header = ["condition"]
    for name in controllers:
        header += [f"{name}: val did not fall", "LR change after a rise", "after a fall"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for condition, by_controller in table.items():
        cells = [condition]
        for name in controllers:
            reaction = by_controller.get(name)
            if reaction is None:
                cells += ["-", "-", "-"]
            else:
                share = reaction.share_rose
                cells += [f"{share:.2f}", _mean(reaction.after_rise), _mean(reaction.after_fall)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("summary", type=Path, help="a benchmark's summary.json")
    parser.add_argument(
        "--controllers",
        default=",".join(DEFAULT_CONTROLLERS),
        help="comma-separated controllers of the benchmark (default: ganno,bold_driver)",
    )
    parser.add_argument(
        "--results", type=Path, help="the records (default: results.jsonl beside the summary)"
    )
    args = parser.parse_args(argv)
    results = args.results or args.summary.parent / "results.jsonl"
    if not results.is_file():
        parser.error(f"no records at {results}; name the benchmark's results.jsonl (--results)")
    summary = json.loads(args.summary.read_text())
    controllers = [name for name in args.controllers.split(",") if name]
    missing = [name for name in controllers if name not in summary.get("controllers", ())]
    if not controllers or missing:
        parser.error(
            f"--controllers {args.controllers!r}: {missing or 'none given'} not in this "
            f"benchmark; allowed: {', '.join(summary.get('controllers', ()))}"
        )
    table = reactions(summary, read_lines(results), controllers)
    print(reaction_table(table, controllers))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
