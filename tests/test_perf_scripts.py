"""The speed benchmark runs end to end on a tiny configuration and writes what it prints.

Speed itself is measured by running the script on a quiet machine, never asserted here.
"""

import json

import numpy as np
import pytest

from benchmarks import perf_env


def test_perf_env_measures_every_configuration_and_profiles_them(tmp_path, capsys):
    out = tmp_path / "perf.json"
    argv = ["--populations", "1,2", "--steps", "25", "--repeats", "1", "--leak-episodes", "2"]
    assert perf_env.main([*argv, "--profile", "--json", str(out)]) == 0
    report = json.loads(out.read_text())

    assert report["args"]["batch_size"] == 32  # the default task's own batch size
    configs = report["configs"]
    assert list(configs) == ["plain", "env pop 1", "env pop 2"]
    assert configs["env pop 2"]["measurements"][0]["network_steps"] == 2 * 25
    assert configs["env pop 2"]["agent_steps_per_s"] > 0
    assert configs["plain"]["ratio_to_plain"] == 1.0
    for name in ("env pop 1", "env pop 2"):
        shares = report["profiles"][name]
        assert 0 < len(shares) <= perf_env.PROFILE_TOP
        assert all(0 < share <= 1 for _, share in shares)
        assert sum(share for _, share in shares) <= 1.0 + 1e-9
    assert report["leak"]["episodes"] == 2
    printed = capsys.readouterr().out
    assert "env pop 2" in printed and "profile env pop 1:" in printed and "targets:" in printed


def test_perf_env_refuses_an_unknown_task_before_measuring(capsys):
    with pytest.raises(SystemExit) as stop:
        perf_env.main(["--task", "no_such_task"])
    assert stop.value.code == 2
    assert "no_such_task" in capsys.readouterr().err


def test_perf_cnn_times_both_paths_and_checks_they_agree(capsys):
    from benchmarks import perf_cnn

    argv = ["--population", "3", "--steps", "2", "--repeats", "1"]
    assert perf_cnn.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["path", "median", "s", "x", "vmap"]
    assert lines[2].split()[0::2] == ["vmap", "1.00"] and lines[3].split()[0] == "grouped"
    with pytest.raises(SystemExit, match="digits_mlp"):
        perf_cnn.main(["--task", "digits_mlp", *argv])


@pytest.mark.slow
def test_perf_bench_order_runs_the_units_both_ways(capsys):
    from benchmarks import perf_bench_order

    assert perf_bench_order.main(["--suite", "quick", "--seeds", "1", "--repeats", "1"]) == 0
    printed = capsys.readouterr().out
    assert "x plan order" in printed and "largest first" in printed


def test_medians_are_printed_next_to_their_ratio_to_the_base(capsys):
    from benchmarks.timing import print_medians

    print_medians({"lr": [1.0, 2.0, 9.0], "lr+momentum": [4.0, 5.0]}, base="lr", label="controls")
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert rows[1:] == [["lr", "2.000", "1.00"], ["lr+momentum", "4.500", "2.25"]]
    with pytest.raises(ValueError, match="'none'.*allowed"):
        print_medians({"lr": [1.0]}, base="none", label="controls")


def test_round_robin_times_every_configuration_in_turn():
    from benchmarks.timing import round_robin

    calls = []

    def seconds(name, repeat):
        calls.append((name, repeat))
        return float(len(calls))

    times = round_robin(["a", "b"], 2, seconds)
    assert calls == [("a", 0), ("b", 0), ("a", 1), ("b", 1)]
    assert times == {"a": [1.0, 3.0], "b": [2.0, 4.0]}


def test_step_ratios_probes_training_conditions_only(capsys):
    from benchmarks import step_ratios

    ratios = step_ratios.probe_step_ratios("train_wide", resets=2, population=3)
    assert ratios.shape == (6, 4) and (ratios > 0).all()
    # the ratio is the step-ratio feature's (log10, clipped at 0)
    env = step_ratios.LayerwiseLREnv(conditions="train_wide", population=3)
    observations, _ = env.reset(seed=3)
    feature = np.array([observations[f"net{i}_layer{j}"][1] for i in range(3)
                        for j in range(4)]).reshape(3, 4)  # fmt: skip
    np.testing.assert_allclose(feature, np.minimum(np.log10(ratios[3:]), 0.0), rtol=1e-5)

    step_ratios.main(["--resets", "2", "--population", "3"])
    printed = capsys.readouterr().out
    assert "6 networks" in printed and f"{ratios.max():.4g}" in printed
    with pytest.raises(ValueError, match="'unseen_lr_high' is held out"):
        step_ratios.probe_step_ratios("unseen_lr_high", 1, 1)
    with pytest.raises(ValueError, match="held-out seeds"):
        step_ratios.probe_step_ratios("train_wide", 1_000_001, 1)
    assert [step_ratios.round_up(v) for v in (0.3279, 0.33, 1.0, 0.001234)] == [
        0.33, 0.33, 1.0, 0.0013,
    ]  # fmt: skip


def test_step_ratios_every_step_tracks_the_largest_step_and_trains_under_the_clip(capsys):
    from benchmarks import step_ratios

    free = step_ratios.every_step_ratios("train_hot", resets=1, population=3, steps=30,
                                         step_clip=None)  # fmt: skip
    assert free.shape == (3, 4)
    # the first step's ratio is the probe's, so the largest is at least that
    probe = step_ratios.probe_step_ratios("train_hot", resets=1, population=3)
    assert (free[:, 1] >= probe.max(1) * (1 - 1e-5)).all()
    clip = float(np.median(free[:, 1]))  # binds on at least one network
    clipped = step_ratios.every_step_ratios("train_hot", 1, 3, 30, step_clip=clip)
    np.testing.assert_array_equal(clipped[:, [0, 2]], free[:, [0, 2]])  # the same networks
    bound = free[:, 1] > clip
    assert bound.any() and not np.allclose(clipped[bound, 3], free[bound, 3])

    step_ratios.main(["--every-step", "--resets", "1", "--population", "3", "--steps", "30"])
    printed = capsys.readouterr().out
    assert "3 networks, 30 steps at their LR, no clip" in printed
    with pytest.raises(ValueError, match="'unseen_lr_high' is held out"):
        step_ratios.every_step_ratios("unseen_lr_high", 1, 1, 5, None)
    with pytest.raises(SystemExit):
        step_ratios.main(["--every-step", "--step-clip", "0"])
    assert "--step-clip 0.0: allowed a finite number > 0" in capsys.readouterr().err
