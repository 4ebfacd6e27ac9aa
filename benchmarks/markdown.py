"""The text of a benchmark report: `report.md` and the plain-text `summary_table`.

Why a module of its own: the text reads only the summary (the content of summary.json,
`benchmarks.summary`), so a report can be rewritten from a summary alone, and wording
changes never touch the numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from benchmarks.summary import ORACLE, REFERENCES, TUNED

__all__ = ["report_markdown", "summary_table"]


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


def _policy_section(policy: Mapping[str, Any] | None) -> list[str]:
    """Which policy file `ganno` ran and the rules it ran under (`report.policy_rules`)."""
    if not policy:
        return []
    ratio = policy["fallback_step_ratio"]
    if ratio is None:
        fallback = "no fallback"
    elif policy["fallback_added_after_training"]:
        fallback = f"the fallback at step ratio {ratio}, added after training"
    else:
        fallback = f"the fallback at step ratio {ratio}, trained with it"
    net = policy["max_step_ratio"]
    rules = [fallback, "no safety net" if net is None else f"the safety net at step ratio {net}"]
    if policy["probe_cuts_only"]:
        rules.append("no raise at the first decision")
    if policy.get("step_clip") is not None:  # summaries written before the clip have none
        rules.append(f"every step clipped to step ratio {policy['step_clip']}")
    for name, (low, high) in (policy.get("observation_clip") or {}).items():
        rules.append(f"`{name}` clipped to [{low:.3g}, {high:.3g}]")
    ran = f"`ganno` and `ganno_global` ran `{policy['file']}` (policy_hash {policy['policy_hash']})"
    return ["## Policy", "", f"{ran} with {', '.join(rules)}.", ""]


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


def report_markdown(summary: dict, plots: Mapping[str, str]) -> str:
    """report.md: the overall and per-condition tables, the probabilities of improvement,
    the picked LRs, the plots and how to read them, then the notes."""
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
        *_policy_section(summary.get("policy")),
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
