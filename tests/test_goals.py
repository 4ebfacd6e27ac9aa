"""benchmarks.goals reads the robustness goals off a real report's summary."""

import json

import numpy as np
import pytest
from test_report import CONDITIONS, SEEDS, VERSION, make_records, make_suite, record, write

from benchmarks.goals import ORACLES, goal_1, goal_lines, main, oracle_against, paired_wins
from benchmarks.report import build_report
from benchmarks.stats import probability_of_improvement


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    out = tmp_path_factory.mktemp("goals")
    records = make_records()
    for ci, cond in enumerate(CONDITIONS):  # the ablation: worse than ganno on every run
        for si, seed in enumerate(SEEDS):
            records.append(record(cond, "ganno_global", seed, 0.55 + 0.01 * si + 0.1 * ci))
    build_report(write(out / "results.jsonl", records), make_suite(), out, reps=200)
    return json.loads((out / "summary.json").read_text())


def test_headline_numbers_come_from_the_summary(summary):
    lines = goal_lines(summary)
    ganno = summary["overall"]["ganno"]["iqm_test_loss"][0]
    name = next(o for o in ORACLES if o in summary["overall"])
    oracle = summary["overall"][name]["iqm_test_loss"][0]
    assert f"ganno {ganno:.3f}, oracle {oracle:.3f} (ratio {ganno / oracle:.2f})" in lines[0]
    # ganno is better than bold driver and than its global ablation on every run
    assert lines[1].endswith("1.00 [1.00, 1.00]") and "bold_driver" in lines[1]
    assert lines[2].endswith("1.00 [1.00, 1.00]") and "ganno_global" in lines[2]


def test_one_table_row_per_condition(summary):
    rows = [line for line in goal_lines(summary) if line.startswith("| ") and "---" not in line]
    assert [row.split(" | ")[0][2:] for row in rows[1:]] == list(CONDITIONS)


def test_a_summary_without_ganno_is_refused(tmp_path, summary, capsys):
    without = {**summary, "controllers": [c for c in summary["controllers"] if c != "ganno"]}
    without["overall"] = {k: v for k, v in summary["overall"].items() if k != "ganno"}
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(without))
    with pytest.raises(SystemExit) as exit_info:
        main([str(path)])
    assert exit_info.value.code == 2 and "no ganno results" in capsys.readouterr().err


def with_lr_conditions(summary, lost=0, controllers=None):
    """The summary with its `easy` condition standing in for both held-out LR conditions
    (on `easy`, lars beats ganno on every run and ganno beats every other schedule)."""
    out = json.loads(json.dumps(summary))
    for cond in ("unseen_lr_high", "unseen_lr_low"):
        out["per_condition"][cond] = json.loads(json.dumps(out["per_condition"]["easy"]))
        out["per_condition"][cond]["ganno"]["diverged"] = lost
        for entry in out["probability_of_improvement"].values():
            entry["per_condition"][cond] = entry["per_condition"]["easy"]
    if controllers is not None:
        out["controllers"] = controllers
    return out


def test_goal_1_names_what_misses_it(summary):
    assert goal_1(summary) == (
        "- goal 1: not measured (unseen_lr_high, unseen_lr_low not in the summary)"
    )
    missed = goal_1(with_lr_conditions(summary, lost=2))
    assert missed.startswith("- goal 1: missed (unseen_lr_high: 2 diverged; ")
    assert "unseen_lr_high: P 0.00 [0.00, 0.00] against lars" in missed
    assert "unseen_lr_low: P 0.00 against lars" in missed
    assert "cosine" not in missed and "bold_driver" not in missed  # ganno beats them
    without_lars = [c for c in summary["controllers"] if c != "lars"]
    assert goal_1(with_lr_conditions(summary, controllers=without_lars)) == "- goal 1: met"
    assert "- goal 1: met" in goal_lines(with_lr_conditions(summary, controllers=without_lars))


def test_paired_wins_pair_runs_on_the_same_network_only():
    # ganno beats bold driver on every network of make_records; turn two of nine around,
    # one of them by a lost bold-driver run (NaN) that ganno loses too
    records = make_records()
    for r in records:
        if r["controller"] == "ganno" and (r["condition"], r["seed"]) == ("easy", 1):
            r["test_loss"] = 5.0
        if r["controller"] in ("ganno", "bold_driver") and (r["condition"], r["seed"]) == (
            "hard",
            2,
        ):
            r["test_loss"] = float("nan")  # both lost: not a win
    records.append(record("easy", "ganno", 99, 0.01))  # no bold-driver run to pair with
    records.append(record("easy", "bold_driver", 1, 0.0, version="other_v0"))  # another suite
    assert paired_wins({"version": VERSION}, records) == (7, 9)
    # with the summary's inputs, only the records computed from those inputs count
    for r in records:  # seed 3 and the other suites' records come from old inputs
        current = r["suite_version"] == VERSION and r["seed"] != 3
        r["inputs"] = {"policy_hash": "new" if current else "old"}
    inputs = {"ganno": {"policy_hash": "new"}, "bold_driver": {"policy_hash": "new"}}
    assert paired_wins({"version": VERSION, "inputs": inputs}, records) == (4, 6)


def test_main_adds_the_paired_count_when_the_results_lie_beside_the_summary(
    tmp_path, summary, capsys
):
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(summary))
    main([str(path)])
    assert "paired with bold_driver" not in capsys.readouterr().out
    write(tmp_path / "results.jsonl", make_records())
    main([str(path)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == (
        "- paired with bold_driver on the same network (condition and seed): ganno ends "
        "lower on 9 of 9 (1.00)"
    )


def test_the_oracle_scale_line_is_computed_like_ganno_s_p(summary):
    oracle = next(o for o in ORACLES if o in summary["overall"])
    mixed = {}  # bold driver's losses: the oracle's in reverse order, so each wins some runs
    for c, row in summary["per_condition"].items():
        losses = [v + 1e-6 for v in reversed(row[oracle]["test_loss"])]
        mixed[c] = {**row, "bold_driver": {**row["bold_driver"], "test_loss": losses}}
    mixed_summary = {**summary, "per_condition": mixed}
    x = np.array([mixed[c][oracle]["test_loss"] for c in CONDITIONS]).T
    y = np.array([mixed[c]["bold_driver"]["test_loss"] for c in CONDITIONS]).T
    point = probability_of_improvement(x, y)
    assert 0.0 < point < 1.0
    low, high = oracle_against(mixed_summary)[1:]
    (line,) = [line for line in goal_lines(mixed_summary) if line.startswith("- for scale")]
    assert f"overall: {point:.2f} [{low:.2f}, {high:.2f}] (the oracle" in line
    assert low <= point <= high


def test_the_oracle_beating_bold_driver_everywhere_reads_one(summary):
    per_condition = {
        c: {
            **row,
            "bold_driver": {
                **row["bold_driver"],
                "test_loss": [9.0] * len(row["bold_driver"]["test_loss"]),
            },
        }
        for c, row in summary["per_condition"].items()
    }
    assert oracle_against({**summary, "per_condition": per_condition}) == (1.0, 1.0, 1.0)
    without = {
        c: {k: v for k, v in row.items() if k != "bold_driver"} for c, row in per_condition.items()
    }
    assert oracle_against({**summary, "per_condition": without}) is None
