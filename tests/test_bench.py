"""The benchmark runner: resumable, complete, keyed by its inputs, and the main job's pieces
end to end."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from benchmarks import runner
from benchmarks.report import build_report
from benchmarks.runner import (
    code_hash,
    file_hash,
    plan,
    read_results,
    run_inputs,
    run_key,
    run_suite,
)
from benchmarks.suites import load_suite, suite_names
from tests.helpers import random_policy

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
    units = plan(suite, ["constant", "cosine"], set(), run_inputs(suite, ["constant", "cosine"]))
    starts = {}
    for unit in units:
        for seed, conditions in zip(unit.seeds, unit.conditions):
            starts.setdefault((unit.condition, seed), set()).add(conditions)
    assert all(len(v) == 1 for v in starts.values())
    deeper = [u for u in units if u.condition == "deeper" and u.controller == "constant"]
    depths = [{dict(c)["depth"] for c in u.conditions} for u in deeper]
    assert all(len(d) == 1 for d in depths)  # one network shape per population


def expected_keys(suite, controllers):
    inputs = run_inputs(suite, controllers)
    return {
        run_key({"condition": c, "controller": name, "seed": seed, "inputs": inputs[name]})
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


def tiny_suite(**env):
    """The quick suite cut to one condition, two seeds and short episodes."""
    suite = load_suite("quick").with_seeds(2)
    return replace(suite, conditions=suite.conditions[:1],
                   env={"max_cycles": 4, "interval": 5, **env})  # fmt: skip


def test_a_changed_input_recomputes_its_runs_and_the_report_uses_only_current_ones(tmp_path):
    torch.set_num_threads(1)
    suite = tiny_suite()
    cond = suite.conditions[0]
    a, b = random_policy(tmp_path / "a.pt", seed=1), random_policy(tmp_path / "b.pt", seed=2)
    out = tmp_path / "bench"
    run_suite(suite, out, policy=a, controllers=["ganno", "constant"])
    path = run_suite(suite, out, policy=b, controllers=["ganno", "constant"])
    records = read_results(path)
    runs = Counter((r["controller"], r["inputs"]["policy_hash"]) for r in records)
    # policy B's runs were computed (not A's reused); constant does not use the policy
    assert runs == {("ganno", file_hash(a)): 2, ("ganno", file_hash(b)): 2, ("constant", None): 2}

    def losses(policy):
        chosen = [r for r in records if r["inputs"]["policy_hash"] == file_hash(policy)]
        return [r["test_loss"] for r in sorted(chosen, key=lambda r: r["seed"])]

    assert losses(a) != losses(b)  # else this test could not tell them apart
    summary = build_report(path, suite, out, reps=50, inputs=run_inputs(suite, ["ganno"], b))
    assert summary["per_condition"][cond]["ganno"]["test_loss"] == losses(b)
    assert list(summary)[:3] == ["suite", "version", "inputs"]
    assert summary["inputs"] == {"ganno": run_inputs(suite, ["ganno"], b)["ganno"]}
    assert any(n.startswith("4 result lines ignored") for n in summary["notes"])
    report = (out / "report.md").read_text()
    assert file_hash(b) in report and file_hash(a) not in report

    # An edited suite (other env settings) recomputes every run it affects.
    edited = tiny_suite(interval=6)
    assert edited.content_hash() != suite.content_hash()
    run_suite(edited, out, controllers=["constant"])
    again = [r for r in read_results(path) if r["controller"] == "constant"]
    assert [r["inputs"]["suite_hash"] for r in again] == [suite.content_hash()] * 2 + [
        edited.content_hash()
    ] * 2
    assert {r["interval"] for r in again[2:]} == {6}
    summary = build_report(path, edited, out, reps=50, inputs=run_inputs(edited, ["constant"]))
    assert summary["per_condition"][cond]["constant"]["runs"] == 2
    assert summary["inputs"]["constant"]["suite_hash"] == edited.content_hash()


def test_the_report_names_the_policy_file_and_the_rules_it_ran_under(tmp_path):
    torch.set_num_threads(1)
    suite = tiny_suite()
    rules = {"fallback_step_ratio": 0.5, "step_clip": 0.8}
    policy = random_policy(tmp_path / "p.pt", env_config=rules)
    out = tmp_path / "bench"
    path = run_suite(suite, out, policy=policy, controllers=["ganno", "constant"])
    inputs = run_inputs(suite, ["ganno", "constant"], policy)
    summary = build_report(path, suite, out, reps=50, inputs=inputs, policy=policy)
    assert summary["policy"] == {
        "file": str(policy), "policy_hash": file_hash(policy), "fallback_step_ratio": 0.5,
        "fallback_added_after_training": False, "max_step_ratio": None,
        "probe_cuts_only": False, "step_clip": 0.8, "observation_clip": None,
    }  # fmt: skip
    report = (out / "report.md").read_text()
    assert (
        "with the fallback at step ratio 0.5, trained with it, no safety net, every step "
        "clipped to step ratio 0.8." in report
    )
    # a report without the policy's controllers says nothing about the policy
    inputs = run_inputs(suite, ["constant"], policy)
    summary = build_report(path, suite, out, reps=50, inputs=inputs, policy=policy)
    assert "policy" not in summary and "## Policy" not in (out / "report.md").read_text()


def test_results_of_other_package_code_are_stale(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    suite, out = tiny_suite(), tmp_path / "bench"
    path = run_suite(suite, out, controllers=["constant"])
    run_suite(suite, out, controllers=["constant"])  # the same code: nothing to recompute
    assert [r["inputs"]["code_hash"] for r in read_results(path)] == [code_hash()] * 2
    assert {r["machine"] for r in read_results(path)} == {runner.machine()}
    assert runner.machine().startswith(f"torch {torch.__version__}, ")
    monkeypatch.setattr(runner, "code_hash", lambda: "edited")
    run_suite(suite, out, controllers=["constant"])
    hashes = Counter(r["inputs"]["code_hash"] for r in read_results(path))
    assert hashes == {code_hash(): 2, "edited": 2}


def test_the_code_hash_follows_every_source_file_and_its_path(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "a.py").write_text("x = 1\n")
    (package / "sub" / "b.py").write_text("y = 2\n")
    (package / "notes.txt").write_text("not code")
    seen = {code_hash.__wrapped__(package)}
    (package / "notes.txt").write_text("still not code")
    assert code_hash.__wrapped__(package) in seen
    for change in (
        lambda: (package / "sub" / "b.py").write_text("y = 3\n"),
        lambda: (package / "sub" / "b.py").rename(package / "sub" / "c.py"),
        lambda: (package / "d.py").write_text(""),
    ):
        change()
        assert code_hash.__wrapped__(package) not in seen
        seen.add(code_hash.__wrapped__(package))


def test_the_runner_hands_out_the_largest_units_first(tmp_path):
    """The oracle grid's units (7 networks per seed) go to the workers before the hand-made
    ones, which would otherwise come first in plan order and leave the grid to the end."""
    torch.set_num_threads(1)
    suite = tiny_suite()
    controllers = ["constant", "cosine", "oracle_grid"]
    planned = plan(suite, controllers, set(), run_inputs(suite, controllers))
    assert planned[0].controller == "constant"  # else this test could not tell the orders
    started = []
    run_suite(suite, tmp_path, controllers=controllers, workers=1, on_unit=started.append)
    assert [u.controller for u in started] == ["oracle_grid", "constant", "cosine"]
    assert [u.size for u in started] == [2 * len(suite.oracle_grid), 2, 2]


@pytest.mark.slow
def test_quick_suite_with_a_smoke_trained_policy(ray_session, tmp_path):
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
    inputs = run_inputs(suite, controllers, str(policy))
    summary = build_report(results, suite, tmp_path / "bench", inputs=inputs)
    assert "ganno" in summary["overall"] and "oracle" in summary["overall"]
    assert (tmp_path / "bench" / "report.md").stat().st_size > 500
    assert any((tmp_path / "bench" / "plots").glob("*.png"))
    with pytest.raises(ValueError, match="policy"):
        run_suite(suite, tmp_path / "x", controllers=["ganno"])
