"""siblings and reward="vs_siblings": alike networks, each rewarded against the others."""

import numpy as np
import pytest

from ganno_env.layerwise_lr import minus_siblings_mean, parallel_env

SMALL = dict(conditions="train_wide", max_cycles=6, interval=5, val_limit=200, num_threads=1)


def test_siblings_share_their_draw_and_part_only_by_their_actions():
    env = parallel_env(population=4, siblings=2, **SMALL)
    env.reset(seed=11)
    drawn = env._conditions_now
    assert drawn[0] == drawn[1] and drawn[2] == drawn[3]
    assert drawn[0].seed != drawn[2].seed
    keep = env.config.lr_factors.index(1.0)
    raise_ = env.config.lr_factors.index(2.0)
    env.step({agent: keep for agent in env.agents})
    # the same actions: siblings train bit for bit alike
    assert env.val_loss[0] == env.val_loss[1] and env.val_loss[2] == env.val_loss[3]
    # network 1 raises, network 0 keeps: they part
    env.step({a: raise_ if env._network(a) == 1 else keep for a in env.agents})
    assert env.val_loss[0] != env.val_loss[1]
    assert env.val_loss[2] == env.val_loss[3]


@pytest.mark.parametrize("population, siblings", [(4, 2), (6, 3)])
def test_each_reward_is_the_plain_one_minus_its_siblings_mean(population, siblings):
    relative = parallel_env(population=population, siblings=siblings, reward="vs_siblings", **SMALL)
    plain = parallel_env(population=population, siblings=siblings, **SMALL)
    relative.reset(seed=3)
    plain.reset(seed=3)
    rng = np.random.default_rng(0)
    while relative.agents:
        actions = {a: int(rng.integers(len(plain.config.lr_factors))) for a in relative.agents}
        ours = relative.step(actions)[1]
        theirs = plain.step(actions)[1]
        per_network = np.zeros(population)
        for agent, reward in theirs.items():
            per_network[plain._network(agent)] = reward
        for agent, reward in ours.items():
            i = relative._network(agent)
            group = range(i - i % siblings, i - i % siblings + siblings)
            others = np.mean([per_network[j] for j in group if j != i])
            assert reward == pytest.approx(per_network[i] - others, abs=1e-12)
        group_sums = np.zeros(population // siblings)
        for agent, reward in ours.items():
            if agent.endswith("layer0"):
                group_sums[relative._network(agent) // siblings] += reward
        np.testing.assert_allclose(group_sums, 0.0, atol=1e-12)


def test_a_finished_sibling_counts_as_zero():
    reward = np.array([0.3, 0.0, -1.0, 0.5])  # network 1 has finished: its reward is 0
    np.testing.assert_allclose(minus_siblings_mean(reward, 2), [0.3, -0.3, -1.5, 1.5])


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"population": 3, "siblings": 2}, r"siblings=2 with population=3; allowed: .*divides"),
        ({"population": 4, "siblings": 0}, r"siblings=0; allowed: an int >= 1"),
        ({"population": 4, "reward": "vs_siblings"}, r"vs_siblings.*siblings=1; allowed: "),
    ],
)
def test_bad_siblings_are_named_before_any_work(settings, message):
    with pytest.raises(ValueError, match=message):
        parallel_env(**settings)
