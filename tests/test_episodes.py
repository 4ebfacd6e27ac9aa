"""Whole episodes: determinism, population equivalence, variable depth, divergence."""

import numpy as np
import pytest
import torch

from ganno_env import DataSplits, Task, layerwise_lr_v1
from ganno_env.conditions import HELD_OUT_SEED_START


def run_episode(env, seed, options=None, action_seed=0):
    """Observations, rewards and infos of a whole episode under seeded random actions."""
    rng = np.random.default_rng(action_seed)
    obs, infos = env.reset(seed=seed, options=options)
    trace = [(obs, {}, infos)]
    while env.agents:
        actions = {a: int(rng.integers(env.action_space(a).n)) for a in sorted(env.agents)}
        obs, rewards, _, _, infos = env.step(actions)
        trace.append((obs, rewards, infos))
    return trace


def assert_traces_equal(a, b, rtol=0.0, atol=0.0):
    assert len(a) == len(b)
    for (obs_a, rew_a, info_a), (obs_b, rew_b, info_b) in zip(a, b):
        assert obs_a.keys() == obs_b.keys() and rew_a.keys() == rew_b.keys()
        for agent in obs_a:
            np.testing.assert_allclose(obs_a[agent], obs_b[agent], rtol=rtol, atol=atol)
            assert info_a[agent].keys() == info_b[agent].keys()
            for key, value in info_a[agent].items():
                np.testing.assert_allclose(value, info_b[agent][key], rtol=rtol, atol=atol)
        for agent in rew_a:
            np.testing.assert_allclose(rew_a[agent], rew_b[agent], rtol=rtol, atol=atol)


def test_same_seed_gives_identical_episodes_and_other_seeds_differ():
    make = lambda: layerwise_lr_v1.parallel_env(max_cycles=8, interval=10)  # noqa: E731
    first = run_episode(make(), seed=3)
    assert_traces_equal(first, run_episode(make(), seed=3))
    other = run_episode(make(), seed=4)
    assert not np.allclose(first[-1][0]["layer_0"], other[-1][0]["layer_0"])
    assert first[0][2]["layer_0"]["lr"] != other[0][2]["layer_0"]["lr"]  # train LR is sampled


def test_unseeded_resets_continue_a_reproducible_sequence():
    def lrs(env):
        env.reset(seed=11)
        return [env.reset()[1]["layer_0"]["lr"] for _ in range(3)]

    first = lrs(layerwise_lr_v1.parallel_env())
    assert first == lrs(layerwise_lr_v1.parallel_env())
    assert len(set(first)) == 3


def test_seeds_the_env_draws_itself_stay_below_the_held_out_ones():
    """Training resets without a seed; its networks must never start from a benchmark seed."""
    env = layerwise_lr_v1.parallel_env(population=3, max_cycles=1, interval=1)
    env.reset(seed=0)
    drawn = [c.seed for _ in range(30) for c in (env.reset(), env.episode_conditions)[1]]
    assert len(set(drawn)) > 30 and max(drawn) < HELD_OUT_SEED_START
    env.reset(seed=HELD_OUT_SEED_START)  # an explicit seed (the benchmark's) is kept
    assert [c.seed for c in env.episode_conditions] == [HELD_OUT_SEED_START + i for i in range(3)]


@pytest.mark.parametrize("task", ["digits_mlp", "digits_cnn"])
def test_network_i_of_a_population_follows_the_single_network_with_seed_plus_i(task):
    """Drive a population and single envs (seed + i) with the same per-layer actions."""
    population, kwargs = 3, {"task": task, "max_cycles": 4, "interval": 10}
    batched = layerwise_lr_v1.parallel_env(population=population, **kwargs)
    singles = [layerwise_lr_v1.parallel_env(**kwargs) for _ in range(population)]
    obs_b, _ = batched.reset(seed=7)
    obs_s = [env.reset(seed=7 + i)[0] for i, env in enumerate(singles)]
    layers = len(singles[0].agents)
    rng = np.random.default_rng(0)
    for _ in range(kwargs["max_cycles"]):
        for i in range(population):
            for j in range(layers):
                np.testing.assert_allclose(
                    obs_b[f"net{i}_layer{j}"], obs_s[i][f"layer_{j}"], rtol=1e-4, atol=1e-4
                )
        actions = rng.integers(5, size=(population, layers))
        obs_b, rew_b, _, _, info_b = batched.step(
            {
                f"net{i}_layer{j}": int(actions[i, j])
                for i in range(population)
                for j in range(layers)
            }
        )
        for i, env in enumerate(singles):
            obs_s[i], rew, _, _, info = env.step(
                {f"layer_{j}": int(actions[i, j]) for j in range(layers)}
            )
            assert rew["layer_0"] == pytest.approx(rew_b[f"net{i}_layer0"], rel=1e-4, abs=1e-6)
            assert info["layer_1"]["val_loss"] == pytest.approx(
                info_b[f"net{i}_layer1"]["val_loss"], rel=1e-5
            )
            assert info["layer_1"]["lr"] == info_b[f"net{i}_layer1"]["lr"]
    assert batched.agents == [] and all(env.agents == [] for env in singles)


def test_depth_varies_across_episodes_within_possible_agents():
    env = layerwise_lr_v1.parallel_env(conditions="deeper", max_cycles=2, interval=2)
    assert env.max_layers == 10 and len(env.possible_agents) == 10
    depths = set()
    for seed in range(8):
        obs, _ = env.reset(seed=seed)
        depths.add(len(env.agents))
        assert set(obs) == set(env.agents) <= set(env.possible_agents)
        obs, rewards, *_ = env.step({a: 2 for a in env.agents})
        assert set(rewards) == set(obs)
    assert depths == {7, 10}


def test_max_layers_below_the_conditions_depth_raises_before_work():
    with pytest.raises(ValueError, match="max_layers"):
        layerwise_lr_v1.parallel_env(conditions="deeper", max_layers=7)
    env = layerwise_lr_v1.parallel_env(max_layers=5)
    with pytest.raises(ValueError, match="max_layers"):
        env.reset(seed=0, options={"depth": 6})


def all_values_finite(trace):
    for obs, rewards, infos in trace:
        for value in list(obs.values()) + list(rewards.values()):
            assert np.all(np.isfinite(value))
        for info in infos.values():
            for value in info.values():
                assert np.all(np.isfinite(value))


def test_huge_learning_rate_terminates_the_episode_with_finite_values():
    env = layerwise_lr_v1.parallel_env(conditions={"initial_lr": 100.0}, lr_bounds=(1e-7, 100.0))
    obs, _ = env.reset(seed=0)
    for value in obs.values():
        assert env.observation_space("layer_0").contains(value)
    obs, rewards, terminations, truncations, infos = env.step({a: 2 for a in env.agents})
    assert all(terminations.values()) and not any(truncations.values())
    assert env.agents == []
    assert infos["layer_0"]["diverged"] is True
    assert rewards["layer_0"] == pytest.approx(-np.log(10.0))  # capped at 10 x L_val(0)
    all_values_finite([(obs, rewards, infos)])
    assert infos["layer_0"]["test_accuracy"] == 0.0


def test_nan_data_terminates_without_a_single_non_finite_value():
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(60, 5)), dtype=torch.float32)
    x[::3, 1] = float("nan")
    y = torch.tensor(rng.integers(0, 2, size=60))
    data = DataSplits(x, y, x[:20], y[:20], x[:20], y[:20], num_outputs=2,
                      kind="classification", name="nan")  # fmt: skip
    task = Task("nan_data", data, width=8, depth=1, batch_size=10)
    env = layerwise_lr_v1.parallel_env(task=task, conditions="default", max_cycles=5)
    trace = run_episode(env, seed=0)
    assert len(trace) == 2  # reset, then one step that terminates
    all_values_finite(trace)
    assert all(info["diverged"] for info in trace[-1][2].values())


def test_population_keeps_training_networks_when_one_diverges():
    env = layerwise_lr_v1.parallel_env(
        population=2, max_cycles=3, conditions="default", lr_bounds=(1e-7, 100.0)
    )
    _, start = env.reset(
        seed=0, options={"conditions": [{"initial_lr": 100.0}, {"initial_lr": 0.3}]}
    )
    obs, rewards, terminations, _, infos = env.step({a: 2 for a in env.agents})
    assert terminations["net0_layer0"] and not terminations["net1_layer0"]
    assert env.agents == [f"net1_layer{j}" for j in range(4)]
    assert rewards["net1_layer0"] > 0
    trace = [(obs, rewards, infos)]
    while env.agents:
        obs, rewards, _, truncations, infos = env.step({a: 2 for a in env.agents})
        trace.append((obs, rewards, infos))
        assert set(obs) == {f"net1_layer{j}" for j in range(4)}
    all_values_finite(trace)
    assert truncations["net1_layer0"]
    assert infos["net1_layer0"]["test_loss"] < 0.8 * start["net1_layer0"]["val_loss"]


def test_log_improvement_rewards_telescope_to_the_log_loss_ratio():
    env = layerwise_lr_v1.parallel_env(max_cycles=6, interval=10, conditions="default")
    _, infos = env.reset(seed=1)
    initial = infos["layer_0"]["val_loss"]
    total = 0.0
    while env.agents:
        _, rewards, _, _, infos = env.step({a: 3 for a in env.agents})
        assert len(set(rewards.values())) == 1  # shared by all layers
        total += rewards["layer_0"]
    assert total == pytest.approx(np.log(initial / infos["layer_0"]["val_loss"]), rel=1e-6)
    assert total > 0


def test_final_reward_mode_pays_the_whole_return_at_the_end():
    kwargs = {"max_cycles": 4, "interval": 10, "conditions": "default"}
    dense = run_episode(layerwise_lr_v1.parallel_env(**kwargs), seed=2)
    sparse = run_episode(layerwise_lr_v1.parallel_env(reward="final", **kwargs), seed=2)
    assert [step[1]["layer_0"] for step in sparse[1:-1]] == [0.0] * 3
    dense_total = sum(step[1]["layer_0"] for step in dense[1:])
    assert sparse[-1][1]["layer_0"] == pytest.approx(dense_total, rel=1e-6)
