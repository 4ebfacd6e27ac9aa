"""Env versions: v1 (features v2, 13) is current, v0 (features v1, 12) stays as it was.

A policy reads exactly the features it was trained on, so the v0 env must keep computing
the original observations and a v0 policy file must keep loading and running, through
`make_env` + `rollout` and through `GannoScheduler`.
"""

from __future__ import annotations

import math

import numpy as np
import pettingzoo
import pytest
import torch
import torch.nn.functional as F

from benchmarks.runner import run_inputs
from benchmarks.suites import load_suite
from ganno_env import GannoScheduler, layerwise_lr_v0, layerwise_lr_v1, policy
from ganno_env.decision import DecisionCore
from ganno_env.features import (
    FEATURE_NAMES,
    FEATURE_SETS,
    FEATURES_V1,
    FEATURES_V2,
    FEATURES_VERSION,
    observation_features,
)
from ganno_env.layerwise_lr import ENV_VERSION, ENV_VERSIONS, LayerwiseLREnv
from ganno_env.models import MLP
from ganno_env.policy import PolicyNet, export_policy, load_policy
from ganno_env.rollout import make_env, rollout

torch.set_num_threads(1)

# Features v1 as first released: name, low, high.
V1 = [
    ("log10_lr", -8.0, 2.0),
    ("log10_weight_rms", -8.0, 4.0),
    ("log10_grad_rms", -10.0, 4.0),
    ("log10_update_ratio", -10.0, 2.0),
    ("grad_cosine", -1.0, 1.0),
    ("grad_noise_ratio", 0.0, 1.0),
    ("relative_depth", 0.0, 1.0),
    ("log_train_loss_ratio", -10.0, 5.0),
    ("log_val_loss_ratio", -10.0, 5.0),
    ("val_log_change", -10.0, 10.0),
    ("progress", 0.0, 1.0),
    ("last_log_factor", -5.0, 5.0),
]
V1_LOW = np.array([low for _, low, _ in V1], dtype=np.float32)
V1_HIGH = np.array([high for _, _, high in V1], dtype=np.float32)


def v1_formula(env, val_change: np.ndarray) -> np.ndarray:
    """The v0 env's observations [N, L, 12], written out from the env's state."""
    stats = {k: v.detach().double().numpy() for k, v in vars(env.layer_stats).items()}
    n, layers = env.lrs.shape
    shared = lambda v: np.broadcast_to(np.asarray(v, np.float64)[:, None], (n, layers))  # noqa: E731
    with np.errstate(divide="ignore", invalid="ignore"):
        columns = [
            np.log10(env.lrs), np.log10(stats["weight_rms"]), np.log10(stats["grad_rms"]),
            np.log10(stats["update_ratio"]), stats["grad_cosine"], stats["noise_ratio"],
            np.broadcast_to(np.arange(layers) / max(layers - 1, 1), (n, layers)),
            shared(np.log(env.train_loss / env.initial_val_loss)),
            shared(np.log(env.val_loss / env.initial_val_loss)), shared(val_change),
            np.full((n, layers), env.num_moves / env.config.max_cycles),
            np.asarray(env.last_log_factor, np.float64),
        ]  # fmt: skip
    obs = np.nan_to_num(np.stack(columns, axis=-1), nan=0.0, posinf=np.inf, neginf=-np.inf)
    return np.clip(obs, V1_LOW, V1_HIGH).astype(np.float32)


def episode(module, decisions: int = 4):
    """Observations [N, L, F] per decision and the env, for fixed actions; network 1 starts
    at an LR that diverges, so capped losses and a finished network are covered too."""
    env = module.parallel_env(conditions="default", population=2, max_cycles=decisions,
                              interval=4)  # fmt: skip
    options = {"conditions": [{"initial_lr": 0.05}, {"initial_lr": 8.0}]}
    obs, _ = env.reset(seed=3, options=options)
    stack = lambda o: np.stack([[o[env._agent_id(i, j)] for j in range(env.num_layers)]  # noqa: E731
                                for i in range(2)])  # fmt: skip
    seen, expected, losses = [stack(obs)], [v1_formula(env, np.zeros(2))], []
    rng = np.random.default_rng(0)
    while env.agents:
        before = env.val_loss.copy()
        obs, *_ = env.step({a: int(rng.integers(5)) for a in env.agents})
        done = [i for i in range(2) if env._agent_id(i, 0) not in obs]
        for i in done:  # finished earlier: no observations any more; compare the live ones
            obs.update({env._agent_id(i, j): np.full(len(obs[next(iter(obs))]), np.nan,
                        np.float32) for j in range(env.num_layers)})  # fmt: skip
        seen.append(stack(obs))
        expected.append(v1_formula(env, np.log(env.val_loss) - np.log(before)))
        losses.append(env.val_loss.copy())
    return seen, expected, losses, env


def test_feature_sets_keep_v1_as_released_and_v2_as_current():
    assert [(f.name, f.low, f.high) for f in FEATURES_V1] == V1
    assert FEATURE_SETS == {1: FEATURES_V1, 2: FEATURES_V2}
    assert FEATURES_VERSION == 2 and FEATURE_NAMES == tuple(f.name for f in FEATURES_V2)
    assert len(FEATURES_V2) == 13 and FEATURES_V2[4:] == FEATURES_V1[3:]
    assert ENV_VERSION == policy.ENV_VERSION == "layerwise_lr_v2"
    assert ENV_VERSIONS == {"layerwise_lr_v0": 1, "layerwise_lr_v1": 2, "layerwise_lr_v2": 2}


def test_v0_env_observations_are_the_v1_formula_bit_for_bit():
    seen, expected, _, env = episode(layerwise_lr_v0)
    assert env.metadata["name"] == "layerwise_lr_v0" and seen[0].shape[-1] == 12
    assert env.diverged[1] and not env.diverged[0]
    for got, want in zip(seen, expected):
        live = ~np.isnan(got[:, 0, 0])
        assert np.array_equal(got[live], want[live])


def test_v0_and_v1_train_alike_and_share_the_nine_common_features():
    v0, _, losses0, _ = episode(layerwise_lr_v0)
    v1, _, losses1, env = episode(layerwise_lr_v1)
    assert env.metadata["name"] == "layerwise_lr_v1" and v1[0].shape[-1] == 13
    np.testing.assert_array_equal(losses0, losses1)
    for a, b in zip(v0, v1):
        np.testing.assert_array_equal(a[..., 3:], b[..., 4:])


@pytest.mark.parametrize(
    "env_id, size, name",
    [
        ("ganno/layerwise_lr-v0", 12, "layerwise_lr_v0"),
        ("ganno/layerwise_lr-v1", 13, "layerwise_lr_v1"),
        ("ganno/wine_mlp-v0", 12, "layerwise_lr_v0"),
        ("ganno/wine_mlp-v1", 13, "layerwise_lr_v1"),
        ("ganno/layerwise_lr-v2", 15, "layerwise_lr_v2"),  # LR and momentum
        ("ganno/wine_mlp-v2", 15, "layerwise_lr_v2"),
    ],
)
def test_registry_ids_make_each_version(env_id, size, name):
    env = pettingzoo.make("parallel", env_id)
    assert env.metadata["name"] == name
    assert env.observation_space(env.possible_agents[0]).shape == (size,)
    assert env.state_space.shape == (size * len(env.possible_agents),)
    aec = pettingzoo.make("aec", env_id)
    assert aec.observation_space(aec.possible_agents[0]).shape == (size,)


@pytest.mark.parametrize("version", [0, 3, "2", None])
def test_an_unknown_features_version_fails_naming_the_known_ones(version):
    with pytest.raises(ValueError, match=r"features_version=.*allowed: .*\[1, 2\]"):
        LayerwiseLREnv(features_version=version)
    with pytest.raises(ValueError, match=r"\[1, 2\]"):
        DecisionCore("discrete", (0.5, 2.0), (1e-7, 10.0), 10.0, 40, version)
    with pytest.raises(ValueError, match=r"\[1, 2\]"):
        observation_features(np.ones((1, 1)), None, None, 1, 1, 0, 0.0, 0, version=version)


# -- a policy trained on v0 ------------------------------------------------------------------


@pytest.fixture
def v0_policy(tmp_path):
    torch.manual_seed(0)
    net = PolicyNet(12, 5, (8,))
    with torch.no_grad():
        net.pi[-1].weight.mul_(300.0)  # actions that differ between layers
    path = tmp_path / "v0.pt"
    extra = {"interval": 4, "max_cycles": 3}
    export_policy(path, {"shared": net}, "shared", {"features_version": 1}, extra)
    return path


def test_a_v0_policy_file_records_its_versions(v0_policy):
    payload = torch.load(v0_policy, weights_only=True)
    assert payload["env_version"] == "layerwise_lr_v0" and payload["features_version"] == 1
    assert payload["feature_names"] == [name for name, _, _ in V1]
    with pytest.raises(ValueError, match="features v1"):  # weights that read 13 numbers
        export_policy(v0_policy.with_name("x.pt"), {"shared": PolicyNet(13, 5)}, "shared",
                      {"features_version": 1})  # fmt: skip


def test_a_v0_policy_runs_an_episode_on_the_v0_env(v0_policy):
    controller = load_policy(v0_policy)
    assert controller.features_version == 1
    env = make_env(controller, conditions={"initial_lr": 0.05}, population=2)
    assert env.metadata["name"] == "layerwise_lr_v0" and env.config.features_version == 1
    results = rollout(env, controller, seed=0)
    assert all(math.isfinite(r.test_loss) for r in results)
    assert len(results[0].val_curve) == 3 + 1
    with pytest.raises(ValueError, match="features_version=1"):  # leave it to make_env
        make_env(controller, features_version=2)
    with pytest.raises(ValueError, match="features_version"):  # a v1 env built by hand
        rollout(layerwise_lr_v1.parallel_env(max_cycles=3, interval=4), controller, seed=0)


def test_a_v0_policy_drives_the_scheduler_on_features_v1(v0_policy):
    torch.manual_seed(0)
    model = MLP(8, 16, 2, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    scheduler = GannoScheduler(optimizer, model, v0_policy)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    for step in range(9):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x[8 * (step % 8) : 8 * (step % 8) + 8]), y[:8])
        loss.backward()
        scheduler.observe(loss)
        if step == 0:  # the first decision reads log10 of the initial LR itself
            np.testing.assert_allclose(scheduler.observations[:, 0], math.log10(0.05), rtol=1e-6)
        optimizer.step()
    assert scheduler.core.features_version == 1 and scheduler.decisions == 3
    assert scheduler.observations.shape == (3, 12)
    assert all(math.isfinite(lr) and lr > 0 for lr in scheduler.lrs)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"env_version": "layerwise_lr_v9"}, r"'layerwise_lr_v9'.*\['layerwise_lr_v0', 'lay"),
        ({"features_version": 7}, r"features v7 .* computes v1 .*served: \[1, 2\]"),
        ({"features_version": 2}, r"features v2 .*'layerwise_lr_v0' computes v1"),
    ],
)  # fmt: skip
def test_policy_files_of_unknown_versions_fail_naming_them(tmp_path, v0_policy, change, message):
    bad = tmp_path / "bad.pt"
    torch.save(torch.load(v0_policy, weights_only=True) | change, bad)
    with pytest.raises(ValueError, match=message):
        load_policy(bad)


def test_benchmark_keys_name_the_env_each_controller_runs_on(v0_policy):
    inputs = run_inputs(load_suite("quick"), ["ganno", "constant"], str(v0_policy))
    assert (inputs["ganno"]["env_version"], inputs["ganno"]["features_version"]) == (
        "layerwise_lr_v0",
        1,
    )
    assert (inputs["constant"]["env_version"], inputs["constant"]["features_version"]) == (
        "layerwise_lr_v1",
        2,
    )
