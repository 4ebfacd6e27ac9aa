"""Turn a suite's `results.jsonl` into a summary, a Markdown report and plots.

Why: a user who trains an LR-setting agent wants to know whether it beats the hand-made
schedules (constant, cosine, bold driver, LARS, ...) on conditions it never saw, and by how
much. With a handful of seeds per condition a table of means answers that badly: one diverged
run moves a mean anywhere, and a point estimate hides how uncertain it is. So the report gives,
per controller, the interquartile mean (IQM) of the final test loss with a 95% stratified-
bootstrap confidence interval, the probability that the reference agent (``ganno``) beats each
baseline on a random run, a score normalised between the initial loss (0) and the best constant
LR picked on validation loss (the oracle, 1), the steps needed to reach a target loss, and
plots of the learning curves, the per-layer LR schedules, the intervals and performance
profiles (see `benchmarks.stats`).

The oracle is taken from the runner's `oracle_grid` records: per condition the grid LR with
the lowest mean final *validation* loss over seeds; its *test* loss is reported as a
reference, never as a competitor (picking on test loss would flatter it). The tuned cosine
schedules (`cosine_tuned`, `warmup_cosine_tuned`) are picked from their grids the same way
and reported as references with their tuning cost: one run per grid LR.

    build_report("runs/quick/results.jsonl", load_suite("quick"), "runs/quick")
    print(summary_table(summary))
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import stats
from benchmarks.suites import TRAINING_REFERENCE, Suite, differences_from_training

__all__ = ["build_report", "summary_table"]

ORACLE = "oracle"
GRID = "oracle_grid"
TUNED = ("cosine_tuned", "warmup_cosine_tuned")
# Grid controllers of the runner -> the name of the picked (best val loss) LR in the report.
PICKED = {GRID: ORACLE, **{name: name for name in TUNED}}
REFERENCES = (*TUNED, ORACLE)  # tuned on the suite's own runs: reported, never bolded
HEATMAP_BASELINES = ("constant", "cosine", "bold_driver", "lars", ORACLE)
CONFIDENCE = 0.95


# ---------------------------------------------------------------- helpers


def _hand_made() -> set[str]:
    try:
        from ganno_env.controllers import HAND_MADE
    except ImportError:  # pragma: no cover - the package is always installed with benchmarks
        return set()
    return set(HAND_MADE)


def _float(x: Any) -> float:
    """A record value as a float; None (e.g. a NaN written as null) becomes NaN."""
    return math.nan if x is None else float(x)


def _loss(x: Any) -> float:
    """A loss for the score matrices: NaN (a run that blew up) counts as +inf, i.e. worst."""
    v = _float(x)
    return math.inf if math.isnan(v) else v


def _clean(obj: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN/inf to None, tuples to lists."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    return obj


def _lr_of(variant: str) -> float:
    return float(variant.removeprefix("lr="))


def steps_to_target(curve: Sequence[Any], interval: int, target: float) -> float:
    """Inner steps until the val loss first reaches `target` (curve[i] is at step i*interval).

    NaN when it never does (a NaN point never counts as reached).
    """
    for i, v in enumerate(curve):
        v = _float(v)
        if not math.isnan(v) and v <= target:
            return float(i * interval)
    return math.nan


def _ci(scores: np.ndarray, reps: int, seed: int) -> list[float]:
    return list(stats.stratified_bootstrap_ci(scores, stats.iqm, reps, CONFIDENCE, seed))


def _order(names: set[str], reference: str) -> list[str]:
    """Reference first, then its relatives (ganno_global), the rest by name, then the tuned
    references and the oracle."""
    others = sorted(n for n in names if n not in REFERENCES)
    key = {n: (0 if n == reference else 1 if n.startswith(reference) else 2, n) for n in others}
    return sorted(others, key=key.__getitem__) + [n for n in REFERENCES if n in names]


def _metrics(
    runs: list[dict],
    tests: np.ndarray,
    targets: np.ndarray | None,
    ref: np.ndarray | None,
    worst: np.ndarray | None,
    reps: int,
    seed: int,
) -> dict[str, Any]:
    """The metrics of one controller on a [seeds, conditions] test-loss matrix.

    `runs` are the records behind the matrix, column by column; `targets`, `ref` and `worst`
    are per-condition vectors (None where the oracle is missing).
    """
    acc = [_float(r.get("test_accuracy")) for r in runs]
    acc = [a for a in acc if not math.isnan(a)]
    auc = np.array([_loss(r.get("auc_log_val")) for r in runs])
    out: dict[str, Any] = {
        "runs": len(runs),
        "iqm_test_loss": _ci(tests, reps, seed),
        "mean_test_loss": float(np.mean(tests)),
        "mean_test_accuracy": float(np.mean(acc)) if acc else None,
        "diverged": int(sum(bool(r.get("diverged")) for r in runs)),
        "iqm_auc_log_val": stats.iqm(auc),
        "normalized_score": None,
        "steps_to_target": None,
    }
    if ref is not None and worst is not None:
        norm = stats.normalized_score(tests, reference=ref, worst=worst)
        out["normalized_score"] = _ci(norm, reps, seed)
    if targets is not None:
        k = tests.shape[0]
        steps = np.array(
            [
                steps_to_target(
                    r.get("val_curve") or [], int(r.get("interval") or 1), targets[j // k]
                )
                for j, r in enumerate(runs)
            ]
        )
        reached = steps[~np.isnan(steps)]
        out["steps_to_target"] = {
            "fraction_reached": float(reached.size / steps.size) if steps.size else None,
            "median_steps": float(np.median(reached)) if reached.size else None,
        }
    return out


# ---------------------------------------------------------------- the summary


def _collect(records: list[dict], suite: Suite, notes: list[str]):
    """Index the suite version's records: (cond, controller) -> {seed: record}, and per grid
    controller (cond, variant) -> {seed: record}."""
    runs: dict[tuple[str, str], dict[int, dict]] = {}
    grids: dict[str, dict[tuple[str, str], dict[int, dict]]] = {}
    other_versions = sum(r.get("suite_version") != suite.version for r in records)
    if other_versions:
        notes.append(f"{other_versions} records of other suite versions ignored.")
    unknown: set[str] = set()
    duplicates = 0
    for r in records:
        if r.get("suite_version") != suite.version:
            continue
        cond, ctrl = r["condition"], r["controller"]
        if cond not in suite.conditions:
            unknown.add(cond)
            continue
        if ctrl == ORACLE:
            raise ValueError(f"controller name {ORACLE!r} is reserved for the picked grid LR")
        if ctrl in PICKED:
            bucket = grids.setdefault(ctrl, {}).setdefault((cond, r.get("variant", "")), {})
        else:
            bucket = runs.setdefault((cond, ctrl), {})
        duplicates += r["seed"] in bucket
        bucket[r["seed"]] = r  # a repeated key: the later line wins
    if unknown:
        notes.append(f"records of conditions outside the suite ignored: {sorted(unknown)}.")
    if duplicates:
        notes.append(f"{duplicates} repeated (condition, controller, seed) records: kept the last.")
    return runs, grids


def _pick_oracle(
    grid: dict[tuple[str, str], dict[int, dict]], cond: str
) -> tuple[float | None, dict[int, dict]]:
    """The grid LR with the lowest mean final val loss over the seeds every LR has."""
    variants = {v: seeds for (c, v), seeds in grid.items() if c == cond}
    if not variants:
        return None, {}
    common = set.intersection(*(set(s) for s in variants.values()))

    def mean_val(v: str) -> float:
        seeds = common or set(variants[v])
        return float(np.mean([_loss(variants[v][s]["final_val_loss"]) for s in seeds]))

    best = min(sorted(variants, key=_lr_of), key=mean_val)
    return _lr_of(best), variants[best]


def _summarise(
    records: list[dict], suite: Suite, reference: str, reps: int, seed: int
) -> tuple[dict, dict, dict[str, np.ndarray]]:
    """(summary, runs by (condition, controller) then seed, overall test-loss matrices)."""
    notes: list[str] = []
    runs, grids = _collect(records, suite, notes)
    picked_lr: dict[str, dict[str, float | None]] = {}
    for grid_ctrl, name in PICKED.items():
        grid = grids.get(grid_ctrl, {})
        if not grid and grid_ctrl != GRID:
            continue  # the tuned baselines are optional
        picked_lr[name] = {}
        for cond in suite.conditions:
            lr, picked = _pick_oracle(grid, cond)
            picked_lr[name][cond] = lr
            if picked:
                runs[(cond, name)] = picked
            elif name == ORACLE and any(c == cond for c, _ in runs):
                notes.append(
                    f"{cond}: no {GRID} records, so no oracle, target or normalised score."
                )
    oracle_lr = picked_lr.pop(ORACLE)
    conditions = [c for c in suite.conditions if any(k[0] == c for k in runs)]
    missing = [c for c in suite.conditions if c not in conditions]
    if missing:
        notes.append(f"conditions without any result: {missing}.")
    controllers = _order({k[1] for k in runs}, reference)

    # Per condition: the seeds every controller there has.
    seeds: dict[str, list[int]] = {}
    for cond in conditions:
        present = [c for c in controllers if (cond, c) in runs]
        common = sorted(set.intersection(*(set(runs[(cond, c)]) for c in present)))
        dropped = sum(len(runs[(cond, c)]) - len(common) for c in present)
        if dropped:
            notes.append(
                f"{cond}: {dropped} runs dropped to keep the seeds all controllers share "
                f"({len(common)} seeds)."
            )
        seeds[cond] = common
    conditions = [c for c in conditions if seeds[c]]

    def cell(cond: str, ctrl: str, chosen: list[int]) -> list[dict]:
        return [runs[(cond, ctrl)][s] for s in chosen]

    # Per-condition reference values (oracle loss, initial loss, target).
    ref_loss: dict[str, float | None] = {}
    worst: dict[str, float] = {}
    target: dict[str, float | None] = {}
    for cond in conditions:
        everyone = [r for c in controllers if (cond, c) in runs for r in cell(cond, c, seeds[cond])]
        worst[cond] = float(np.mean([_float(r["initial_val_loss"]) for r in everyone]))
        if (cond, ORACLE) in runs:
            oracle_runs = cell(cond, ORACLE, seeds[cond])
            ref_loss[cond] = float(np.mean([_loss(r["test_loss"]) for r in oracle_runs]))
            val = float(np.mean([_loss(r["final_val_loss"]) for r in oracle_runs]))
            target[cond] = suite.target_factor * val
            if not all(map(math.isfinite, (ref_loss[cond], val, worst[cond]))):
                notes.append(f"{cond}: oracle or initial loss not finite, so no normalised score.")
                ref_loss[cond] = target[cond] = None
        else:
            ref_loss[cond] = target[cond] = None

    per_condition: dict[str, dict[str, dict]] = {}
    for cond in conditions:
        per_condition[cond] = {}
        has_ref = ref_loss[cond] is not None
        for ctrl in controllers:
            if (cond, ctrl) not in runs:
                continue
            chosen = cell(cond, ctrl, seeds[cond])
            tests = np.array([[_loss(r["test_loss"])] for r in chosen])
            m = _metrics(
                chosen,
                tests,
                np.array([target[cond]]) if has_ref else None,
                np.array([ref_loss[cond]]) if has_ref else None,
                np.array([worst[cond]]),
                reps,
                seed,
            )
            m["test_loss"] = tests[:, 0].tolist()
            m["seeds"] = list(seeds[cond])
            if has_ref:
                m["steps_to_target"]["target"] = target[cond]
            per_condition[cond][ctrl] = m

    # Overall: every condition, the same number of runs from each (the fewest any has).
    k = min((len(seeds[c]) for c in conditions), default=0)
    if conditions and any(len(seeds[c]) > k for c in conditions):
        notes.append(f"overall aggregates use the first {k} shared seeds of each condition.")
    overall: dict[str, dict] = {}
    matrices: dict[str, np.ndarray] = {}
    with_ref = [c for c in conditions if ref_loss[c] is not None]
    if conditions and len(with_ref) < len(conditions):
        notes.append(f"overall normalised scores and targets only over {with_ref}.")
    for ctrl in controllers:
        lacks = [c for c in conditions if (c, ctrl) not in runs]
        if lacks or not conditions:
            overall[ctrl] = {"missing_conditions": lacks}
            notes.append(f"{ctrl} has no results on {lacks}: left out of the overall aggregates.")
            continue
        chosen = [r for c in conditions for r in cell(c, ctrl, seeds[c][:k])]
        tests = np.array([_loss(r["test_loss"]) for r in chosen]).reshape(len(conditions), k).T
        matrices[ctrl] = tests
        m = _metrics(chosen, tests, None, None, None, reps, seed)
        if with_ref:
            cols = [conditions.index(c) for c in with_ref]
            sub = [r for c in with_ref for r in cell(c, ctrl, seeds[c][:k])]
            part = _metrics(
                sub,
                tests[:, cols],
                np.array([target[c] for c in with_ref]),
                np.array([ref_loss[c] for c in with_ref]),
                np.array([worst[c] for c in with_ref]),
                reps,
                seed,
            )
            m["normalized_score"] = part["normalized_score"]
            m["steps_to_target"] = part["steps_to_target"]
        m["missing_conditions"] = []
        overall[ctrl] = m

    # Probability that the reference beats each baseline.
    poi: dict[str, dict] = {}
    if reference not in controllers:
        notes.append(f"reference {reference!r} has no results: no probability of improvement.")
    else:
        for base in controllers:
            if base in (reference, ORACLE):
                continue
            entry: dict[str, Any] = {"overall": None, "per_condition": {}}
            if reference in matrices and base in matrices:
                entry["overall"] = list(
                    stats.probability_of_improvement_ci(
                        matrices[reference], matrices[base], True, reps, CONFIDENCE, seed
                    )
                )
            for cond in conditions:
                a, b = per_condition[cond].get(reference), per_condition[cond].get(base)
                if a is None or b is None:
                    continue
                x, y = np.array([a["test_loss"]]).T, np.array([b["test_loss"]]).T
                entry["per_condition"][cond] = list(
                    stats.probability_of_improvement_ci(x, y, True, reps, CONFIDENCE, seed)
                )
            poi[base] = entry

    notes += _oddities(per_condition, controllers)
    summary = {
        "suite": suite.name,
        "version": suite.version,
        "reference": reference,
        "conditions": conditions,
        "seeds": seeds,
        "controllers": controllers,
        "oracle_lr": oracle_lr,
        "tuned_lr": picked_lr,
        "tuning_runs": len(suite.oracle_grid),
        "target_factor": suite.target_factor,
        "overall": overall,
        "per_condition": per_condition,
        "probability_of_improvement": poi,
        "notes": notes,
    }
    return summary, runs, matrices


def _oddities(per_condition: dict[str, dict[str, dict]], controllers: list[str]) -> list[str]:
    """Pairs of controllers with identical test losses in every shared run (a wiring bug?)."""
    notes = []
    for i, a in enumerate(controllers):
        for b in controllers[i + 1 :]:
            shared = [c for c in per_condition.values() if a in c and b in c]
            if shared and all(c[a]["test_loss"] == c[b]["test_loss"] for c in shared):
                notes.append(f"{a} and {b} have identical test losses in every run.")
    return notes


# ---------------------------------------------------------------- text


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    x = float(x)
    if math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if abs(x) >= 1e4:
        return f"{x:.{digits}g}"
    text = f"{x:.{digits}f}"
    return text.removeprefix("-") if float(text) == 0 else text  # no "-0.00"


def _fmt_ci(triple: Sequence[Any] | None, digits: int = 3) -> str:
    if not triple:
        return "n/a"
    p, lo, hi = triple
    return f"{_fmt(p, digits)} [{_fmt(lo, digits)}, {_fmt(hi, digits)}]"


def _rows(summary: dict) -> tuple[list[str], list[list[str]]]:
    ref = summary.get("reference", "ganno")
    header = [
        "controller",
        "IQM test loss [95% CI]",
        "mean test acc",
        f"P({ref} better) [CI]",
        "normalised score",
        "diverged",
    ]
    rows = []
    for ctrl in summary["controllers"]:
        m = summary["overall"].get(ctrl, {})
        name = f"{ctrl} (reference)" if ctrl in REFERENCES else ctrl
        if "iqm_test_loss" not in m:
            lacks = ", ".join(m.get("missing_conditions", []))
            rows.append([name, f"n/a (no results on {lacks})", "", "", "", ""])
            continue
        p = summary["probability_of_improvement"].get(ctrl, {}).get("overall")
        rows.append(
            [
                name,
                _fmt_ci(m["iqm_test_loss"]),
                _fmt(m["mean_test_accuracy"]),
                _fmt_ci(p, 2) if p else "-",
                _fmt_ci(m["normalized_score"], 2),
                f"{m['diverged']}/{m['runs']}",
            ]
        )
    return header, rows


def summary_table(summary: dict) -> str:
    """The overall results as a plain-text table, one row per controller."""
    header, rows = _rows(summary)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: " | ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    title = f"{summary['suite']} ({summary['version']}): overall over {summary['conditions']}"
    return "\n".join([title, line(header), "-+-".join("-" * w for w in widths), *map(line, rows)])


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def _inputs_section(inputs: Mapping[str, Mapping[str, Any]] | None) -> list[str]:
    """The result-key inputs the report used, so a reader can tell which policy, suite and
    settings its numbers come from."""
    if not inputs:
        return []
    fields = list(next(iter(inputs.values())))
    rows = [[ctrl, *(str(v) if v is not None else "-" for v in inputs[ctrl].values())]
            for ctrl in inputs]  # fmt: skip
    return [
        "## Inputs",
        "",
        "Only results computed from these inputs are used (sha256 content hashes, first 16 "
        "hex digits; older lines in results.jsonl are ignored).",
        "",
        *_md_table(["controller", *fields], rows),
        "",
    ]


def _differences(suite: Suite) -> dict[str, list[str]]:
    """`differences_from_training` per condition; {} for a suite whose conditions this
    package cannot resolve (a report rebuilt from records alone)."""
    try:
        return {cond: differences_from_training(suite, cond) for cond in suite.conditions}
    except ValueError:
        return {}


def _tuned_lines(summary: dict) -> list[str]:
    """One line per tuned schedule: the reference zero-shot against K runs of tuning."""
    ref, k = summary["reference"], summary.get("tuning_runs")
    lines = []
    for name in TUNED:
        a = summary["overall"].get(ref, {}).get("iqm_test_loss")
        b = summary["overall"].get(name, {}).get("iqm_test_loss")
        p = summary["probability_of_improvement"].get(name, {}).get("overall")
        if not a or not b or not p:
            continue
        lines.append(
            f"**Zero-shot {ref} against {name} tuned with {k} runs per condition and seed**: "
            f"IQM test loss {_fmt(a[0])} against {_fmt(b[0])}; P({ref} better) "
            f"{_fmt_ci(p, 2)}."
        )
    return [*lines, ""] if lines else []


def _differences_section(summary: dict) -> list[str]:
    """How each condition differs from training: where "harder" or "unseen" comes from."""
    differences = summary.get("differences_from_training")
    if not differences:
        return []
    rows = [[cond, "; ".join(d) or "none"] for cond, d in differences.items()]
    return [
        "## How each condition differs from training",
        "",
        f"Training: {summary.get('training_reference', '')}",
        "",
        *_md_table(["condition", "differences"], rows),
        "",
    ]


def _markdown(summary: dict, plots: dict[str, str]) -> str:
    ref = summary["reference"]
    conds = summary["conditions"]
    competitors = [c for c in summary["controllers"] if c not in REFERENCES]
    tuned = [c for c in summary["controllers"] if c in TUNED]
    n_seeds = {c: len(s) for c, s in summary["seeds"].items()}
    k = summary.get("tuning_runs")
    references = "the oracle: the best constant LR per condition picked on validation loss"
    if tuned:
        references = (
            f"the references {', '.join(tuned)} (the schedule's peak LR tuned per condition on "
            f"validation loss: {k} runs per seed, one per grid LR) and {references}"
        )
    out = [
        f"# Benchmark report: {summary['suite']} ({summary['version']})",
        "",
        f"Ran {len(competitors)} controllers ({', '.join(competitors)}) on {len(conds)} "
        f"conditions ({', '.join(f'{c}: {n_seeds[c]} seeds' for c in conds)}), plus "
        f"{references}.",
        "",
        *_tuned_lines(summary),
        *_differences_section(summary),
        *_inputs_section(summary.get("inputs")),
        "## Overall",
        "",
    ]
    header, rows = _rows(summary)
    header = [*header, "IQM AUC log val", "reached target (median steps)"]
    for ctrl, row in zip(summary["controllers"], rows):
        m = summary["overall"].get(ctrl, {})
        s = m.get("steps_to_target")
        reach = (
            f"{s['fraction_reached']:.0%} ({_fmt(s['median_steps'], 0)})"
            if s and s["fraction_reached"] is not None
            else "n/a"
        )
        row += [_fmt(m.get("iqm_auc_log_val")), reach] if "iqm_test_loss" in m else ["", ""]
    out += _md_table(header, rows)
    out += [
        "",
        "## Per condition: IQM test loss",
        "",
        "Best competitor per condition in bold (the tuned schedules and the oracle are "
        "references, never bolded).",
        "",
    ]
    rows = []
    best = {}
    for cond in conds:
        vals = {
            c: m["iqm_test_loss"][0]
            for c, m in summary["per_condition"][cond].items()
            if c not in REFERENCES and m["iqm_test_loss"][0] is not None
        }
        best[cond] = min(vals.values()) if vals else None
    for ctrl in summary["controllers"]:
        row = [ctrl]
        for cond in conds:
            m = summary["per_condition"][cond].get(ctrl)
            if m is None:
                row.append("-")
                continue
            text = _fmt_ci(m["iqm_test_loss"])
            bold = ctrl not in REFERENCES and m["iqm_test_loss"][0] is not None
            row.append(f"**{text}**" if bold and m["iqm_test_loss"][0] == best[cond] else text)
        rows.append(row)
    out += _md_table(["controller", *conds], rows)
    out += ["", f"## Probability of improvement: P({ref} better than baseline)", ""]
    poi = summary["probability_of_improvement"]
    if poi:
        rows = [
            [base, _fmt_ci(e["overall"], 2)]
            + [_fmt_ci(e["per_condition"].get(c), 2) for c in conds]
            for base, e in poi.items()
        ]
        out += _md_table(["baseline", "overall", *conds], rows)
    else:
        out.append(f"No results for {ref!r}.")
    out += ["", "## Oracle and tuned LRs", ""]
    tuned_lr = summary.get("tuned_lr", {})
    header = ["condition", "oracle LR (best mean final val loss)", "target val loss"]
    header += [f"{name} peak LR" for name in tuned_lr]
    rows = []
    for cond, lr in summary["oracle_lr"].items():
        o = summary["per_condition"].get(cond, {}).get(ORACLE)
        tgt = o["steps_to_target"]["target"] if o and o["steps_to_target"] else None
        row = [cond, _fmt(lr, 3) if lr is not None else "n/a", _fmt(tgt)]
        row += [_fmt(lrs.get(cond), 3) if lrs.get(cond) else "n/a" for lrs in tuned_lr.values()]
        rows.append(row)
    out += _md_table(header, rows)
    out += ["", "## Plots", ""]
    out += [f"- [{label}]({path})" for label, path in plots.items()]
    out += [
        "",
        "## How to read this",
        "",
        "Scores are final test losses (lower is better); each condition has a few seeds, and a "
        "seed gives every controller the same start (initial LR, weights, data order). "
        "**IQM** is the interquartile mean: the mean of the middle 50% of runs, robust to a "
        "diverged run yet less noisy than the median. The 95% intervals come from the "
        "**stratified bootstrap**: runs are resampled with replacement within each condition, "
        "so the interval reflects seed noise, not which conditions were picked. "
        f"**P({ref} better)** is the probability that {ref} has the lower test loss on a random "
        "run of a condition (ties count 1/2), averaged over conditions; 0.5 means no "
        "difference, and an interval excluding 0.5 is a significant one. The **normalised "
        "score** maps each condition's loss to (initial loss - loss) / (initial loss - oracle "
        "loss): 1 = as good as the oracle, 0 = no better than the initial loss, above 1 better "
        "than the oracle, below 0 worse than not training. **Reached target** is the fraction "
        f"of runs whose validation loss fell to {summary['target_factor']:g} x the oracle's "
        "mean final validation loss, with the median inner steps taken among those that did.",
    ]
    if summary["notes"]:
        out += ["", "## Notes", "", *(f"- {n}" for n in summary["notes"])]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colours(controllers: list[str]) -> dict[str, Any]:
    plt = _pyplot()
    cmap = plt.get_cmap("tab20")
    return {c: cmap(i % 20) for i, c in enumerate(controllers)}


def _style(controllers: list[str], ctrl: str) -> str:
    """Line style: dashed for the oracle; tab20 pairs (dark, light) told apart by dash-dot."""
    if ctrl == ORACLE:
        return "--"
    return "-" if controllers.index(ctrl) % 2 == 0 else "-."


def _curve_subset(controllers: list[str], reference: str, limit: int = 20) -> list[str]:
    """Readable subset: the reference and its relatives, the oracle, the hand-made ones."""
    if len(controllers) <= limit:
        return list(controllers)
    hand = _hand_made()
    first = [c for c in controllers if c.startswith(reference) or c == ORACLE or c in hand]
    rest = [c for c in controllers if c not in first]
    return (first + rest)[:limit]


def _padded(curves: list[list[Any]]) -> np.ndarray:
    """[runs, points]; a run that stopped early (diverged) holds its last value."""
    n = max(len(c) for c in curves)
    out = np.full((len(curves), n), np.nan)
    for i, c in enumerate(curves):
        v = np.array([_float(x) for x in c], dtype=float)
        if v.size:
            out[i, : v.size] = v
            out[i, v.size :] = v[-1]
    return out


def _save(fig, path: Path) -> None:
    plt = _pyplot()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _plot_curves(summary: dict, runs: dict, cond: str, path: Path, colours: dict) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 5))
    shown = _curve_subset(
        [c for c in summary["controllers"] if c in summary["per_condition"][cond]],
        summary["reference"],
    )
    drew = False
    for ctrl in shown:
        chosen = [runs[(cond, ctrl)][s] for s in summary["seeds"][cond]]
        curves = [r.get("val_curve") or [] for r in chosen]
        if not any(curves):
            continue
        y = _padded([c for c in curves if c])
        y = np.where(y > 0, y, np.nan)  # log axis
        interval = int(chosen[0].get("interval") or 1)
        x = np.arange(y.shape[1]) * interval
        with np.errstate(all="ignore"), _quiet():
            mid = np.nanmedian(y, axis=0)
            lo, hi = np.nanpercentile(y, [25, 75], axis=0)
        style = _style(summary["controllers"], ctrl)
        ax.plot(x, mid, style, color=colours[ctrl], lw=1.6, label=ctrl)
        ax.fill_between(x, lo, hi, color=colours[ctrl], alpha=0.15, lw=0)
        drew = True
    if drew:
        ax.set_yscale("log")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    else:
        ax.text(0.5, 0.5, "no validation curves", ha="center", va="center")
    lr = summary["oracle_lr"].get(cond)
    extra = f", oracle LR {lr:g}" if lr is not None else ""
    ax.set(
        xlabel="inner training steps",
        ylabel="validation loss (log)",
        title=f"{cond}: median over {len(summary['seeds'][cond])} seeds, 25-75% band{extra}",
    )
    ax.grid(True, which="both", alpha=0.3)
    _save(fig, path)


class _quiet:
    """Silence numpy's all-NaN-slice warnings inside plotting."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def _schedule_matrix(record: dict) -> np.ndarray:
    """log10 LR as [layers, decisions] from a record's lr_schedule [decisions][layers]."""
    sched = np.array(
        [[_float(x) for x in row] for row in record.get("lr_schedule") or []], dtype=float
    )
    if sched.ndim != 2 or sched.size == 0:
        return np.empty((0, 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        logged = np.log10(sched)
    return np.where(np.isfinite(logged), logged, np.nan).T


def _plot_heatmaps(summary: dict, runs: dict, cond: str, path: Path) -> None:
    plt = _pyplot()
    ref = summary["reference"]
    wanted = [ref, *HEATMAP_BASELINES]
    panels = []
    for ctrl in wanted:
        if ctrl not in summary["per_condition"][cond]:
            continue
        first = summary["seeds"][cond][0]
        m = _schedule_matrix(runs[(cond, ctrl)][first])
        if m.size:
            panels.append((ctrl, first, m))
    fig, axes = plt.subplots(
        max(len(panels), 1), 1, figsize=(9, 1.2 + 1.3 * max(len(panels), 1)), squeeze=False
    )
    if not panels:
        axes[0, 0].text(0.5, 0.5, "no LR schedules", ha="center", va="center")
        axes[0, 0].set_axis_off()
        _save(fig, path)
        return
    values = np.concatenate([m[np.isfinite(m)] for _, _, m in panels] or [np.zeros(1)])
    vmin, vmax = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    if vmin == vmax:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    width = max(m.shape[1] for _, _, m in panels)
    image = None
    for ax, (ctrl, first, m) in zip(axes[:, 0], panels):
        image = ax.imshow(
            m, aspect="auto", cmap="viridis", vmin=vmin, vmax=vmax, interpolation="nearest",
            extent=(-0.5, m.shape[1] - 0.5, m.shape[0] - 0.5, -0.5),
        )  # fmt: skip
        ax.set_xlim(-0.5, width - 0.5)
        stopped = " (stopped: diverged)" if m.shape[1] < width else ""
        ax.set_title(f"{ctrl}, seed {first}{stopped}", fontsize=9, loc="left")
        ax.set_ylabel("layer")
        ax.set_yticks(range(m.shape[0]))
        ax.tick_params(labelsize=7)
    axes[-1, 0].set_xlabel("decision")
    fig.suptitle(f"{cond}: per-layer learning rate (log10)", fontsize=11)
    fig.tight_layout()
    fig.colorbar(image, ax=list(axes[:, 0]), label="log10 LR", fraction=0.03, pad=0.02)
    _save(fig, path)


def _finite(xs: Sequence[Any]) -> bool:
    return all(x is not None and math.isfinite(float(x)) for x in xs)


def _plot_intervals(summary: dict, path: Path, colours: dict) -> None:
    plt = _pyplot()
    names = [c for c in summary["controllers"] if "iqm_test_loss" in summary["overall"][c]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.9 + 0.4 * max(len(names), 1)), sharey=True)
    panels = (("iqm_test_loss", "IQM test loss (lower is better)"),
              ("normalized_score", "IQM normalised score (1 = oracle, 0 = initial)"))  # fmt: skip
    for ax, (key, label) in zip(axes, panels):
        skipped = []
        for i, ctrl in enumerate(names):
            triple = summary["overall"][ctrl].get(key)
            if not triple or not _finite(triple):
                skipped.append(ctrl)
                continue
            p, lo, hi = triple
            ax.barh(i, hi - lo, left=lo, height=0.6, color=colours[ctrl], alpha=0.75)
            ax.plot([p, p], [i - 0.3, i + 0.3], color="black", lw=1.5)
        if key == "normalized_score":
            for v in (0.0, 1.0):
                ax.axvline(v, color="grey", ls=":", lw=1)
        if skipped:
            ax.text(0.99, 0.01, f"not finite: {', '.join(skipped)}", transform=ax.transAxes,
                    ha="right", va="bottom", fontsize=7)  # fmt: skip
        ax.set_xlabel(label)
        ax.grid(True, axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(names)), names)
    axes[0].invert_yaxis()
    if not names:
        axes[0].text(0.5, 0.5, "no overall aggregates", ha="center", va="center")
    fig.suptitle(
        f"{summary['suite']}: IQM with 95% stratified-bootstrap CI (black: point estimate)",
        fontsize=11,
    )
    fig.tight_layout()
    _save(fig, path)


def _plot_profiles(
    summary: dict, matrices: dict[str, np.ndarray], path: Path, colours: dict, reps: int, seed: int
) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 5))
    every = np.concatenate([m.ravel() for m in matrices.values()]) if matrices else np.zeros(0)
    positive = every[np.isfinite(every) & (every > 0)]
    if positive.size:
        lo, hi = float(positive.min()), float(positive.max())
        if lo == hi:
            lo, hi = lo / 2, hi * 2
        taus = np.geomspace(lo / 1.1, hi * 1.1, 200)
        for ctrl, m in matrices.items():
            p, low, high = stats.performance_profile_ci(m, taus, True, reps, CONFIDENCE, seed)
            style = _style(summary["controllers"], ctrl)
            ax.step(taus, p, style, where="post", color=colours[ctrl], lw=1.6, label=ctrl)
            ax.fill_between(taus, low, high, step="post", color=colours[ctrl], alpha=0.08, lw=0)
        ax.set_xscale("log")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    else:
        ax.text(0.5, 0.5, "no finite test losses", ha="center", va="center")
    ax.set(
        xlabel="test loss threshold tau (log)",
        ylabel="fraction of runs with test loss <= tau",
        ylim=(-0.02, 1.02),
        title=f"{summary['suite']}: performance profiles over all conditions (95% CI bands)",
    )
    ax.grid(True, which="both", alpha=0.3)
    _save(fig, path)


# ---------------------------------------------------------------- entry point


def build_report(
    results_path: str | os.PathLike,
    suite: Suite,
    out_dir: str | os.PathLike,
    reference: str = "ganno",
    reps: int = 2000,
    seed: int = 0,
    inputs: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict:
    """Summarise a results file: writes summary.json, report.md and plots/*.png in `out_dir`.

    `inputs` (controller -> its current result-key inputs, `benchmarks.runner.run_inputs`)
    keeps only the lines computed from those inputs: a results file keeps the lines of an
    older policy, suite or setting, and they must not mix into the report. The report lists
    the inputs it used. Without `inputs`, every record of `suite.version` counts. Returns the
    summary (the content of summary.json).
    """
    from benchmarks.runner import read_results

    out = Path(out_dir)
    plot_dir = out / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    records = read_results(Path(results_path))
    stale: dict[str, int] = {}
    if inputs is not None:
        current = [r for r in records if r.get("inputs") == inputs.get(r.get("controller"))]
        for r in records:
            if r.get("inputs") != inputs.get(r.get("controller")):
                stale[r.get("controller")] = stale.get(r.get("controller"), 0) + 1
        records = current
    summary, runs, matrices = _summarise(records, suite, reference, reps, seed)
    summary["training_reference"] = TRAINING_REFERENCE
    summary["differences_from_training"] = _differences(suite)
    if summary["differences_from_training"]:
        for cond, reason in suite.unavailable().items():
            summary["notes"].append(f"{cond} skipped: {reason}.")
    if inputs is not None:  # near the top of summary.json: what the numbers come from
        used = sorted({r["controller"] for r in records})
        head = {k: summary.pop(k) for k in ("suite", "version")}
        summary = {**head, "inputs": {c: dict(inputs[c]) for c in used}, **summary}
    if stale:
        counts = ", ".join(f"{c}: {n}" for c, n in sorted(stale.items()))
        summary["notes"].insert(
            0,
            f"{sum(stale.values())} result lines ignored ({counts}): computed from other inputs "
            "(policy file, suite, controller or env settings, env or features version) than "
            "the current ones, or of a controller without current inputs (ganno needs a policy).",
        )

    colours = _colours(summary["controllers"])
    plots: dict[str, str] = {}
    for cond in summary["conditions"]:
        name = f"plots/curves_{cond}.png"
        _plot_curves(summary, runs, cond, out / name, colours)
        plots[f"validation curves, {cond}"] = name
    for cond in summary["conditions"]:
        name = f"plots/lr_heatmap_{cond}.png"
        _plot_heatmaps(summary, runs, cond, out / name)
        plots[f"per-layer LR schedules, {cond}"] = name
    _plot_intervals(summary, out / "plots/intervals.png", colours)
    plots["interval estimates"] = "plots/intervals.png"
    _plot_profiles(summary, matrices, out / "plots/profiles.png", colours, reps, seed)
    plots["performance profiles"] = "plots/profiles.png"
    summary["plots"] = plots

    clean = _clean(summary)
    (out / "summary.json").write_text(json.dumps(clean, indent=1, allow_nan=False) + "\n")
    (out / "report.md").write_text(_markdown(clean, plots))
    return clean


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m benchmarks.report RESULTS --suite quick [--policy FILE] [--out DIR]`: build
    and print the report of the results computed from the current inputs."""
    import argparse

    from benchmarks.runner import controller_names, run_inputs
    from benchmarks.suites import load_suite

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="results.jsonl written by the runner")
    parser.add_argument("--suite", required=True)
    parser.add_argument("--out", help="output folder (default: the results file's folder)")
    parser.add_argument("--reference", default="ganno")
    parser.add_argument("--reps", type=int, default=2000)
    parser.add_argument("--policy", help="the policy.pt the ganno results must come from")
    parser.add_argument("--device", default="cpu", help="the device the runs used")
    args = parser.parse_args(argv)
    out = args.out or str(Path(args.results).parent)
    suite = load_suite(args.suite)
    names = controller_names(args.policy, suite)
    inputs = run_inputs(suite, names, args.policy, args.device)
    summary = build_report(args.results, suite, out, args.reference, args.reps, inputs=inputs)
    print(summary_table(summary))
    print(f"\nwrote {Path(out) / 'report.md'}, {Path(out) / 'summary.json'} and plots/")


if __name__ == "__main__":
    main()
