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

The numbers come from `benchmarks.summary`, the text from `benchmarks.markdown` and the
pictures from `benchmarks.plots`; this module ties them together and is the command line.

    build_report("runs/quick/results.jsonl", load_suite("quick"), "runs/quick")
    print(summary_table(summary))
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.markdown import report_markdown, summary_table
from benchmarks.plots import schedule_matrix as _schedule_matrix  # noqa: F401 (its old name)
from benchmarks.plots import write_plots
from benchmarks.suites import TRAINING_REFERENCE, Suite
from benchmarks.summary import clean, differences, steps_to_target, summarise

__all__ = ["build_report", "steps_to_target", "summary_table"]


def build_report(
    results_path: str | os.PathLike,
    suite: Suite,
    out_dir: str | os.PathLike,
    reference: str = "ganno",
    reps: int = 2000,
    seed: int = 0,
    inputs: Mapping[str, Mapping[str, Any]] | None = None,
    policy: str | os.PathLike | None = None,
) -> dict:
    """Summarise a results file: writes summary.json, report.md and plots/*.png in `out_dir`.

    `inputs` (controller -> its current result-key inputs, `benchmarks.runner.run_inputs`)
    keeps only the lines computed from those inputs: a results file keeps the lines of an
    older policy, suite or setting, and they must not mix into the report. The report lists
    the inputs it used. Without `inputs`, every record of `suite.version` counts. `policy`
    (the file behind `ganno`) adds what it runs under (`policy_rules`). Returns the summary
    (the content of summary.json).
    """
    from benchmarks.runner import POLICY_CONTROLLERS, read_results

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
    summarised = summarise(records, suite, reference, reps, seed)
    summary = summarised.summary
    summary["training_reference"] = TRAINING_REFERENCE
    summary["differences_from_training"] = differences(suite)
    if summary["differences_from_training"]:
        for cond, reason in suite.unavailable().items():
            summary["notes"].append(f"{cond} skipped: {reason}.")
    if inputs is not None:  # near the top of summary.json: what the numbers come from
        used = sorted({r["controller"] for r in records})
        head = {k: summary.pop(k) for k in ("suite", "version")}
        summary = {**head, "inputs": {c: dict(inputs[c]) for c in used}, **summary}
    if policy is not None and set(summary["controllers"]) & set(POLICY_CONTROLLERS):
        summary["policy"] = policy_rules(policy)
    if stale:
        counts = ", ".join(f"{c}: {n}" for c, n in sorted(stale.items()))
        summary["notes"].insert(
            0,
            f"{sum(stale.values())} result lines ignored ({counts}): computed from other inputs "
            "(policy file, suite, controller or env settings, package code, env or features "
            "version) than "
            "the current ones, or of a controller without current inputs (ganno needs a policy).",
        )

    plots = write_plots(summary, summarised.runs, summarised.matrices, out, reps, seed)
    summary["plots"] = plots

    cleaned = clean(summary)
    (out / "summary.json").write_text(json.dumps(cleaned, indent=1, allow_nan=False) + "\n")
    (out / "report.md").write_text(report_markdown(cleaned, plots))
    return cleaned


def policy_rules(policy: str | os.PathLike) -> dict[str, Any]:
    """The policy file behind `ganno` and the run-time rules it carries. The result keys name
    the file by its hash only, and a copy with the fallback added after training
    (`add_fallback`, `add_observation_clip`) can score otherwise than the file it came from,
    so the report says which."""
    from benchmarks.runner import file_hash
    from ganno_env.policy import load_policy

    loaded = load_policy(policy)
    needed = loaded.env_requirements()
    return {
        "file": str(policy),
        "policy_hash": file_hash(policy),
        "fallback_step_ratio": needed["fallback_step_ratio"],
        "fallback_added_after_training": "fallback_added" in loaded.payload.get("extra", {}),
        "max_step_ratio": needed["max_step_ratio"],
        "probe_cuts_only": needed["probe_cuts_only"],
        "step_clip": needed["step_clip"],
        # {feature: [low, high]} it clips its observations to (add_observation_clip), or None
        "observation_clip": loaded.payload.get("observation_clip"),
    }


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
    summary = build_report(args.results, suite, out, args.reference, args.reps, inputs=inputs,
                           policy=args.policy)  # fmt: skip
    print(summary_table(summary))
    print(f"\nwrote {Path(out) / 'report.md'}, {Path(out) / 'summary.json'} and plots/")


if __name__ == "__main__":
    main()
