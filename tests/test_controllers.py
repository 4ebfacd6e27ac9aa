"""Hand-made controllers follow their formulas through the public env API."""

import math

import numpy as np
import pytest

from ganno_env import controllers as c
from ganno_env.cli import main
from ganno_env.rollout import make_env, rollout

LR0 = 0.05
T = 8


def schedule_of(controller, **env_kwargs):
    env = make_env(controller, conditions={"initial_lr": LR0}, max_cycles=T, interval=5,
                   **env_kwargs)  # fmt: skip
    (result,) = rollout(env, controller, seed=0)
    return np.array(result.lr_schedule), result


@pytest.mark.parametrize(
    "controller,formula",
    [
        (c.Constant(), lambda t: 1.0),
        (c.StepDecay(gamma=0.1, milestones=(0.5, 0.75)), lambda t: 0.1 ** ((t >= 4) + (t >= 6))),
        (c.ExponentialDecay(final=0.01), lambda t: 0.01 ** (t / (T - 1))),
        (c.CosineAnnealing(floor=0.1), lambda t: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t / T))),
        (c.WarmupCosine(warmup=0.25),
         lambda t: (t + 1) / 2 if t < 2 else 0.5 * (1 + math.cos(math.pi * (t - 2) / 6))),
    ],
    ids=lambda x: getattr(x, "name", ""),
)  # fmt: skip
def test_schedules_follow_their_formula(controller, formula):
    lrs, result = schedule_of(controller)
    expected = np.array([LR0 * formula(t) for t in range(T)])
    assert lrs.shape == (T, 4)
    np.testing.assert_allclose(lrs, np.repeat(expected[:, None], 4, axis=1), rtol=1e-5)
    assert len(result.val_curve) == T + 1 and np.isfinite(result.test_loss)


def test_bold_driver_grows_while_val_loss_falls_and_cuts_when_it_rises():
    lrs, result = schedule_of(c.BoldDriver(up=1.25, down=0.5))
    curve = result.val_curve
    expected = [LR0]
    for t in range(1, T):
        expected.append(expected[-1] * (1.25 if curve[t] < curve[t - 1] else 0.5))
    np.testing.assert_allclose(lrs[:, 0], expected, rtol=1e-5)


def test_reduce_on_plateau_cuts_after_patience_without_improvement():
    controller = c.ReduceOnPlateau(factor=0.5, patience=1, threshold=0.0)
    lrs, result = schedule_of(controller, lr_bounds=(1e-7, 10.0))
    curve, lr, best, bad = result.val_curve, LR0, math.inf, 0
    for t in range(T):
        if curve[t] < best:
            best, bad = curve[t], 0
        else:
            bad += 1
            if bad > 1:
                lr, bad = lr * 0.5, 0
        assert lrs[t, 0] == pytest.approx(lr, rel=1e-5)


@pytest.mark.parametrize("features_version", [1, 2])
def test_lars_splits_the_lr_by_trust_ratio_and_keeps_the_mean(features_version):
    """On every env version: |w| / |g| comes from that version's features."""
    controller = c.LayerwiseTrustRatio()
    env = make_env(controller, conditions={"initial_lr": LR0}, max_cycles=2, interval=5,
                   features_version=features_version)  # fmt: skip
    obs, infos = env.reset(seed=0)
    assert len(obs["layer_0"]) == {1: 12, 2: 13}[features_version]
    controller.reset(env, obs, infos)
    actions = controller.act(obs, infos)
    lrs = np.array([10 ** float(actions[f"layer_{j}"][0]) for j in range(4)])
    stats = env.layer_stats  # |w| / |g| per layer, from the engine, not the features
    ratios = (stats.weight_rms / stats.grad_rms).double().numpy()[0]
    np.testing.assert_allclose(lrs, LR0 * ratios / ratios.mean(), rtol=1e-4)
    assert len(set(np.round(lrs, 8))) > 1


def test_rollout_refuses_an_env_with_the_wrong_action_mode():
    env = make_env(c.RandomFactors(), max_cycles=2)
    with pytest.raises(ValueError, match="log_lr"):
        rollout(env, c.Constant(), seed=0)


def test_unknown_controller_lists_the_known_ones():
    with pytest.raises(ValueError, match="bold_driver"):
        c.make_controller("adamw")


def test_baselines_command_prints_a_table(capsys):
    code = main(["baselines", "--controllers", "constant,cosine", "--lrs", "0.1",
                 "--seeds", "2", "--max-cycles", "3", "--interval", "5"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    rows = [line for line in out.splitlines() if line.startswith(("constant", "cosine"))]
    assert len(rows) == 2 and all("1e-01" in row and "0/2" in row for row in rows)


def test_command_line_rejects_bad_values_before_work(capsys):
    assert main(["baselines", "--lrs", "-1"]) == 2
    err = capsys.readouterr().err
    assert "positive" in err and len(err.strip().splitlines()) == 1
