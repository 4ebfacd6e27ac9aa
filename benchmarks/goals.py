"""The GANNO robustness goals, read off a benchmark's `summary.json`.

`python -m benchmarks.goals runs/main/bench/summary.json` prints, as markdown, the numbers
that `docs/results.md` tracks for every policy: overall IQM test loss against the oracle's,
divergences, the probability that GANNO beats bold driver and its own global ablation, the
worst hand-made schedule on the held-out LR conditions, whether goal 1 is met, and one row
per condition. Where the benchmark's `results.jsonl` lies beside the summary, it also
counts the networks on which ganno beats bold driver, pair by pair. For scale, it prints
how often the oracle's constant LR, picked in hindsight, beats bold driver.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.stats import probability_of_improvement_ci
from benchmarks.summary import as_loss
from ganno_env.jsonl import read_lines

POLICIES = ("ganno", "ganno_global")
ORACLES = ("oracle_grid", "oracle")
LR_CONDITIONS = ("unseen_lr_high", "unseen_lr_low")
HIGH_LR_P = 0.9  # goal 1: P(ganno better) against each hand-made schedule at LR 1 and 3


def _iqm(metrics: dict[str, Any] | None) -> float:
    if not metrics or "iqm_test_loss" not in metrics:
        return math.nan
    value = metrics["iqm_test_loss"]
    return float(value[0] if isinstance(value, list) else value)


def _ci(triple: Sequence[float] | None) -> str:
    return f"{triple[0]:.2f} [{triple[1]:.2f}, {triple[2]:.2f}]" if triple else "-"


def _chance(poi: dict[str, Any], base: str, cond: str | None = None) -> list[float] | None:
    """P(ganno better than `base`) [point, low, high], overall or on one condition."""
    entry = poi.get(base)
    if entry is None:
        return None
    return entry["overall"] if cond is None else entry["per_condition"].get(cond)


def _hand_made(summary: dict[str, Any]) -> list[str]:
    """The summary's hand-made schedules: every controller but the policies and oracles."""
    return [c for c in summary["controllers"] if c not in POLICIES + ORACLES]


def _point(triple: Sequence[float] | None) -> str:
    return f"{triple[0]:.2f}" if triple else "-"


def paired_wins(
    summary: dict[str, Any], records: Sequence[dict[str, Any]], base: str = "bold_driver"
) -> tuple[int, int]:
    """(networks where ganno ends with the lower test loss, networks with both runs), pairing
    ganno's run with `base`'s on the same condition and seed.

    P(ganno better) compares every run with every run of its condition; on a condition that
    spans many kinds of network (`heldin`) that sits nearer 0.5 than how often ganno beats
    `base` on the network itself. Only the records the summary was built from count (its
    `inputs`, else its suite version); a lost run's test loss counts as infinite.
    """
    theirs = {
        (r["condition"], r["seed"]): as_loss(r.get("test_loss"))
        for r in summary_records(summary, records, base)
    }
    pairs = [
        (as_loss(r.get("test_loss")), theirs[key])
        for r in summary_records(summary, records, "ganno")
        if (key := (r["condition"], r["seed"])) in theirs
    ]
    return sum(ours < other for ours, other in pairs), len(pairs)


def oracle_against(
    summary: dict[str, Any], base: str = "bold_driver"
) -> tuple[float, float, float] | None:
    """P(the oracle better than `base`) with its 95% CI, as the summary's P(ganno better)
    is computed; None where either has no runs.

    The oracle is each condition's constant LR from the suite's grid with the lowest mean
    final val loss on these very networks: picked in hindsight, which no schedule can be.
    Its P says how far a well-chosen LR alone gets against `base` on this suite: a scale
    for ganno's P, not a bar it must clear.
    """
    per_condition = summary["per_condition"]
    oracle = next((o for o in ORACLES if o in summary["overall"]), None)
    conditions = [c for c in summary["conditions"] if {oracle, base} <= per_condition[c].keys()]
    if oracle is None or not conditions:
        return None
    k = min(len(per_condition[c][name]["test_loss"]) for c in conditions for name in (oracle, base))

    def matrix(name: str) -> np.ndarray:
        rows = [per_condition[c][name]["test_loss"][:k] for c in conditions]
        return np.array([[as_loss(v) for v in row] for row in rows]).T

    return probability_of_improvement_ci(matrix(oracle), matrix(base))


def summary_records(
    summary: dict[str, Any], records: Sequence[dict[str, Any]], controller: str
) -> list[dict[str, Any]]:
    """`controller`'s records that the summary was built from: those with its `inputs`, or
    (a summary without them) those of its suite version."""
    inputs = summary.get("inputs")

    def counted(record: dict[str, Any]) -> bool:
        if record.get("controller") != controller:
            return False
        if inputs is not None:
            return record.get("inputs") == inputs.get(controller)
        return record.get("suite_version") == summary.get("version")

    return [r for r in records if counted(r)]


def goal_lines(
    summary: dict[str, Any], records: Sequence[dict[str, Any]] | None = None
) -> list[str]:
    """Markdown lines: the headline numbers, then one table row per condition (`records`,
    the benchmark's results, add the paired count against bold driver)."""
    overall, per_condition = summary["overall"], summary["per_condition"]
    poi = summary["probability_of_improvement"]
    oracle = next((o for o in ORACLES if o in overall), None)
    hand_made = _hand_made(summary)
    ganno, oracle_iqm = _iqm(overall.get("ganno")), _iqm(overall.get(oracle))
    lines = [
        f"- overall IQM test loss: ganno {ganno:.3f}, oracle {oracle_iqm:.3f} "
        f"(ratio {ganno / oracle_iqm:.2f}); ganno_global {_iqm(overall.get('ganno_global')):.3f}"
        f", bold_driver {_iqm(overall.get('bold_driver')):.3f}; ganno diverged "
        f"{overall['ganno']['diverged']}/{overall['ganno']['runs']}",
        f"- P(ganno better than bold_driver), overall: {_ci(_chance(poi, 'bold_driver'))}",
        f"- P(ganno better than ganno_global), overall: {_ci(_chance(poi, 'ganno_global'))}",
    ]
    if records is not None:
        wins, pairs = paired_wins(summary, records)
        if pairs:
            lines.insert(
                2,
                f"- paired with bold_driver on the same network (condition and seed): ganno "
                f"ends lower on {wins} of {pairs} ({wins / pairs:.2f})",
            )
    scale = oracle_against(summary)
    if scale is not None:
        lines.append(
            f"- for scale, P(oracle better than bold_driver), overall: {_ci(scale)} (the "
            "oracle: each condition's best constant LR of the grid, picked on these networks)"
        )
    for cond in LR_CONDITIONS:
        if cond not in per_condition:
            continue
        chances = {b: poi[b]["per_condition"][cond] for b in hand_made}
        worst = min(chances, key=lambda b: chances[b][0])
        lowest = min(chances, key=lambda b: chances[b][1])
        lines.append(
            f"- {cond}: ganno IQM {_iqm(per_condition[cond]['ganno']):.3f}, diverged "
            f"{per_condition[cond]['ganno']['diverged']}; lowest P(ganno better) vs hand-made: "
            f"{worst} {_ci(chances[worst])}; lowest CI bound: {lowest} {chances[lowest][1]:.2f}"
        )
    lines.append(goal_1(summary))
    lines += [
        "",
        "| condition | ganno | ganno_global | bold_driver | oracle | P(> bold) | P(> global) |",
        "|---|---|---|---|---|---|---|",
    ]
    for cond in summary["conditions"]:
        row = per_condition[cond]
        lines.append(
            f"| {cond} | {_iqm(row.get('ganno')):.3f} | {_iqm(row.get('ganno_global')):.3f} | "
            f"{_iqm(row.get('bold_driver')):.3f} | {_iqm(row.get(oracle)):.3f} | "
            f"{_point(_chance(poi, 'bold_driver', cond))} | "
            f"{_point(_chance(poi, 'ganno_global', cond))} |"
        )
    return lines


def goal_1(summary: dict[str, Any]) -> str:
    """Goal 1, met or missed and why: no network lost at the held-out LRs; on
    `unseen_lr_high` P(ganno better) >= 0.9 against every hand-made schedule with the
    interval's lower bound above 0.5; on `unseen_lr_low` P = 1.0 against every one."""
    per_condition, poi = summary["per_condition"], summary["probability_of_improvement"]
    missing = [cond for cond in LR_CONDITIONS if cond not in per_condition]
    if missing:
        return f"- goal 1: not measured ({', '.join(missing)} not in the summary)"
    hand_made = _hand_made(summary)
    reasons = []
    for cond in LR_CONDITIONS:
        lost = per_condition[cond]["ganno"]["diverged"]
        if lost:
            reasons.append(f"{cond}: {lost} diverged")
        for base in hand_made:
            point, low, high = poi[base]["per_condition"][cond]
            if cond == "unseen_lr_high" and (point < HIGH_LR_P or low <= 0.5):
                reasons.append(f"{cond}: P {point:.2f} [{low:.2f}, {high:.2f}] against {base}")
            if cond == "unseen_lr_low" and point < 1.0:
                reasons.append(f"{cond}: P {point:.2f} against {base}")
    return "- goal 1: met" if not reasons else f"- goal 1: missed ({'; '.join(reasons)})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("summary", type=Path, help="a benchmark's summary.json")
    args = parser.parse_args(argv)
    summary = json.loads(args.summary.read_text())
    if "ganno" not in summary["overall"] or "ganno" not in summary["controllers"]:
        parser.error(f"{args.summary} has no ganno results (run ganno bench with --policy)")
    results = args.summary.parent / "results.jsonl"
    records = read_lines(results) if results.is_file() else None
    print("\n".join(goal_lines(summary, records)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
