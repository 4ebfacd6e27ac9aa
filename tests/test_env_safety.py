"""Results you can trust: clear errors instead of silent changes, hangs or raw exceptions.

A policy meets the env it was trained for (or a ValueError naming both settings), an initial
LR outside `lr_bounds` is refused instead of clipped, impossible populations and models the
engine cannot batch are refused before any work, and malformed calls name what is allowed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ganno_env import FEATURE_NAMES, GannoScheduler, layerwise_lr_v1
from ganno_env.controllers import Constant
from ganno_env.models import MLP
from ganno_env.policy import PolicyNet, export_policy, load_policy
from ganno_env.rollout import make_env, rollout
from ganno_env.tasks import Task

torch.set_num_threads(1)

SEVEN = (0.25, 0.5, 0.8, 1.0, 1.25, 2.0, 4.0)
DEFAULT_FACTORS = (0.5, 0.8, 1.0, 1.25, 2.0)


def policy_file(path, out_size=7, env_config=None, extra=None):
    """A random shared policy, exported as training exports it."""
    torch.manual_seed(0)
    env_config = {"lr_factors": SEVEN} if env_config is None else env_config
    nets = {"shared": PolicyNet(len(FEATURE_NAMES), out_size, (8,))}
    export_policy(path, nets, "shared", env_config, extra)
    return path


# ---------------------------------------------------------------- policy meets its env
def test_make_env_builds_the_env_the_policy_was_trained_for(tmp_path):
    path = policy_file(tmp_path / "p.pt", extra={"interval": 3, "max_cycles": 2})
    controller = load_policy(path)
    env = make_env(controller, conditions="unseen_lr_high", population=2)
    assert tuple(env.config.lr_factors) == SEVEN
    assert (env.config.interval, env.config.max_cycles) == (3, 2)
    assert env.action_space("net0_layer0").n == 7
    results = rollout(env, controller, seed=1_000_000)
    assert len(results) == 2 and all(1 <= len(r.lr_schedule) <= 2 for r in results)


def test_make_env_lets_the_caller_change_the_pace_but_not_the_actions(tmp_path):
    controller = load_policy(policy_file(tmp_path / "p.pt", extra={"interval": 3}))
    env = make_env(controller, interval=2, max_cycles=1, lr_factors=list(SEVEN))
    assert (env.config.interval, env.config.max_cycles) == (2, 1)
    with pytest.raises(ValueError) as error:
        make_env(controller, lr_factors=DEFAULT_FACTORS)
    assert "lr_factors=(0.5, 0.8, 1.0, 1.25, 2.0)" in str(error.value)
    assert "lr_factors=(0.25, 0.5, 0.8, 1.0, 1.25, 2.0, 4.0)" in str(error.value)
    with pytest.raises(ValueError, match="action_mode='continuous'.*action_mode='discrete'"):
        make_env(controller, action_mode="continuous")
    with pytest.raises(ValueError, match="action_mode='discrete'.*action_mode='log_lr'"):
        make_env(Constant(), action_mode="discrete")


def test_rollout_names_both_factor_tuples_for_a_hand_built_env(tmp_path):
    controller = load_policy(policy_file(tmp_path / "p.pt"))
    env = layerwise_lr_v1.parallel_env(max_cycles=1, interval=1)
    with pytest.raises(ValueError) as error:
        rollout(env, controller, seed=0)
    message = str(error.value)
    assert "env lr_factors=(0.5, 0.8, 1.0, 1.25, 2.0)" in message
    assert "needs lr_factors=(0.25, 0.5, 0.8, 1.0, 1.25, 2.0, 4.0)" in message
    assert env.trainer is None  # refused before the episode was built


def test_a_policy_whose_outputs_do_not_fit_its_actions_is_refused(tmp_path):
    bad = policy_file(tmp_path / "bad.pt", out_size=7, env_config={})  # 7 outputs, 5 factors
    model = MLP(4, 8, 1, 2)
    with pytest.raises(ValueError, match=r"out_size=7.*5 lr_factors"):
        GannoScheduler(torch.optim.SGD(model.parameters(), lr=0.1), model, bad)
    odd = policy_file(tmp_path / "odd.pt", out_size=2, env_config={"action_mode": "multiply"})
    with pytest.raises(ValueError, match="action_mode='multiply'"):
        load_policy(odd)


def test_log_lr_policy_actions_span_the_log10_lr_range(tmp_path):
    path = policy_file(tmp_path / "p.pt", out_size=2, env_config={"action_mode": "log_lr"})
    controller = load_policy(path)
    with torch.no_grad():
        net = controller.nets["shared"]
        net.pi[-1].weight.zero_()
        net.pi[-1].bias.copy_(torch.tensor([-3.0, 0.0]))  # mean log10 LR = -3
    action = controller.actions({"layer_0": np.zeros(len(FEATURE_NAMES), np.float32)})["layer_0"]
    assert action == pytest.approx([-3.0])


def test_scheduler_refuses_an_initial_lr_outside_the_policy_bounds(tmp_path):
    path = policy_file(tmp_path / "p.pt", out_size=5, env_config={})
    model = MLP(4, 8, 1, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=30.0)
    scheduler = GannoScheduler(optimizer, model, path)
    loss = model(torch.randn(3, 4)).square().mean()
    loss.backward()
    with pytest.raises(ValueError, match=r"30.0.*lr_bounds=\(1e-07, 10.0\)"):
        scheduler.observe(loss)


# -------------------------------------------------------------- initial LR vs bounds
@pytest.mark.parametrize(
    "kwargs, lr, widened",
    [
        ({"initial_lr": 300}, "300.0", "lr_bounds=(1e-07, 300.0)"),
        ({"initial_lr": 1e-9}, "1e-09", "lr_bounds=(1e-09, 10.0)"),
        ({"initial_lr": [0.1, 20.0, 0.1, 0.1]}, "20.0", "lr_bounds=(1e-07, 20.0)"),
        ({"conditions": {"initial_lr": 1e-9}}, "1e-09", "lr_bounds=(1e-09, 10.0)"),
        ({"conditions": "unseen_lr_high", "lr_bounds": (1e-7, 2.0)}, "3.0", "(1e-07, 3.0)"),
        ({"conditions": "default", "lr_bounds": (0.1, 1.0)}, "0.01", "(0.01, 1.0)"),
    ],
)
def test_initial_lr_outside_the_bounds_raises_at_construction(kwargs, lr, widened):
    with pytest.raises(ValueError) as error:
        layerwise_lr_v1.parallel_env(**kwargs)
    message = str(error.value)
    assert f"initial LR {lr} lies outside lr_bounds=" in message and widened in message


def test_initial_lr_on_the_bounds_is_kept():
    env = layerwise_lr_v1.parallel_env(initial_lr=10.0, max_cycles=1, interval=1)
    _, infos = env.reset(seed=0)
    assert infos["layer_0"]["lr"] == 10.0


@pytest.mark.parametrize(
    "options", [{"initial_lr": 300.0}, {"conditions": [{"initial_lr": 0.1}, {"initial_lr": 1e-9}]}]
)
def test_initial_lr_outside_the_bounds_from_reset_options_raises(options):
    env = layerwise_lr_v1.parallel_env(population=2, max_cycles=1, interval=1)
    with pytest.raises(ValueError, match=r"reset options: initial LR .* lies outside lr_bounds"):
        env.reset(seed=0, options=options)


# ------------------------------------------------------------ impossible populations
def test_an_impossible_population_is_refused_at_construction():
    with pytest.raises(ValueError, match=r"population=100000000000000000000: .* free"):
        layerwise_lr_v1.parallel_env(population=10**20)


def test_a_population_too_big_for_memory_is_refused_before_building_it():
    calls = []

    def huge(width, depth, input_shape, num_outputs):
        calls.append(1)
        if len(calls) > 1:  # fail fast instead of building them all
            raise AssertionError("built a second network without checking the memory")
        return MLP(64, 4096, 2, num_outputs)  # about 17M parameters per network

    task = Task("huge", "digits", arch="custom", model_factory=huge, depth=2)
    env = layerwise_lr_v1.parallel_env(task=task, population=2_000, conditions="default")
    calls.clear()
    with pytest.raises(ValueError, match=r"population=2000: the networks need about .* TiB"):
        env.reset(seed=0)
    assert len(calls) == 1  # only the first network was built, to measure it


# ----------------------------------------------------- models the engine cannot batch
def custom_task(extra: nn.Module) -> Task:
    def factory(width, depth, input_shape, num_outputs):
        return nn.Sequential(
            nn.Flatten(), nn.Linear(64, 16), extra, nn.ReLU(), nn.Linear(16, num_outputs)
        )

    return Task(f"with_{type(extra).__name__}", "digits", arch="custom", model_factory=factory)


@pytest.mark.parametrize(
    "layer, words",
    [
        (nn.BatchNorm1d(16), ["BatchNorm1d", "running statistics", "track_running_stats=False"]),
        (nn.Dropout(0.2), ["Dropout", "random"]),
    ],
)
def test_custom_models_with_layers_vmap_cannot_train_are_refused(layer, words):
    with pytest.raises(ValueError) as error:
        layerwise_lr_v1.parallel_env(task=custom_task(layer), population=2)
    for word in words:
        assert word in str(error.value)


def test_batch_norm_without_running_statistics_trains():
    task = custom_task(nn.BatchNorm1d(16, track_running_stats=False))
    env = layerwise_lr_v1.parallel_env(task=task, population=2, max_cycles=1, interval=2)
    env.reset(seed=0)
    _, rewards, *_ = env.step({a: 2 for a in env.agents})
    assert all(np.isfinite(list(rewards.values())))


# ------------------------------------------------------------ malformed calls
def test_reset_options_and_step_actions_must_be_dicts():
    env = layerwise_lr_v1.parallel_env(max_cycles=1, interval=1)
    with pytest.raises(TypeError, match=r"got a list; allowed: None or a dict"):
        env.reset(seed=0, options=[{"initial_lr": 0.1}])
    env.reset(seed=0)
    with pytest.raises(TypeError, match=r"got a list; allowed: a dict of actions"):
        env.step([2, 2, 2, 2])


@pytest.mark.parametrize(
    "action",
    [None, np.array([[2]]), np.array([2]), True, 2.0, np.float32(2), "2"],
    ids=repr,
)
def test_discrete_actions_must_be_integer_scalars(action):
    env = layerwise_lr_v1.parallel_env(max_cycles=2, interval=1)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"allowed: an int in \[0, 4\]"):
        env.step({"layer_0": action})


@pytest.mark.parametrize("action", [4, np.int64(4), np.array(4), np.uint8(4)], ids=repr)
def test_integer_scalars_of_any_kind_are_discrete_actions(action):
    env = layerwise_lr_v1.parallel_env(conditions="default", max_cycles=2, interval=1)
    env.reset(seed=0)
    _, _, _, _, infos = env.step({"layer_0": action})
    assert infos["layer_0"]["lr"] == pytest.approx(0.02)


def test_agents_that_are_done_may_act_none():
    """PettingZoo's convention for agents that have left; a diverged network's agents."""
    env = layerwise_lr_v1.parallel_env(population=2, max_cycles=3, interval=5)
    options = {"conditions": [{"initial_lr": 10.0}, {"initial_lr": 0.01}]}
    env.reset(seed=0, options=options)
    env.step({a: 4 for a in env.agents})
    assert env.done[0] and not env.done[1]
    done = [f"net0_layer{j}" for j in range(4)]
    env.step({**dict.fromkeys(done), **{a: 2 for a in env.agents}})
    with pytest.raises(ValueError, match="not live"):
        env.step({done[0]: 2})
