"""benchmarks.reaction reads how a controller's LR answers the val loss from real runs."""

import json
import math

import numpy as np
import pytest

from benchmarks.reaction import Reaction, main, reactions
from ganno_env import controllers as c
from ganno_env.rollout import make_env, rollout

VERSION = "reaction_test_v0"


def runs_of(controller, seeds=(0, 1)):
    """Real records of `controller`: small networks whose val loss rises now and then."""
    records = []
    for seed in seeds:
        env = make_env(controller, conditions={"initial_lr": 0.3}, max_cycles=12, interval=3,
                       population=2)  # fmt: skip
        for result in rollout(env, controller, seed=seed):
            records.append({**result.to_dict(), "condition": "small", "seed": seed,
                            "controller": controller.name, "suite_version": VERSION})  # fmt: skip
    return records


def test_bold_driver_reads_as_its_rule():
    records = runs_of(c.BoldDriver())
    summary = {"version": VERSION}
    reaction = reactions(summary, records, ["bold_driver"])["small"]["bold_driver"]
    assert reaction.after_rise and reaction.after_fall  # both kinds of interval occur
    np.testing.assert_allclose(reaction.after_rise, math.log10(0.5), atol=1e-6)
    np.testing.assert_allclose(reaction.after_fall, math.log10(1.25), atol=1e-6)


def test_a_constant_lr_does_not_react():
    records = runs_of(c.Constant())
    reaction = reactions({"version": VERSION}, records, ["constant"])["small"]["constant"]
    assert len(reaction.after_rise) + len(reaction.after_fall) > 0
    assert np.allclose(reaction.after_rise + reaction.after_fall, 0.0)


def test_only_the_second_half_counts_and_the_mean_over_layers():
    reaction = Reaction()
    # val after each interval: falls at 1, 2, 3 (first half), rises at 4, falls at 5
    val = [1.0, 0.9, 0.8, 0.7, 0.75, 0.6]
    lrs = [[1.0, 1.0], [2.0, 2.0], [4.0, 4.0], [4.0, 4.0], [1.0, 4.0], [1.0, 16.0]]
    reaction.add_run(val, lrs)
    # t = 3 (fell; LR unchanged), 4 (rose; mean log10 falls by 0.301), 5 (fell; +0.301)
    assert reaction.after_rise == pytest.approx([-math.log10(2.0)])
    assert reaction.after_fall == pytest.approx([0.0, math.log10(2.0)])
    assert reaction.share_rose == pytest.approx(1 / 3)


def test_stale_and_diverged_records_are_left_out():
    records = runs_of(c.BoldDriver(), seeds=(0,))
    stale = [{**r, "suite_version": "other_v0"} for r in records]
    lost = [{**r, "seed": 9, "diverged": True} for r in records]
    table = reactions({"version": VERSION}, records + stale + lost, ["bold_driver"])
    reaction = table["small"]["bold_driver"]
    fresh = reactions({"version": VERSION}, records, ["bold_driver"])["small"]["bold_driver"]
    assert reaction.after_rise == fresh.after_rise and reaction.after_fall == fresh.after_fall


def test_cli_prints_one_row_per_condition_and_refuses_unknown_controllers(tmp_path, capsys):
    records = runs_of(c.BoldDriver(), seeds=(0,))
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"version": VERSION, "controllers": ["bold_driver"]}))
    assert main([str(summary), "--controllers", "bold_driver"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2].startswith("| small | ") and "-0.301" in out[2] and "+0.097" in out[2]
    with pytest.raises(SystemExit):
        main([str(summary), "--controllers", "ganno"])
    err = capsys.readouterr().err
    assert "['ganno'] not in this benchmark" in err and "allowed: bold_driver" in err
