"""benchmarks.cooldown_check: the same runs as `ganno bench`, the LR's growth capped at the end."""

import json
import math

import numpy as np
import pytest
import torch

from benchmarks.cooldown_check import add_cooldown, main
from benchmarks.runner import read_results
from ganno_env import controllers as c
from ganno_env.cli import main as ganno_main
from ganno_env.policy import load_policy
from ganno_env.rollout import make_env, rollout
from tests.helpers import random_policy

SUITE = {
    "version": "cool_v0",
    "seeds": [1_000_000, 1_000_001],
    "env": {"max_cycles": 8, "interval": 3},
    "conditions": {"hot": {"specs": {"initial_lr": 0.5, "width": 16}}},
    "oracle_grid": [0.01, 0.1],
}


def runs(folder, controller):
    return {
        r["seed"]: np.array(r["lr_schedule"])
        for r in read_results(folder / "results.jsonl")
        if r["controller"] == controller
    }


@pytest.fixture(scope="module")
def benches(tmp_path_factory):
    """The same suite, policy and controllers: plainly, and with ganno and bold driver cooled."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("cool")
    suite = root / "cool.json"
    suite.write_text(json.dumps(SUITE))
    policy = random_policy(root / "p.pt")
    args = ["--suite", suite, "--policy", policy, "--controllers", "ganno,bold_driver"]
    args = [str(a) for a in args]
    assert ganno_main(["bench", *args, "--workers", "1", "--out", str(root / "plain")]) == 0
    cooled = ["--cool", "ganno,bold_driver", "--fraction", "0.5", "--cap", "0.8"]
    assert main([*cooled, "--", *args, "--out", str(root / "cooled")]) == 0
    return root / "plain", root / "cooled"


@pytest.mark.parametrize("controller", ["ganno", "bold_driver"])
def test_the_runs_are_the_plain_ones_until_the_cooldown_then_grow_at_most_by_the_cap(
    benches, controller
):
    plain, cooled = (runs(folder, controller) for folder in benches)
    assert plain.keys() == cooled.keys() == {1_000_000, 1_000_001}
    for seed, lrs in cooled.items():
        np.testing.assert_array_equal(lrs[:4], plain[seed][:4])  # decisions 0..3 of 8
        growth = lrs[4:] / lrs[3:-1]
        assert np.all(growth <= 0.8 * (1 + 1e-6)), growth
    # the plain runs grow somewhere in their second half, so the cap did something
    assert any(np.any(lrs[4:] / lrs[3:-1] > 0.8 * (1 + 1e-6)) for lrs in plain.values())


def test_bold_driver_under_the_cap_still_cuts_by_its_rule():
    controller = add_cooldown(c.BoldDriver(), fraction=1.0, cap=0.8)
    env = make_env(controller, conditions={"initial_lr": 0.3}, max_cycles=8, interval=3)
    (result,) = rollout(env, controller, seed=0)
    steps = np.log10(np.array(result.lr_schedule)[1:, 0] / np.array(result.lr_schedule)[:-1, 0])
    assert set(np.round(steps, 3)) <= {round(math.log10(0.8), 3), round(math.log10(0.5), 3)}


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    for argv, expected in [
        (["--cool", "lars", "--", "--quick"], "['lars']: known: ['bold_driver', 'ganno'"),
        (["--cool", "ganno", "--fraction", "0", "--", "--quick"], "allowed: a number in (0, 1]"),
        (["--cool", "ganno", "--cap", "nan", "--", "--quick"], "expected positive, finite"),
        (["--cool", "ganno", "--", "--quick", "--workers", "2"], "leave out --workers"),
    ]:
        with pytest.raises(SystemExit):
            main(argv)
        assert expected in capsys.readouterr().err
    policy = load_policy(random_policy(tmp_path / "p.pt"))
    with pytest.raises(ValueError, match="have none <= it"):
        add_cooldown(policy, fraction=0.5, cap=0.1)
