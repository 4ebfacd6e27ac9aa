"""PettingZoo's own API checks, the registry, spaces and rendering."""

import functools

import numpy as np
import pettingzoo
import pytest
from pettingzoo import AECEnv, ParallelEnv
from pettingzoo.test import api_test, max_cycles_test, parallel_api_test, render_test
from pettingzoo.utils.wrappers import BaseWrapper, OrderEnforcingWrapper

from ganno_env import FEATURE_NAMES, layerwise_lr_v0, layerwise_lr_v1


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"task": "wine_mlp"},
        {"task": "digits_cnn", "interval": 3},
        {"task": "regression_mlp"},
        {"population": 3},
        {"action_mode": "continuous"},
        {"optimizer": "adam", "conditions": {"initial_lr": 0.001}},
        {"conditions": "deeper", "population": 2},
        {"controls": ("lr", "momentum"), "population": 2},
        {"controls": ("lr", "momentum", "weight_decay"), "action_mode": "continuous"},
    ],
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "default",
)
def test_parallel_api(kwargs):
    parallel_api_test(layerwise_lr_v1.parallel_env(max_cycles=4, **kwargs), num_cycles=10)


@pytest.mark.parametrize(
    "kwargs", [{}, {"population": 3}, {"task": "moons_mlp"}, {"controls": ("lr", "momentum")}]
)
def test_aec_api(kwargs):
    api_test(layerwise_lr_v1.env(max_cycles=4, **kwargs), num_cycles=10)


def test_max_cycles_truncates_after_exactly_max_cycles():
    max_cycles_test(layerwise_lr_v1)


def test_render_ansi_is_a_per_layer_table():
    render_test(functools.partial(layerwise_lr_v1.env, max_cycles=3))
    env = layerwise_lr_v1.parallel_env(render_mode="ansi", conditions="default")
    env.reset(seed=0)
    env.step({a: 4 for a in env.agents})
    text = env.render()
    assert "decision 1/40" in text
    assert "0.02" in text  # every layer's LR doubled from 0.01
    assert len([line for line in text.splitlines() if line.startswith("  ")]) == 1 + 4


def test_registry_ids_make_the_env_with_their_task():
    env = pettingzoo.make("parallel", "ganno/wine_mlp-v1", max_cycles=3)
    env.reset(seed=0)
    assert env.config.task == "wine_mlp" and env.config.max_cycles == 3
    assert env.agents == ["layer_0", "layer_1", "layer_2"]
    aec = pettingzoo.make("aec", "ganno/layerwise_lr-v1")
    aec.reset(seed=0)
    assert aec.agents == ["layer_0", "layer_1", "layer_2", "layer_3"]


def test_spaces_are_built_once_and_shared():
    env = layerwise_lr_v1.parallel_env(population=2)
    assert env.observation_space("net0_layer0") is env.observation_space("net1_layer3")
    assert env.action_space("net0_layer0") is env.action_space("net1_layer2")
    assert env.observation_space("net0_layer0").shape == (len(FEATURE_NAMES),)
    assert env.state_space.shape == (len(env.possible_agents) * len(FEATURE_NAMES),)


def test_state_concatenates_live_observations_and_zeros_for_absent_agents():
    env = layerwise_lr_v1.parallel_env(conditions="default", max_layers=6)
    obs, _ = env.reset(seed=0)
    state = env.state()
    size = len(FEATURE_NAMES)
    assert env.state_space.contains(state)
    for k, agent in enumerate(env.possible_agents):
        expected = obs[agent] if agent in obs else np.zeros(size, np.float32)
        np.testing.assert_array_equal(state[k * size : (k + 1) * size], expected)
    assert not state[4 * size :].any()


def test_infos_follow_the_contract_and_test_metrics_come_at_the_end():
    env = layerwise_lr_v1.parallel_env(max_cycles=2, conditions="default")
    _, infos = env.reset(seed=0)
    for info in infos.values():
        assert {"lr", "train_loss", "val_loss", "diverged"} <= set(info)
        assert "test_loss" not in info
    _, _, _, _, infos = env.step({a: 2 for a in env.agents})
    assert "test_loss" not in infos["layer_0"]
    _, _, _, truncations, infos = env.step({a: 2 for a in env.agents})
    assert all(truncations.values()) and env.agents == []
    for info in infos.values():
        assert 0 < info["test_loss"] < 2.4 and 0 <= info["test_accuracy"] <= 1


def test_actions_change_only_their_layer_and_are_clipped_to_the_bounds():
    env = layerwise_lr_v1.parallel_env(
        conditions={"initial_lr": 0.01}, lr_bounds=(1e-3, 0.015), max_cycles=3
    )
    env.reset(seed=0)
    _, _, _, _, infos = env.step({"layer_0": 4, "layer_1": 0, "layer_2": 2})  # layer_3 absent
    assert [infos[f"layer_{j}"]["lr"] for j in range(4)] == pytest.approx(
        [0.015, 0.005, 0.01, 0.01]
    )


def test_continuous_action_multiplies_by_exp():
    env = layerwise_lr_v1.parallel_env(action_mode="continuous", conditions="default")
    env.reset(seed=0)
    _, _, _, _, infos = env.step({"layer_0": np.array([np.log(1.5)], np.float32)})
    assert infos["layer_0"]["lr"] == pytest.approx(0.015, rel=1e-5)
    assert infos["layer_1"]["lr"] == pytest.approx(0.01)


@pytest.mark.parametrize(
    "action_mode,bad",
    [("discrete", 5), ("discrete", -1), ("discrete", 1.5), ("continuous", [2.0]),
     ("continuous", [np.nan])],
)  # fmt: skip
def test_actions_outside_the_space_raise(action_mode, bad):
    env = layerwise_lr_v1.parallel_env(action_mode=action_mode)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="allowed"):
        env.step({"layer_0": bad})


def test_actions_for_agents_not_live_raise():
    env = layerwise_lr_v1.parallel_env()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="layer_7"):
        env.step({"layer_7": 0})


@pytest.mark.parametrize("module", [layerwise_lr_v0, layerwise_lr_v1])
def test_factories_follow_pettingzoo_naming(module):
    """parallel_env is the ParallelEnv class; raw_env the bare AEC env; env() wraps raw_env."""
    par = module.parallel_env(max_cycles=2)
    assert isinstance(par, ParallelEnv) and type(par) is module.LayerwiseLREnv
    raw = module.raw_env(max_cycles=2)
    assert isinstance(raw, AECEnv) and not isinstance(raw, BaseWrapper)
    assert type(raw.unwrapped) is module.LayerwiseLREnv
    wrapped = module.env(max_cycles=2)
    assert isinstance(wrapped, OrderEnforcingWrapper)
    while isinstance(wrapped, BaseWrapper):
        wrapped = wrapped.env
    assert type(wrapped) is type(raw)
    assert raw.unwrapped.metadata["name"] == par.metadata["name"] == module.__name__.split(".")[-1]


def test_read_only_state_accessors():
    env = layerwise_lr_v1.parallel_env(population=2, max_cycles=1, conditions="default")
    assert env.condition.name == "default"
    assert env.agent_index["net1_layer2"] == (1, 2)
    with pytest.raises(TypeError):
        env.agent_index["net0_layer0"] = (1, 1)
    env.reset(seed=0)
    assert [c.seed for c in env.episode_conditions] == [0, 1]
    assert not env.done.any() and not env.done.flags.writeable
    with pytest.raises(AttributeError):
        env.done = np.ones(2, dtype=bool)
    env.step({a: 2 for a in env.agents})
    assert env.done.all() and env.agents == []


def test_importing_the_env_package_does_not_import_ray():
    import subprocess
    import sys

    code = "import ganno_env, sys; from ganno_env import load_policy; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
