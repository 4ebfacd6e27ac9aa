"""The numbers of a benchmark report: records in, the content of `summary.json` out.

Why a module of its own: the metrics and their aggregation are read, tested and changed apart
from the text (`benchmarks.markdown`) and the pictures (`benchmarks.plots`), as in rliable.

`summarise` indexes a suite's records (`Runs`), picks the grid LRs (the oracle: per condition
the grid LR with the lowest mean final *validation* loss over seeds; the tuned cosine
schedules the same way), keeps per condition the seeds every controller shares, and computes
per condition and overall: the IQM of the final test loss with a 95% stratified-bootstrap CI,
the normalised score between the initial loss (0) and the oracle (1), the steps to a target
val loss, and the probability that the reference beats each baseline (see `benchmarks.stats`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchmarks import stats
from benchmarks.suites import Suite, differences_from_training

ORACLE = "oracle"
GRID = "oracle_grid"
TUNED = ("cosine_tuned", "warmup_cosine_tuned")
# Grid controllers of the runner -> the name of the picked (best val loss) LR in the report.
PICKED = {GRID: ORACLE, **{name: name for name in TUNED}}
REFERENCES = (*TUNED, ORACLE)  # tuned on the suite's own runs: reported, never bolded
CONFIDENCE = 0.95

Record = dict[str, Any]  # one line of results.jsonl
BySeed = dict[int, Record]


# ---------------------------------------------------------------- record values


def as_float(x: Any) -> float:
    """A record value as a float; None (e.g. a NaN written as null) becomes NaN."""
    return math.nan if x is None else float(x)


def as_loss(x: Any) -> float:
    """A loss for the score matrices: NaN (a run that blew up) counts as +inf, i.e. worst."""
    v = as_float(x)
    return math.inf if math.isnan(v) else v


def clean(obj: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN/inf to None, tuples to lists."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return clean(obj.tolist())
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
        v = as_float(v)
        if not math.isnan(v) and v <= target:
            return float(i * interval)
    return math.nan


def differences(suite: Suite) -> dict[str, list[str]]:
    """`differences_from_training` per condition; {} for a suite whose conditions this
    package cannot resolve (a report rebuilt from records alone)."""
    try:
        return {cond: differences_from_training(suite, cond) for cond in suite.conditions}
    except ValueError:
        return {}


# ---------------------------------------------------------------- the records


@dataclass
class Runs:
    """Records by condition, controller and seed (a repeated seed: the later record wins)."""

    cells: dict[str, dict[str, BySeed]] = field(default_factory=dict)

    def has(self, cond: str, ctrl: str) -> bool:
        return ctrl in self.cells.get(cond, {})

    def by_seed(self, cond: str, ctrl: str) -> BySeed:
        """The cell's records by seed, created empty when missing."""
        return self.cells.setdefault(cond, {}).setdefault(ctrl, {})

    def records(self, cond: str, ctrl: str, seeds: Iterable[int]) -> list[Record]:
        """The cell's records of `seeds`, in that order."""
        cell = self.cells[cond][ctrl]
        return [cell[s] for s in seeds]

    def controllers(self) -> set[str]:
        return {ctrl for cell in self.cells.values() for ctrl in cell}

    def on(self, cond: str) -> bool:
        """Whether any controller has records on `cond`."""
        return bool(self.cells.get(cond))


@dataclass
class Reference:
    """A condition's yardsticks: the initial val loss (score 0) and, with an oracle, its
    mean test loss (score 1) and the target val loss (None without them)."""

    worst: float
    oracle_loss: float | None = None
    target: float | None = None


def _collect(records: list[Record], suite: Suite, notes: list[str]) -> tuple[Runs, dict[str, Runs]]:
    """The suite version's records: ordinary controllers' runs, and each grid controller's
    runs with the grid variant (`lr=...`) in place of the controller."""
    runs = Runs()
    grids: dict[str, Runs] = {}
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
            bucket = grids.setdefault(ctrl, Runs()).by_seed(cond, r.get("variant", ""))
        else:
            bucket = runs.by_seed(cond, ctrl)
        duplicates += r["seed"] in bucket
        bucket[r["seed"]] = r  # a repeated key: the later line wins
    if unknown:
        notes.append(f"records of conditions outside the suite ignored: {sorted(unknown)}.")
    if duplicates:
        notes.append(f"{duplicates} repeated (condition, controller, seed) records: kept the last.")
    return runs, grids


def _machines(runs: Runs, grids: dict[str, Runs]) -> dict[str, int]:
    """The kept runs per machine that computed them (`benchmarks.runner.machine`), most
    first."""
    kept = [record for bucket in (runs, *grids.values()) for cell in bucket.cells.values()
            for by_seed in cell.values() for record in by_seed.values()]  # fmt: skip
    unknown = "unknown (a line written before machines were recorded)"
    return dict(Counter(r.get("machine") or unknown for r in kept).most_common())


def _pick_oracle(grid: Runs, cond: str) -> tuple[float | None, BySeed]:
    """The grid LR with the lowest mean final val loss over the seeds every LR has."""
    variants = grid.cells.get(cond, {})
    if not variants:
        return None, {}
    common = set.intersection(*(set(s) for s in variants.values()))

    def mean_val(v: str) -> float:
        seeds = common or set(variants[v])
        return float(np.mean([as_loss(variants[v][s]["final_val_loss"]) for s in seeds]))

    best = min(sorted(variants, key=_lr_of), key=mean_val)
    return _lr_of(best), variants[best]


def _pick_grid_lrs(
    runs: Runs, grids: dict[str, Runs], suite: Suite, notes: list[str]
) -> dict[str, dict[str, float | None]]:
    """Per grid controller present (the oracle's always): the picked LR per condition; the
    picked LR's runs join `runs` under the picked name (`oracle`, `cosine_tuned`, ...)."""
    picked_lr: dict[str, dict[str, float | None]] = {}
    for grid_ctrl, name in PICKED.items():
        grid = grids.get(grid_ctrl, Runs())
        if not grid.cells and grid_ctrl != GRID:
            continue  # the tuned baselines are optional
        picked_lr[name] = {}
        for cond in suite.conditions:
            lr, picked = _pick_oracle(grid, cond)
            picked_lr[name][cond] = lr
            if picked:
                runs.cells.setdefault(cond, {})[name] = picked
            elif name == ORACLE and runs.on(cond):
                notes.append(
                    f"{cond}: no {GRID} records, so no oracle, target or normalised score."
                )
    return picked_lr


def _order(names: set[str], reference: str) -> list[str]:
    """Reference first, then its relatives (ganno_global), the rest by name, then the tuned
    references and the oracle."""
    others = sorted(n for n in names if n not in REFERENCES)
    key = {n: (0 if n == reference else 1 if n.startswith(reference) else 2, n) for n in others}
    return sorted(others, key=key.__getitem__) + [n for n in REFERENCES if n in names]


def _shared_seeds(
    runs: Runs, conditions: list[str], controllers: list[str], notes: list[str]
) -> dict[str, list[int]]:
    """Per condition: the seeds every controller there has (paired comparisons)."""
    seeds: dict[str, list[int]] = {}
    for cond in conditions:
        present = [c for c in controllers if runs.has(cond, c)]
        cells = [runs.by_seed(cond, c) for c in present]
        common = sorted(set.intersection(*(set(cell) for cell in cells)))
        dropped = sum(len(cell) - len(common) for cell in cells)
        if dropped:
            notes.append(
                f"{cond}: {dropped} runs dropped to keep the seeds all controllers share "
                f"({len(common)} seeds)."
            )
        seeds[cond] = common
    return seeds


def _references(
    runs: Runs,
    conditions: list[str],
    controllers: list[str],
    seeds: dict[str, list[int]],
    target_factor: float,
    notes: list[str],
) -> dict[str, Reference]:
    """Per condition: the initial loss, and the oracle's test loss and target when finite."""
    refs: dict[str, Reference] = {}
    for cond in conditions:
        everyone = [
            r for c in controllers if runs.has(cond, c) for r in runs.records(cond, c, seeds[cond])
        ]
        ref = Reference(worst=float(np.mean([as_float(r["initial_val_loss"]) for r in everyone])))
        if runs.has(cond, ORACLE):
            oracle_runs = runs.records(cond, ORACLE, seeds[cond])
            oracle_loss = float(np.mean([as_loss(r["test_loss"]) for r in oracle_runs]))
            val = float(np.mean([as_loss(r["final_val_loss"]) for r in oracle_runs]))
            if all(map(math.isfinite, (oracle_loss, val, ref.worst))):
                ref.oracle_loss, ref.target = oracle_loss, target_factor * val
            else:
                notes.append(f"{cond}: oracle or initial loss not finite, so no normalised score.")
        refs[cond] = ref
    return refs


# ---------------------------------------------------------------- metrics


def _ci(scores: np.ndarray, reps: int, seed: int) -> list[float]:
    return list(stats.stratified_bootstrap_ci(scores, stats.iqm, reps, CONFIDENCE, seed))


def _metrics(
    runs: list[Record],
    tests: np.ndarray,
    refs: Sequence[Reference] | None,
    reps: int,
    seed: int,
) -> dict[str, Any]:
    """The metrics of one controller on a [seeds, conditions] test-loss matrix.

    `runs` are the records behind the matrix, column by column; `refs` the columns'
    references when every one has an oracle (else no normalised score or target).
    """
    acc = [as_float(r.get("test_accuracy")) for r in runs]
    acc = [a for a in acc if not math.isnan(a)]
    auc = np.array([as_loss(r.get("auc_log_val")) for r in runs])
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
    if refs is not None:
        oracle = np.array([ref.oracle_loss for ref in refs])
        worst = np.array([ref.worst for ref in refs])
        norm = stats.normalized_score(tests, reference=oracle, worst=worst)
        out["normalized_score"] = _ci(norm, reps, seed)
        k = tests.shape[0]
        steps = np.array(
            [
                steps_to_target(
                    r.get("val_curve") or [], int(r.get("interval") or 1), refs[j // k].target
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


def _per_condition(
    runs: Runs,
    conditions: list[str],
    controllers: list[str],
    seeds: dict[str, list[int]],
    refs: dict[str, Reference],
    reps: int,
    seed: int,
) -> dict[str, dict[str, dict]]:
    """condition -> controller -> metrics over the condition's shared seeds, with the runs'
    test losses and seeds."""
    per_condition: dict[str, dict[str, dict]] = {}
    for cond in conditions:
        per_condition[cond] = {}
        ref = refs[cond]
        has_ref = ref.oracle_loss is not None
        for ctrl in controllers:
            if not runs.has(cond, ctrl):
                continue
            chosen = runs.records(cond, ctrl, seeds[cond])
            tests = np.array([[as_loss(r["test_loss"])] for r in chosen])
            m = _metrics(chosen, tests, [ref] if has_ref else None, reps, seed)
            m["test_loss"] = tests[:, 0].tolist()
            m["seeds"] = list(seeds[cond])
            if has_ref:
                m["steps_to_target"]["target"] = ref.target
            per_condition[cond][ctrl] = m
    return per_condition


def _overall(
    runs: Runs,
    conditions: list[str],
    controllers: list[str],
    seeds: dict[str, list[int]],
    refs: dict[str, Reference],
    reps: int,
    seed: int,
    notes: list[str],
) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """Metrics over every condition, the same number of runs from each (the fewest any has),
    and the [runs, conditions] test-loss matrix of each controller that has them all."""
    k = min((len(seeds[c]) for c in conditions), default=0)
    if conditions and any(len(seeds[c]) > k for c in conditions):
        notes.append(f"overall aggregates use the first {k} shared seeds of each condition.")
    overall: dict[str, dict] = {}
    matrices: dict[str, np.ndarray] = {}
    with_ref = [c for c in conditions if refs[c].oracle_loss is not None]
    if conditions and len(with_ref) < len(conditions):
        notes.append(f"overall normalised scores and targets only over {with_ref}.")
    for ctrl in controllers:
        lacks = [c for c in conditions if not runs.has(c, ctrl)]
        if lacks or not conditions:
            overall[ctrl] = {"missing_conditions": lacks}
            notes.append(f"{ctrl} has no results on {lacks}: left out of the overall aggregates.")
            continue
        chosen = [r for c in conditions for r in runs.records(c, ctrl, seeds[c][:k])]
        tests = np.array([as_loss(r["test_loss"]) for r in chosen]).reshape(len(conditions), k).T
        matrices[ctrl] = tests
        m = _metrics(chosen, tests, None, reps, seed)
        if with_ref:
            cols = [conditions.index(c) for c in with_ref]
            sub = [r for c in with_ref for r in runs.records(c, ctrl, seeds[c][:k])]
            part = _metrics(sub, tests[:, cols], [refs[c] for c in with_ref], reps, seed)
            m["normalized_score"] = part["normalized_score"]
            m["steps_to_target"] = part["steps_to_target"]
        m["missing_conditions"] = []
        overall[ctrl] = m
    return overall, matrices


def _probability_of_improvement(
    reference: str,
    controllers: list[str],
    conditions: list[str],
    per_condition: dict[str, dict[str, dict]],
    matrices: dict[str, np.ndarray],
    reps: int,
    seed: int,
    notes: list[str],
) -> dict[str, dict]:
    """Per baseline: P(reference better) with its CI, overall and per condition."""
    poi: dict[str, dict] = {}
    if reference not in controllers:
        notes.append(f"reference {reference!r} has no results: no probability of improvement.")
        return poi
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
    return poi


def _oddities(per_condition: dict[str, dict[str, dict]], controllers: list[str]) -> list[str]:
    """Pairs of controllers with identical test losses in every shared run (a wiring bug?)."""
    notes = []
    for i, a in enumerate(controllers):
        for b in controllers[i + 1 :]:
            shared = [c for c in per_condition.values() if a in c and b in c]
            if shared and all(c[a]["test_loss"] == c[b]["test_loss"] for c in shared):
                notes.append(f"{a} and {b} have identical test losses in every run.")
    return notes


# ---------------------------------------------------------------- the summary


@dataclass
class Summarised:
    """`summary` (what summary.json holds, before `clean`), the runs behind it and each
    controller's overall [runs, conditions] test-loss matrix (for the plots)."""

    summary: dict[str, Any]
    runs: Runs
    matrices: dict[str, np.ndarray]


def summarise(
    records: list[Record], suite: Suite, reference: str, reps: int, seed: int
) -> Summarised:
    """Summarise a suite's records: picked grid LRs, per-condition and overall metrics,
    probabilities of improvement and notes on everything left out."""
    notes: list[str] = []
    runs, grids = _collect(records, suite, notes)
    machines = _machines(runs, grids)
    if len(machines) > 1:
        listed = "; ".join(f"{name} ({n} runs)" for name, n in machines.items())
        notes.insert(
            0,
            f"results from {len(machines)} machines: {listed}. The same run gives other "
            "numbers on another machine (kernels round otherwise, and training at large LRs "
            "magnifies it): compare controllers on results of one machine.",
        )
    picked_lr = _pick_grid_lrs(runs, grids, suite, notes)
    oracle_lr = picked_lr.pop(ORACLE)
    conditions = [c for c in suite.conditions if runs.on(c)]
    missing = [c for c in suite.conditions if c not in conditions]
    if missing:
        notes.append(f"conditions without any result: {missing}.")
    controllers = _order(runs.controllers(), reference)
    seeds = _shared_seeds(runs, conditions, controllers, notes)
    conditions = [c for c in conditions if seeds[c]]
    refs = _references(runs, conditions, controllers, seeds, suite.target_factor, notes)
    per_condition = _per_condition(runs, conditions, controllers, seeds, refs, reps, seed)
    overall, matrices = _overall(runs, conditions, controllers, seeds, refs, reps, seed, notes)
    poi = _probability_of_improvement(
        reference, controllers, conditions, per_condition, matrices, reps, seed, notes
    )
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
        "machines": machines,
        "notes": notes,
    }
    return Summarised(summary, runs, matrices)
