"""benchmarks.report: summary values, report.md, summary.json and plots from synthetic records."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks import stats
from benchmarks.report import _schedule_matrix, build_report, steps_to_target, summary_table
from benchmarks.suites import Suite

VERSION = "tiny_v1"
CONDITIONS = ("easy", "hard", "deep")
SEEDS = (1, 2, 3)
INTERVAL = 5
DECISIONS = 6
PNG = b"\x89PNG\r\n\x1a\n"

# Test loss of each controller: base + 0.01 * seed index + 0.1 * condition index, so that
# lars < ganno < bold_driver < cosine < constant on every run.
BASE = {"lars": 0.1, "ganno": 0.5, "bold_driver": 0.9, "cosine": 1.0, "constant": 1.5}
# Oracle grid: lr=0.1 has the lowest final *val* loss, lr=1.0 the lowest *test* loss.
GRID = {0.01: (1.5, 1.4), 0.1: (0.3, 0.6), 1.0: (0.4, 0.2)}  # lr: (final val, test)


def make_suite(seeds=SEEDS) -> Suite:
    return Suite(
        name="tiny",
        version=VERSION,
        description="synthetic",
        conditions_version="conditions_v0",
        task="digits_mlp",
        env={"interval": INTERVAL},
        seeds=tuple(seeds),
        conditions=CONDITIONS,
        oracle_grid=tuple(GRID),
        target_factor=2.0,
    )


def record(
    cond,
    ctrl,
    seed,
    test_loss,
    *,
    final_val=None,
    curve=None,
    variant="",
    lr=0.1,
    version=VERSION,
    accuracy=0.5,
    diverged=False,
):
    """A record shaped like benchmarks.runner.record's, with chosen losses."""
    depth = 5 if cond == "deep" else 2  # layers = depth + 1
    final_val = test_loss if final_val is None else final_val
    if curve is None:
        curve = np.linspace(2.0, final_val, DECISIONS + 1).tolist()
    decisions = max(len(curve) - 1, 1)
    schedule = [[lr * 0.8**d * (1 + layer) for layer in range(depth + 1)] for d in range(decisions)]
    with np.errstate(all="ignore"):
        auc = float(np.trapezoid(np.log(np.array(curve, dtype=float))) / max(len(curve) - 1, 1))
    return {
        "suite_version": version,
        "condition": cond,
        "controller": ctrl,
        "seed": seed,
        "variant": variant,
        "conditions": {"task": "digits_mlp", "initial_lr": lr, "depth": depth, "seed": seed},
        "test_loss": test_loss,
        "test_accuracy": accuracy,
        "final_val_loss": final_val,
        "initial_val_loss": 2.0,
        "auc_log_val": auc,
        "diverged": diverged,
        "interval": INTERVAL,
        "val_curve": curve,
        "lr_schedule": schedule,
        "wall_s": 0.1,
        "machine": "torch 2.13.0, CPU A",
    }


# Hand-built curves for ganno on "easy": the target is 2 x mean oracle final val = 0.62.
GANNO_EASY_CURVES = {
    1: [2.0, 1.5, 0.9, 0.61, 0.4, 0.5, 0.5],  # reached at index 3 -> 15 steps
    2: [2.0, 1.9, 1.8, 1.7, 1.0, 0.6, 0.51],  # index 5 -> 25 steps
    3: [2.0, 1.9, 1.8, 1.7, 1.0, 0.9, float("nan")],  # never
}


def loss(ctrl, ci, si):
    return BASE[ctrl] + 0.01 * si + 0.1 * ci


def make_records(seeds=SEEDS) -> list[dict]:
    records = []
    for ci, cond in enumerate(CONDITIONS):
        for si, seed in enumerate(seeds):
            for ctrl in BASE:
                curve = GANNO_EASY_CURVES[seed] if (ctrl, cond) == ("ganno", "easy") else None
                accuracy = None if ctrl == "bold_driver" else 0.5  # e.g. a regression task
                if (ctrl, cond, seed) == ("constant", "hard", 3):  # blew up: NaN test loss
                    records.append(
                        record(
                            cond,
                            ctrl,
                            seed,
                            float("nan"),
                            final_val=float("nan"),
                            curve=[2.0, 50.0],
                            diverged=True,
                        )
                    )
                    continue
                records.append(
                    record(cond, ctrl, seed, loss(ctrl, ci, si), curve=curve, accuracy=accuracy)
                )
            if cond != "deep":  # `random` never ran on "deep"
                records.append(record(cond, "random", seed, 1.2 + 0.01 * si))
            for lr, (val, test) in GRID.items():
                records.append(
                    record(
                        cond,
                        "oracle_grid",
                        seed,
                        test + 0.01 * si,
                        final_val=val + 0.01 * si,
                        variant=f"lr={lr:g}",
                        lr=lr,
                    )
                )
            # An older suite version: absurd losses that must not leak into the report.
            records.append(record(cond, "ganno", seed, 100.0, version="tiny_v0"))
            records.append(
                record(
                    cond,
                    "oracle_grid",
                    seed,
                    1e-4,
                    final_val=1e-6,
                    variant="lr=0.01",
                    lr=0.01,
                    version="tiny_v0",
                )
            )
    return records


def write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))  # NaN written as NaN
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    results = write(out / "results.jsonl", make_records())
    summary = build_report(results, make_suite(), out, reps=200)
    return summary, out


def expected_pngs(out: Path, conditions=CONDITIONS) -> list[Path]:
    names = [f"curves_{c}.png" for c in conditions] + [f"lr_heatmap_{c}.png" for c in conditions]
    return [out / "plots" / n for n in [*names, "intervals.png", "profiles.png"]]


def check_png(path: Path) -> None:
    assert path.is_file(), path
    data = path.read_bytes()
    assert data[:8] == PNG, path
    assert len(data) > 1024, path


# ---------------------------------------------------------------- summary values


def test_controllers_and_conditions(built):
    summary, _ = built
    assert summary["suite"] == "tiny" and summary["version"] == VERSION
    assert summary["conditions"] == list(CONDITIONS)
    assert summary["controllers"][0] == "ganno" and summary["controllers"][-1] == "oracle"
    assert set(summary["controllers"]) == {*BASE, "random", "oracle"}
    assert "oracle_grid" not in summary["controllers"]


def test_oracle_is_picked_on_val_loss_not_test_loss(built):
    summary, _ = built
    assert summary["oracle_lr"] == {c: 0.1 for c in CONDITIONS}
    for cond in CONDITIONS:
        got = summary["per_condition"][cond]["oracle"]["test_loss"]
        assert got == pytest.approx([0.6, 0.61, 0.62])


def test_iqm_equals_stats_iqm_of_the_matrix(built):
    summary, _ = built
    matrix = np.array([[loss("ganno", ci, si) for ci in range(3)] for si in range(3)])
    point, low, high = summary["overall"]["ganno"]["iqm_test_loss"]
    assert point == pytest.approx(stats.iqm(matrix), abs=1e-12)
    assert low <= point <= high
    for ci, cond in enumerate(CONDITIONS):
        got = summary["per_condition"][cond]["ganno"]["iqm_test_loss"][0]
        assert got == pytest.approx(stats.iqm(matrix[:, [ci]]), abs=1e-12)
    assert summary["overall"]["ganno"]["runs"] == 9


def test_probability_of_improvement_one_and_zero(built):
    summary, _ = built
    poi = summary["probability_of_improvement"]
    assert set(poi) == {"lars", "bold_driver", "cosine", "constant", "random"}
    assert poi["constant"]["overall"] == [1.0, 1.0, 1.0]  # ganno better on every run
    assert poi["lars"]["overall"] == [0.0, 0.0, 0.0]  # ganno worse on every run
    for cond in CONDITIONS:
        assert poi["constant"]["per_condition"][cond][0] == 1.0
        assert poi["lars"]["per_condition"][cond][0] == 0.0
    assert poi["random"]["overall"] is None  # random lacks "deep"
    assert set(poi["random"]["per_condition"]) == {"easy", "hard"}


def test_steps_to_target_from_hand_built_curves(built):
    summary, _ = built
    s = summary["per_condition"]["easy"]["ganno"]["steps_to_target"]
    assert s["target"] == pytest.approx(2.0 * np.mean([0.3, 0.31, 0.32]))
    assert s["fraction_reached"] == pytest.approx(2 / 3)
    assert s["median_steps"] == 20.0  # 15 and 25 steps


def test_steps_to_target_function():
    assert steps_to_target([2.0, 1.0, 0.5, 0.1], 10, 0.5) == 20.0
    assert steps_to_target([2.0, float("nan"), 0.4], 10, 0.5) == 20.0
    assert math.isnan(steps_to_target([2.0, float("nan"), 1.0], 10, 0.5))
    assert math.isnan(steps_to_target([], 10, 0.5))


def test_normalised_score_accuracy_and_divergence(built):
    summary, _ = built
    per = summary["per_condition"]
    assert per["easy"]["oracle"]["normalized_score"][0] == pytest.approx(1.0)
    expected = (2.0 - np.array([0.5, 0.51, 0.52])) / (2.0 - 0.61)
    assert per["easy"]["ganno"]["normalized_score"][0] == pytest.approx(stats.iqm(expected))
    assert per["easy"]["ganno"]["mean_test_accuracy"] == pytest.approx(0.5)
    assert summary["overall"]["bold_driver"]["mean_test_accuracy"] is None
    # The NaN test loss counts as +inf: IQM of 3 runs is their mean, so infinite -> null.
    assert per["hard"]["constant"]["diverged"] == 1
    assert per["hard"]["constant"]["iqm_test_loss"][0] is None
    assert summary["overall"]["constant"]["diverged"] == 1
    assert math.isfinite(summary["overall"]["constant"]["iqm_test_loss"][0])  # trimmed away


def test_other_suite_versions_are_ignored(built):
    summary, _ = built
    for cond in CONDITIONS:
        assert max(summary["per_condition"][cond]["ganno"]["test_loss"]) < 1.0
    assert any("other suite versions" in n for n in summary["notes"])


def test_controller_missing_a_condition_is_left_out_of_overall(built):
    summary, _ = built
    random = summary["overall"]["random"]
    assert random["missing_conditions"] == ["deep"]
    assert "iqm_test_loss" not in random
    assert any(n.startswith("random has no results on ['deep']") for n in summary["notes"])
    assert "random" in summary["per_condition"]["easy"]


def test_heat_map_matrix_is_layers_by_decisions():
    deep = _schedule_matrix(record("deep", "ganno", 1, 0.5))
    shallow = _schedule_matrix(record("easy", "ganno", 1, 0.5))
    assert deep.shape == (6, DECISIONS) and shallow.shape == (3, DECISIONS)
    assert deep[1, 0] == pytest.approx(np.log10(0.2))


# ---------------------------------------------------------------- files


def test_summary_json_round_trips_without_nan(built):
    summary, out = built
    text = (out / "summary.json").read_text()
    for token in ("NaN", "Infinity"):
        assert token not in text
    assert json.loads(text) == summary
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary


def test_report_md_has_tables_and_links(built):
    summary, out = built
    md = (out / "report.md").read_text()
    assert md.startswith("# Benchmark report: tiny (tiny_v1)")
    for heading in (
        "## Overall",
        "## Per condition",
        "## Probability of improvement",
        "## Oracle",
        "## Plots",
        "## How to read this",
    ):
        assert heading in md
    assert "| controller | IQM test loss [95% CI] |" in md
    assert "| baseline | overall | easy | hard | deep |" in md
    assert "**0.110 [" in md  # lars is the best competitor on "easy" (IQM 0.11)
    assert "| easy | 0.100 |" in md
    links = [line.split("](")[1].rstrip(")") for line in md.splitlines() if "](plots/" in line]
    assert sorted(links) == sorted(str(p.relative_to(out)) for p in expected_pngs(out))
    for link in links:
        check_png(out / link)


def test_every_png_is_valid(built):
    _, out = built
    for path in expected_pngs(out):
        check_png(path)


def test_summary_table_has_one_row_per_controller(built):
    summary, _ = built
    lines = summary_table(summary).splitlines()
    rows = lines[3:]
    assert len(rows) == len(summary["controllers"])
    assert "P(ganno better)" in lines[1]
    for row, ctrl in zip(rows, summary["controllers"]):
        assert row.split("|")[0].strip().startswith(ctrl)
    assert "n/a (no results on deep)" in rows[summary["controllers"].index("random")]


def test_one_seed_and_no_reference(tmp_path):
    results = write(tmp_path / "results.jsonl", make_records(seeds=(1,)))
    summary = build_report(results, make_suite((1,)), tmp_path, reference="nobody", reps=50)
    for path in expected_pngs(tmp_path):
        check_png(path)
    point, low, high = summary["overall"]["ganno"]["iqm_test_loss"]
    assert point == pytest.approx(low) and point == pytest.approx(high)  # degenerate CI
    assert summary["probability_of_improvement"] == {}
    assert any("reference 'nobody'" in n for n in summary["notes"])
    assert len(summary_table(summary).splitlines()) == 3 + len(summary["controllers"])


def test_the_report_names_the_machines_and_warns_when_they_mix(tmp_path, built):
    summary, _ = built
    assert list(summary["machines"]) == ["torch 2.13.0, CPU A"]
    assert not any("machines" in n for n in summary["notes"])

    records = make_records(seeds=(1,))
    for r in records[::3]:
        r["machine"] = "torch 2.13.0, CPU B"
    del records[1]["machine"]  # a line from before machines were recorded
    results = write(tmp_path / "results.jsonl", records)
    summary = build_report(results, make_suite((1,)), tmp_path, reps=50)
    counted = [r for r in records if r["suite_version"] == VERSION and r["condition"] in CONDITIONS]
    assert sum(summary["machines"].values()) == len(counted)
    assert summary["machines"]["torch 2.13.0, CPU B"] == sum(
        r.get("machine") == "torch 2.13.0, CPU B" for r in counted
    )
    assert any(name.startswith("unknown") for name in summary["machines"])
    note = next(n for n in summary["notes"] if n.startswith("results from 3 machines"))
    assert "CPU B" in note and note in (tmp_path / "report.md").read_text()
