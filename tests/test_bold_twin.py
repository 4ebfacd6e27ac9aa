"""reward="vs_bold_driver": each network's twin trains exactly as bold driver would."""

import numpy as np
import pytest

from ganno_env.controllers import BoldDriver
from ganno_env.layerwise_lr import parallel_env

SMALL = dict(population=3, max_cycles=8, interval=5, val_limit=200, num_threads=1)


@pytest.mark.parametrize(
    "conditions, settings",
    [
        ("train_wide", {}),  # drawn LRs, scales and widths: the preset's networks
        ({"initial_lr": 9.0}, {}),  # every network and its twin diverge
        # bold driver's own LR climbs past the upper bound (the one in force stays there),
        # then is cut from where it climbed to, as the controller cuts it
        ({"initial_lr": 0.6}, {"lr_bounds": (1e-7, 0.7)}),
    ],
)
def test_the_twin_is_bold_driver_and_the_reward_is_the_difference(conditions, settings):
    relative = parallel_env(conditions=conditions, reward="vs_bold_driver", **settings, **SMALL)
    plain = parallel_env(conditions=conditions, **settings, **SMALL)
    bold = parallel_env(conditions=conditions, action_mode="log_lr", **settings, **SMALL)
    relative.reset(seed=7)
    plain.reset(seed=7)
    observations, infos = bold.reset(seed=7)
    rule = BoldDriver()
    rule.reset(bold, observations, infos)
    keep = plain.config.lr_factors.index(1.0)
    steps = 0
    while relative.agents:
        ours = relative.step({agent: keep for agent in relative.agents})[1]
        theirs = plain.step({agent: keep for agent in plain.agents})[1]
        bold_rewards = {}
        if bold.agents:
            observations, bold_rewards, _, _, infos = bold.step(rule.act(observations, infos))
        # the twin's capped val losses are bold driver's, bit for bit
        np.testing.assert_array_equal(relative.bold_twin.val_loss, bold.val_loss)
        np.testing.assert_array_equal(relative.bold_twin.diverged, bold.diverged)
        for agent, reward in ours.items():
            assert reward == pytest.approx(theirs[agent] - bold_rewards.get(agent, 0.0), abs=1e-12)
        steps += 1
    assert steps >= 1
    assert relative.bold_twin.diverged.all() == (conditions == {"initial_lr": 9.0})


def test_the_twin_reward_needs_the_lr_alone():
    with pytest.raises(ValueError, match=r"vs_bold_driver.*momentum.*allowed: controls=\('lr',\)"):
        parallel_env(reward="vs_bold_driver", controls=("lr", "momentum"))
