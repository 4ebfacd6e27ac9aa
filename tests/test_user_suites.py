"""User suite files (inline conditions, per-condition episodes, validation), the tuned cosine
baselines, skipped conditions without their data files, and the `harder` suite."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.runner import read_results
from benchmarks.suites import differences_from_training, load_suite, parse_suite
from ganno_env.cli import main
from ganno_env.conditions import Condition, held_out_overlap, load_training_conditions
from ganno_env.config import EnvConfig
from tests.helpers import random_policy

GRID = [0.01, 0.1, 1.0]


def write(path: Path, content) -> Path:
    path.write_text(json.dumps(content))
    return path


def user_suite(**changes) -> dict:
    """Two inline conditions on tiny networks; `long` runs twice the decisions."""
    suite = {
        "version": "mine_v0",
        "seeds": [1_000_000, 1_000_001],
        "env": {"max_cycles": 3, "interval": 2},
        "conditions": {
            "big_lr": {
                "specs": {"initial_lr": {"choice": [0.5, 2.0]}, "width": 16},
                "description": "my LRs",
            },
            "long": {"specs": {"initial_lr": 0.05, "width": 16}, "env": {"max_cycles": 6}},
        },  # fmt: skip
        "oracle_grid": GRID,
        "tuned_baselines": True,
    }
    return {**suite, **changes}


def bench(*args) -> int:
    torch.set_num_threads(1)
    return main(["bench", "--workers", "1", *map(str, args)])


def test_a_suite_file_anywhere_runs_its_inline_conditions_and_tuned_baselines(tmp_path, capsys):
    (tmp_path / "elsewhere").mkdir()
    path = write(tmp_path / "elsewhere" / "mine.json", user_suite())
    out = tmp_path / "bench"
    assert bench("--suite", path, "--policy", random_policy(tmp_path / "p.pt"), "--out", out) == 0
    records = read_results(out / "results.jsonl")
    assert {r["suite_version"] for r in records} == {"mine_v0"}

    # each condition with its own episode length
    decisions = {r["condition"]: len(r["val_curve"]) - 1 for r in records}
    assert decisions == {"big_lr": 3, "long": 6}
    # the tuned baselines ran the whole grid, per seed, as their peak LR
    for name in ("cosine_tuned", "warmup_cosine_tuned"):
        runs = [r for r in records if r["controller"] == name and r["condition"] == "long"]
        assert sorted(r["variant"] for r in runs) == sorted([f"lr={lr:g}" for lr in GRID] * 2)

    summary = json.loads((out / "summary.json").read_text())
    for cond in ("big_lr", "long"):
        runs = [r for r in records if r["controller"] == "cosine_tuned" and r["condition"] == cond]
        mean_val = {
            lr: np.mean([r["final_val_loss"] for r in runs if r["variant"] == f"lr={lr:g}"])
            for lr in GRID
        }
        best = min(GRID, key=mean_val.get)  # picked on val loss, never on test loss
        assert summary["tuned_lr"]["cosine_tuned"][cond] == best
        picked = sorted(
            (r for r in runs if r["variant"] == f"lr={best:g}"), key=lambda r: r["seed"]
        )
        assert summary["per_condition"][cond]["cosine_tuned"]["test_loss"] == [
            r["test_loss"] for r in picked
        ]
    report = (out / "report.md").read_text()
    assert "Zero-shot ganno against cosine_tuned tuned with 3 runs per condition" in report
    assert "| long | width 16 (training: 32, 64, 128); 12 steps (training: 1,000) |" in report
    assert "cosine_tuned (reference)" in report

    # an edited file (another episode length) never mixes with the old results
    capsys.readouterr()
    edited = user_suite()
    edited["conditions"]["long"]["env"]["max_cycles"] = 4
    write(path, edited)
    assert bench("--suite", path, "--controllers", "constant", "--out", out) == 0
    constant = [r for r in read_results(out / "results.jsonl") if r["controller"] == "constant"]
    assert len({r["inputs"]["suite_hash"] for r in constant}) == 2
    assert sorted(len(r["val_curve"]) - 1 for r in constant[-4:]) == [3, 3, 4, 4]


def test_every_problem_of_a_suite_file_is_one_line_before_any_run(tmp_path, capsys):
    bad = {
        "version": "mine_v0",
        "colour": "blue",
        "task": "imagenet_mlp",
        "seeds": [5, 1_000_000, 1_000_000],
        "env": {"max_cycles": 0},
        "conditions": {
            "a": {"specs": {"initial_lr": {"log_uniform": [0.3, 0.1]}}, "notes": 1},
            "b": {"specs": {"width": {"choice": []}, "batch_size": {"int_uniform": [8, 8]}}},
            "c": {"specs": {"task": "nope", "seed": 3}},
        },
    }
    out = tmp_path / "bench"
    assert bench("--suite", write(tmp_path / "bad.json", bad), "--out", out) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    expected = [
        "unknown key 'colour'",
        "task='imagenet_mlp' is unknown",
        "env: max_cycles=0",
        "seed 5 is below 1,000,000",
        "seeds [1000000] are listed twice",
        "condition 'a': unknown key 'notes'",
        "condition 'a': initial_lr: log_uniform [0.3, 0.1] is inverted",
        "condition 'b': width: choice [] is empty",
        "condition 'b': batch_size: int_uniform [8, 8] is empty",
        "condition 'c': task: task='nope' is unknown",
        "condition 'c': seed: unknown field",
    ]
    assert len(lines) == len(expected), lines
    for line, text in zip(lines, expected):
        assert line.startswith("ganno: error: ") and "bad.json" in line and text in line, line
    assert not out.exists()  # nothing ran

    twice = '{"version": "v", "conditions": {"a": {"specs": {}}, "a": {"specs": {}}}}'
    (tmp_path / "twice.json").write_text(twice)
    assert bench("--suite", tmp_path / "twice.json", "--out", out) == 2
    assert "'a' is defined twice" in capsys.readouterr().err
    assert bench("--suite", tmp_path / "missing.json", "--out", out) == 2
    assert "does not exist" in capsys.readouterr().err
    # an initial LR the env would clip is refused before any run, naming the condition
    outside = user_suite(conditions={"huge": {"specs": {"initial_lr": 50.0}}})
    assert bench("--suite", write(tmp_path / "o.json", outside), "--out", out) == 2
    assert "condition 'huge'" in capsys.readouterr().err and not out.exists()
    # a list of conditions holds names: an inline condition there is named, not a crash
    mixed = user_suite(conditions=["train", {"specs": {}}, "train"])
    assert bench("--suite", write(tmp_path / "m.json", mixed), "--out", out) == 2
    err = capsys.readouterr().err
    assert "condition {'specs': {}}; allowed: a condition name (str)" in err
    assert "condition 'train' is listed twice" in err and not out.exists()


def test_cifar_conditions_are_skipped_without_their_files_and_run_with_them(tmp_path, capsys):
    from tests.test_datasets import write_tiny_cifar

    suite = user_suite(
        conditions={
            "digits": {"specs": {"initial_lr": 0.05, "width": 16}},
            "cifar": {
                "specs": {"task": "cifar10_mlp", "initial_lr": 0.05, "width": 16, "batch_size": 4}
            },
        },  # fmt: skip
        tuned_baselines=False,
    )
    path, out = write(tmp_path / "s.json", suite), tmp_path / "bench"
    assert bench("--suite", path, "--controllers", "constant", "--out", out) == 0
    err = capsys.readouterr().err
    assert "skipping condition 'cifar'" in err and "--data-dir" in err
    assert {r["condition"] for r in read_results(out / "results.jsonl")} == {"digits"}
    assert any(
        "cifar skipped" in n for n in json.loads((out / "summary.json").read_text())["notes"]
    )

    write_tiny_cifar(tmp_path / "data", "flat")
    assert bench("--suite", path, "--controllers", "constant", "--out", out,
                 "--data-dir", tmp_path / "data") == 0  # fmt: skip
    records = read_results(out / "results.jsonl")
    # the digits runs are reused: where data files lie is no part of a result's key
    assert sorted(r["condition"] for r in records) == ["cifar"] * 2 + ["digits"] * 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["conditions"] == ["digits", "cifar"]


def test_the_harder_suite_is_harder_than_training_in_every_condition():
    suite = load_suite("harder")
    assert suite.version == "harder_v0" and suite.tuned_baselines
    assert min(suite.seeds) >= 1_000_000 and len(suite.seeds) >= 3
    differences = {c: differences_from_training(suite, c) for c in suite.conditions}
    assert all(differences.values()), differences
    text = {c: "; ".join(d) for c, d in differences.items()}
    assert any("fashion_mnist" in t and "CNN" in t for t in text.values())
    assert any("fashion_mnist" in t and "CNN" not in t for t in text.values())
    steps = [suite.env_for(c)["max_cycles"] * suite.env_for(c)["interval"] for c in text]
    assert max(steps) >= 3 * 40 * 25
    assert any("depth" in t and "width" in t for t in text.values())
    assert any("momentum" in t for t in text.values())
    assert any("initial LR" in t for t in text.values())  # outside the training range
    inside = [c for c in suite.conditions if "initial LR" not in text[c]]
    assert inside  # and inside it
    assert {"cifar10_mlp", "cifar10_cnn"} <= set(suite.conditions)


def test_the_held_in_suite_is_the_main_jobs_training_distribution_on_unseen_seeds():
    suite = load_suite("heldin")
    assert suite.version == "heldin_v0" and suite.conditions == ("train_wide",)
    assert min(suite.seeds) >= 1_000_000 and len(suite.seeds) >= 40
    assert differences_from_training(suite, "train_wide") == []
    assert suite.oracle_grid == load_suite("unseen").oracle_grid
    ppo = pytest.importorskip("rllib_configs.ppo")  # the presets need Ray
    for preset in ("local", "full"):  # if a preset moves, this suite must follow it
        assert ppo.get_preset(preset).env_config["conditions"] == "train_wide"


def test_training_conditions_from_a_file_are_checked_against_the_held_out_ones(tmp_path):
    ok = {"specs": {"initial_lr": {"log_uniform": [1e-4, 0.3]}, "width": {"choice": [32, 48]}},
          "description": "mine"}  # fmt: skip
    specs = load_training_conditions(str(write(tmp_path / "ok.json", ok)))
    assert specs == ok["specs"]
    env_config = EnvConfig(conditions=specs)  # the env takes field specs as they are
    draws = {env_config.condition().sample(np.random.default_rng(s), s).width for s in range(20)}
    assert draws == {32, 48}

    mistakes = [
        ({"specs": {"batch_size": {"choice": [8, 32]}}}, "held-out condition 'batch_small'"),
        ({"specs": {"initial_lr": {"log_uniform": [1e-4, 1.5]}}}, "'unseen_lr_high'"),
        ({"specs": {"initial_lr": 0.01, "grad_scale": {"log_uniform": [0.3, 200]}}},
         "effective LR"),
        ({"specs": {"colour": 1}}, "unknown field 'colour'"),
        ({"specs": {}, "held_out": True}, "unknown key 'held_out'"),
        ({"specs": {"depth": {"int_uniform": [5, 2]}}}, "allowed"),
    ]  # fmt: skip
    for i, (content, text) in enumerate(mistakes):
        with pytest.raises(ValueError, match=text.replace("(", r"\(")):
            load_training_conditions(str(write(tmp_path / f"bad{i}.json", content)))
    assert held_out_overlap(Condition("x", {"initial_lr": {"log_uniform": [1e-4, 0.3]}})) == []


def test_the_readme_suite_example_is_a_valid_suite():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    blocks = [b.split("```")[0] for b in readme.split("```json\n")[1:]]
    example = next(json.loads(b) for b in blocks if '"mine_v0"' in b)
    suite = parse_suite(example, "mine")
    assert suite.conditions == ("big_lr", "long") and suite.env_for("long")["max_cycles"] == 120


def test_a_bad_training_conditions_file_is_one_line_per_problem_before_ray(tmp_path, capsys):
    pytest.importorskip("ray")
    bad = {"specs": {"batch_size": {"choice": [8, 32]}, "colour": 1}, "notes": "x"}
    out = tmp_path / "run"
    args = ["train", "--preset", "smoke", "--conditions", write(tmp_path / "c.json", bad)]
    assert main([*map(str, args), "--out", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("ganno: error: ") for line in lines), lines
    assert "unknown key 'notes'" in lines[0] and "unknown field 'colour'" in lines[1]
    assert not out.exists()
    held_out = {"specs": {"batch_size": {"choice": [8, 32]}}}
    args[-1] = write(tmp_path / "h.json", held_out)
    assert main([*map(str, args), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "held-out condition 'batch_small'" in err
    assert "Traceback" not in err and not out.exists()


def test_the_constant_lr_diagnostic_suite_of_the_docs_runs(tmp_path):
    """docs/suites/constant_lr.json (docs/results.md names the command): one network per
    condition, each at its initial LR for the whole run."""
    suite = Path(__file__).resolve().parent.parent / "docs" / "suites" / "constant_lr.json"
    out = tmp_path / "bench"
    assert bench("--suite", suite, "--controllers", "constant", "--seeds", 1, "--out", out) == 0
    records = read_results(out / "results.jsonl")
    assert sorted(r["condition"] for r in records) == [
        "train_hot", "train_tasks", "train_wide", "unseen_lr_high"
    ]  # fmt: skip
    for record in records:
        first = record["lr_schedule"][0]
        assert all(lrs == first for lrs in record["lr_schedule"]), record["condition"]
    high = next(r for r in records if r["condition"] == "unseen_lr_high")
    assert min(abs(high["lr_schedule"][0][0] - lr) for lr in (1.0, 3.0)) < 1e-6


@pytest.mark.parametrize(
    "name, expected",
    [
        ("constant_lr_inputs.json", {"wide_inputs": (0.5, 3.0), "hot_inputs": (0.5, 3.0),
                                     "hot_inputs_large": (1.5, 3.0)}),
        ("beyond_lr.json", {"lr_5": None, "lr_10": None}),
        ("low_train_lr.json", {"lr_1e-4": None}),
        ("beyond_low_lr.json", {"lr_1e-7": None, "lr_3e-7": None}),
    ],
)  # fmt: skip
def test_the_other_diagnostic_suites_of_the_docs_run(tmp_path, name, expected):
    """The suites docs/results.md names for scaled inputs, for LRs beyond the held-out ones
    (above and below) and for the lowest training LR: each condition runs, with the input
    scale or the initial LR its specs give."""
    suite = Path(__file__).resolve().parent.parent / "docs" / "suites" / name
    out = tmp_path / "bench"
    assert bench("--suite", suite, "--controllers", "constant", "--seeds", 1, "--out", out) == 0
    records = {r["condition"]: r for r in read_results(out / "results.jsonl")}
    assert set(records) == set(expected)
    for condition, scales in expected.items():
        drawn = records[condition]["conditions"]
        if scales is not None:
            assert scales[0] <= drawn["input_scale"] <= scales[1], condition
        else:
            assert drawn["initial_lr"] == float(condition.split("_")[1])
