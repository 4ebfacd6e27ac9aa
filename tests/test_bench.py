"""The benchmark runner: resumable, complete, and the main job's pieces end to end."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.runner import plan, read_results, run_key, run_suite
from benchmarks.suites import load_suite, suite_names

BIN = Path(sys.executable).parent


def test_suites_are_versioned_and_cover_the_held_out_conditions():
    assert {"unseen", "quick"} <= set(suite_names())
    unseen = load_suite("unseen")
    assert unseen.version == "unseen_v0" and len(unseen.seeds) >= 10
    assert len(unseen.conditions) == 10 and min(unseen.seeds) >= 1_000_000
    quick = load_suite("quick")
    assert set(quick.conditions) <= set(unseen.conditions)
    with pytest.raises(ValueError, match="unseen"):
        load_suite("nope")


def test_every_controller_starts_each_seed_from_the_same_conditions():
    suite = load_suite("quick")
    units = plan(suite, ["constant", "cosine"], done=set())
    starts = {}
    for unit in units:
        for seed, conditions in zip(unit.seeds, unit.conditions):
            starts.setdefault((unit.condition, seed), set()).add(conditions)
    assert all(len(v) == 1 for v in starts.values())
    deeper = [u for u in units if u.condition == "deeper" and u.controller == "constant"]
    depths = [{dict(c)["depth"] for c in u.conditions} for u in deeper]
    assert all(len(d) == 1 for d in depths)  # one network shape per population


def expected_keys(suite, controllers):
    return {
        (suite.version, c, name, seed, "")
        for c in suite.conditions
        for name in controllers
        for seed in suite.seeds
    }


def test_killed_runner_resumes_without_repeating_or_losing_a_run(tmp_path):
    suite = load_suite("quick").with_seeds(2)
    controllers = ["constant", "cosine", "step_decay"]
    args = [str(BIN / "ganno"), "bench", "--quick", "--seeds", "2", "--workers", "1",
            "--controllers", ",".join(controllers), "--out", str(tmp_path)]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    results = tmp_path / "results.jsonl"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if results.exists() and len(read_results(results)) >= 4:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the runner wrote no results within 180 s")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = read_results(results)
    assert 4 <= len(before) < len(expected_keys(suite, controllers))
    with results.open("a") as f:
        f.write('{"suite_version": "quick_v0", "cond')  # a line cut off mid-write

    run_suite(suite, tmp_path, controllers=controllers, workers=1)
    after = read_results(results)
    keys = [run_key(r) for r in after]
    assert len(keys) == len(set(keys))  # nothing repeated
    assert set(keys) == expected_keys(suite, controllers)  # nothing lost
    assert after[: len(before)] == before  # earlier lines untouched
    text = results.read_text()
    assert text.endswith("\n") and all(json.loads(line) for line in text.splitlines())


@pytest.mark.slow
def test_quick_suite_with_a_smoke_trained_policy(ray_session, tmp_path):
    from benchmarks.report import build_report
    from rllib_configs.ppo import get_preset
    from rllib_configs.train import train

    policy = train(get_preset("smoke"), "shared", tmp_path / "train", stop_iters=1,
                   log=lambda s: None)  # fmt: skip
    suite = load_suite("quick").with_seeds(2)
    controllers = ["ganno", "ganno_global", "constant", "bold_driver", "oracle_grid"]
    results = run_suite(suite, tmp_path / "bench", policy=str(policy), controllers=controllers,
                        workers=2)  # fmt: skip
    records = read_results(results)
    assert {r["controller"] for r in records} == set(controllers)
    assert len(records) == 3 * 2 * (4 + len(suite.oracle_grid))
    summary = build_report(results, suite, tmp_path / "bench")
    assert "ganno" in summary["overall"] and "oracle" in summary["overall"]
    assert (tmp_path / "bench" / "report.md").stat().st_size > 500
    assert any((tmp_path / "bench" / "plots").glob("*.png"))
    with pytest.raises(ValueError, match="policy"):
        run_suite(suite, tmp_path / "x", controllers=["ganno"])
