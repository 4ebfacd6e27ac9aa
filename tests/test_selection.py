"""Held-in validation and the checkpoint a training run exports.

Real smoke-preset RLlib runs on the session's Ray, scoring real candidate policies on real
networks of the training conditions.
"""

import json

import pytest
import torch

from ganno_env.conditions import HELD_OUT_SEED_START
from ganno_env.policy import load_policy
from ganno_env.validation import (
    MAX_VALIDATION_NETWORKS,
    VALIDATION_SEED_START,
    validation_score,
)

pytest.importorskip("ray")

from rllib_configs.ppo import get_preset  # noqa: E402
from rllib_configs.selection import best, due, read_scores, validation_settings  # noqa: E402
from rllib_configs.train import train  # noqa: E402

VALIDATING = get_preset("smoke", validate_every=1, validate_from=2, validation_networks=3)


def quiet(line: str) -> None:
    pass


def weights(path) -> dict[str, torch.Tensor]:
    payload = torch.load(path, weights_only=True)
    return {f"{m}.{k}": v for m, module in payload["modules"].items() for k, v in module.items()}


def test_candidates_are_due_from_validate_from_every_validate_every_and_at_the_end():
    preset = get_preset("local")  # validates 60, 70, ..., 100
    assert [i for i in range(1, 101) if due(preset, i, 100)] == [60, 70, 80, 90, 100]
    assert [i for i in range(1, 66) if due(preset, i, 65)] == [60, 65]
    assert not any(due(preset, i, 50) for i in range(1, 51))  # stops before validate_from
    full = get_preset("full")  # validates 100, 110, ..., 200 on 128 networks
    assert [i for i in range(1, 201) if due(full, i, 200)] == list(range(100, 201, 10))
    assert full.validation_networks == 128 and preset.validation_networks == 64
    assert not any(due(get_preset("smoke"), i, 5) for i in range(1, 6))  # off


def test_the_best_score_wins_and_a_tie_goes_to_the_later_iteration():
    scores = ((50, -2.0), (60, -2.2), (70, -2.2), (80, -1.0))
    rows = [{"iteration": i, "mean_log_val_loss": s} for i, s in scores]
    assert best(rows)["iteration"] == 70


def test_validation_reads_the_training_conditions_on_the_cpu():
    settings = validation_settings(get_preset("local"))
    assert settings["conditions"] == "train_wide" and settings["population"] == 8
    assert settings["env_kwargs"]["device"] == "cpu" and "conditions" not in settings["env_kwargs"]
    assert get_preset("cluster_gpu").env_config["device"] == "cuda"
    assert validation_settings(get_preset("cluster_gpu"))["env_kwargs"]["device"] == "cpu"
    twin = get_preset("local", env_config={**get_preset("local").env_config,
                                           "reward": "vs_bold_driver"})  # fmt: skip
    assert "reward" not in validation_settings(twin)["env_kwargs"]  # no twin to train there
    alike = get_preset("local", env_config={**get_preset("local").env_config, "siblings": 2,
                                            "reward": "vs_siblings"})  # fmt: skip
    assert "siblings" not in validation_settings(alike)["env_kwargs"]  # every network its own


def test_validation_seeds_stay_below_the_held_out_ones():
    assert VALIDATION_SEED_START + MAX_VALIDATION_NETWORKS == HELD_OUT_SEED_START


def test_validation_refuses_held_out_conditions_and_too_many_networks():
    with pytest.raises(ValueError, match="'unseen_lr' is held out"):
        validation_score("pretrained", "unseen_lr")
    with pytest.raises(ValueError, match=r"networks=100001; allowed: an int in 1\.\.100000"):
        validation_score("pretrained", "train", networks=MAX_VALIDATION_NETWORKS + 1)
    with pytest.raises(ValueError, match="networks=0"):
        validation_score("pretrained", "train", networks=0)


def test_validation_scores_exactly_the_networks_asked_for_and_repeats_itself():
    settings = {"networks": 3, "population": 2, "env_kwargs": {"max_cycles": 4, "num_threads": 1}}
    first = validation_score("pretrained", "train_wide", **settings)
    assert first.networks == 3 and first.diverged in range(4)
    assert first == validation_score("pretrained", "train_wide", **settings)
    other = validation_score("pretrained", "train_wide", **{**settings, "networks": 2})
    assert other.mean_log_val_loss != first.mean_log_val_loss  # the third network counts


@pytest.mark.slow
def test_training_exports_the_best_candidate_and_resumes_its_scores(ray_session, tmp_path):
    lines = []
    policy = train(VALIDATING, "shared", tmp_path, stop_iters=3, log=lines.append)
    rows = read_scores(tmp_path)
    assert [r["iteration"] for r in rows] == [2, 3] and all(r["networks"] == 3 for r in rows)
    chosen = best(rows)
    extra = load_policy(policy).payload["extra"]
    assert extra["validation"]["chosen_iteration"] == chosen["iteration"] == extra["iteration"]
    scores = {str(r["iteration"]): r["mean_log_val_loss"] for r in rows}
    assert extra["validation"]["scores"] == scores
    assert weights(policy).keys() == weights(tmp_path / chosen["candidate"]).keys()
    assert all(torch.equal(v, weights(tmp_path / chosen["candidate"])[k])
               for k, v in weights(policy).items())  # fmt: skip
    # a candidate's score is what validation_score gives for its file
    settings = validation_settings(VALIDATING)
    again = validation_score(tmp_path / rows[0]["candidate"], **settings)
    assert again.mean_log_val_loss == rows[0]["mean_log_val_loss"]
    assert any("the best of 2 on held-in validation" in line for line in lines)

    train(VALIDATING, "shared", tmp_path, stop_iters=4, resume=True, log=quiet)
    resumed = read_scores(tmp_path)
    assert [r["iteration"] for r in resumed] == [2, 3, 4] and resumed[:2] == rows
    assert len((tmp_path / "validation.jsonl").read_text().splitlines()) == 3


@pytest.mark.slow
def test_a_resumed_run_drops_the_scores_of_iterations_it_trains_again(ray_session, tmp_path):
    train(VALIDATING, "shared", tmp_path, stop_iters=3, log=quiet)
    stale = {"iteration": 5, "mean_log_val_loss": -99.0, "diverged": 0, "networks": 3,
             "candidate": "validation/iter_000005.pt"}  # fmt: skip
    with (tmp_path / "validation.jsonl").open("a") as f:  # as if iteration 5 ran, unsaved
        f.write(json.dumps(stale) + "\n")
    policy = train(VALIDATING, "shared", tmp_path, stop_iters=4, resume=True, log=quiet)
    assert [r["iteration"] for r in read_scores(tmp_path)] == [2, 3, 4]
    assert load_policy(policy).payload["extra"]["validation"]["chosen_iteration"] != 5


def test_scores_survive_a_line_cut_short_and_a_resume_keeps_the_restored_ones(tmp_path):
    from rllib_configs.selection import keep_scores_through

    rows = [{"iteration": i, "mean_log_val_loss": -i / 10} for i in (10, 20, 30)]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    (tmp_path / "validation.jsonl").write_text(text + '{"iteration": 40, "mean_lo')
    assert read_scores(tmp_path) == rows
    keep_scores_through(tmp_path, 20)
    assert read_scores(tmp_path) == rows[:2]
    keep_scores_through(tmp_path, None)
    assert read_scores(tmp_path) == [] and (tmp_path / "validation.jsonl").exists()
    keep_scores_through(tmp_path / "missing", 20)
    assert not (tmp_path / "missing").exists()


def test_bad_validation_settings_fail_before_ray_starts(tmp_path):
    for fields, text in (
        ({"validate_every": -1}, "validate_every=-1; allowed: an int >= 0"),
        ({"validate_from": 1.5}, "validate_from=1.5"),
        ({"validation_networks": 0}, "validation_networks=0; allowed: an int in 1..100000"),
    ):
        with pytest.raises(ValueError, match=text):
            train(get_preset("smoke", **fields), "shared", tmp_path / "run", log=quiet)
        assert not (tmp_path / "run").exists()


def test_spearman_ranks_with_ties():
    from benchmarks.validation_rank import spearman

    assert spearman([1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 45.0]) == pytest.approx(1.0)
    assert spearman([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert spearman([1.0, 1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0]) == pytest.approx(0.9486833)
    with pytest.raises(ValueError, match="equal length >= 3"):
        spearman([1.0, 2.0], [1.0, 2.0])


def test_validation_rank_prints_each_policy_and_the_correlation(tmp_path, capsys):
    from benchmarks import validation_rank

    payload = load_policy("pretrained").payload
    entries = []
    for i, ratio in enumerate((1.1, 1.5, 3.0)):
        changed = {**payload, "modules": {m: dict(w) for m, w in payload["modules"].items()}}
        for weights_of_module in changed["modules"].values():  # p1, p2: always factor i - 1
            bias = weights_of_module["pi.4.bias"].clone()
            bias[max(i - 1, 0)] += 100.0 * (i > 0)
            weights_of_module["pi.4.bias"] = bias
        torch.save(changed, tmp_path / f"p{i}.pt")
        summary = {"overall": {"ganno": {"iqm_test_loss": [0.1 * ratio]},
                               "oracle": {"iqm_test_loss": [0.1]}}}  # fmt: skip
        (tmp_path / f"s{i}.json").write_text(json.dumps(summary))
        entries.append(f"p{i}={tmp_path / f'p{i}.pt'}:{tmp_path / f's{i}.json'}")
    assert validation_rank.main([*entries, "--networks", "2"]) == 0
    printed = capsys.readouterr().out
    assert "| p0 |" in printed and "| 1.50 |" in printed and "| p2 |" in printed
    assert "Spearman rank correlation" in printed and "over 3 policies" in printed
    assert "nan" not in printed
    with pytest.raises(SystemExit):
        validation_rank.main(["no-summary.pt"])


@pytest.mark.slow
def test_ganno_train_validate_every_reaches_the_run_and_zero_turns_it_off(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    ganno = str(Path(sys.executable).parent / "ganno")
    for every, out in ((2, tmp_path / "on"), (0, tmp_path / "off")):
        proc = subprocess.run([ganno, "train", "--preset", "smoke", "--stop-iters", "2",
                               "--validate-every", str(every), "--out", str(out)],
                              capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert json.loads((out / "run.json").read_text())["config"]["validate_every"] == every
    assert [r["iteration"] for r in read_scores(tmp_path / "on")] == [2]
    chosen = load_policy(tmp_path / "on" / "policy.pt").payload["extra"]["validation"]
    assert chosen["networks"] == 128 and chosen["chosen_iteration"] == 2
    assert not (tmp_path / "off" / "validation.jsonl").exists()
    assert "validation" not in load_policy(tmp_path / "off" / "policy.pt").payload["extra"]
    bad = subprocess.run([ganno, "train", "--preset", "smoke", "--validate-every", "-1",
                          "--out", str(tmp_path / "bad")],
                         capture_output=True, text=True, env=env)  # fmt: skip
    assert bad.returncode == 2 and "-1" in bad.stderr and not (tmp_path / "bad").exists()
