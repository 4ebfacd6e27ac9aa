"""Knobs: agents that set more than the LR (`controls`), through env, policy and scheduler."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gymnasium import spaces

from ganno_env import GannoScheduler, knobs, layerwise_lr_v1, layerwise_lr_v2
from ganno_env.features import Feature
from ganno_env.knobs import KNOBS, get_knobs, observation_names
from ganno_env.policy import PolicyNet, export_policy, load_policy
from ganno_env.rollout import make_env, rollout
from tests.helpers import recorded_episode, replay

torch.set_num_threads(1)

INTERVAL, CYCLES, LR = 10, 6, 0.02
BOTH = ("lr", "momentum")
ALL = ("lr", "momentum", "weight_decay")


def knob_policy(path, controls, action_mode="discrete", seed=0, scale=300.0):
    """A policy file with random weights for `controls`, whose actions vary."""
    torch.manual_seed(seed)
    env_config = {"controls": list(controls), "action_mode": action_mode}
    knobs = get_knobs(controls)
    sizes = [len(k.factors) for k in knobs]
    out = sum(sizes) if action_mode == "discrete" else 2 * len(knobs)
    net = PolicyNet(len(observation_names(2, controls)), out, (16, 16))
    with torch.no_grad():
        net.pi[-1].weight.mul_(scale)
    export_policy(path, {"shared": net}, "shared", env_config)
    return path


@pytest.mark.parametrize(
    "controls, message",
    [
        (("momentum",), "starting with 'lr'"),
        (("lr", "lr"), "each at most once"),
        (("lr", "dropout"), "from \\['lr', 'momentum', 'weight_decay'\\]"),
        ("lr", "a tuple of knob names"),
    ],
)
def test_bad_controls_name_what_is_allowed(controls, message):
    with pytest.raises(ValueError, match=message):
        layerwise_lr_v1.parallel_env(controls=controls)


def test_knob_settings_are_checked_before_any_work():
    with pytest.raises(ValueError, match="optimizer='adam'.*momentum knob"):
        layerwise_lr_v1.parallel_env(controls=BOTH, optimizer="adam")
    with pytest.raises(ValueError, match="weight_decay=0.5 is where the weight_decay knob"):
        layerwise_lr_v1.parallel_env(controls=("lr", "weight_decay"), weight_decay=0.5)
    with pytest.raises(ValueError, match="features_version=1"):
        layerwise_lr_v1.parallel_env(controls=BOTH, features_version=1)


def test_lr_only_env_is_unchanged_and_v2_adds_the_second_knob():
    old = layerwise_lr_v1.parallel_env()
    assert old.metadata["name"] == "layerwise_lr_v1" and old.action_space("layer_0").n == 5
    assert old.observation_space("layer_0").shape == (13,)
    env = layerwise_lr_v2.parallel_env(population=2, max_cycles=3)
    assert env.metadata["name"] == "layerwise_lr_v2"
    assert env.action_space("net0_layer0") == spaces.MultiDiscrete([5, 3])
    assert env.observation_space("net0_layer0").shape == (15,)
    box = layerwise_lr_v2.parallel_env(controls=ALL, action_mode="continuous")
    assert box.action_space("layer_0").shape == (3,)
    np.testing.assert_allclose(box.action_space("layer_0").high, np.log([2.0, 2.0, 10.0]))


def test_momentum_actions_move_one_minus_momentum_by_their_factor():
    env = layerwise_lr_v2.parallel_env(population=2, max_cycles=3, interval=2)
    _, infos = env.reset(seed=0)
    assert all(info["momentum"] == 0.0 for info in infos.values())
    # net 0 raises momentum (factor 0.5 on 1 - m), net 1 asks to lower it (clipped at 0)
    actions = {a: np.array([2, 0 if a.startswith("net0") else 2]) for a in env.agents}
    obs, _, _, _, infos = env.step(actions)
    np.testing.assert_array_equal(env.knob_values("momentum"), [[0.5] * 4, [0.0] * 4])
    assert infos["net0_layer1"]["momentum"] == 0.5
    # the knob's columns: log10(1 - m) and ln of the factor asked for (before clipping)
    np.testing.assert_allclose(obs["net0_layer0"][-2:], [np.log10(0.5), np.log(0.5)], rtol=1e-6)
    np.testing.assert_allclose(obs["net1_layer0"][-2:], [0.0, np.log(2.0)], rtol=1e-6)
    env.step({a: np.array([2, 0]) for a in env.agents})
    np.testing.assert_allclose(env.knob_values("momentum"), [[0.75] * 4, [0.5] * 4])
    assert "momentum" in env.render() if env.render_mode else True


@pytest.mark.parametrize(
    "action, message",
    [(2, "2 ints, one per knob"), (np.array([5, 0]), "in \\[0, \\[4, 2\\]\\]"),
     (np.array([1.0, 1.0]), "2 ints")],
)  # fmt: skip
def test_actions_outside_the_multidiscrete_space_raise(action, message):
    env = layerwise_lr_v2.parallel_env(max_cycles=2)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        env.step({"layer_0": action})


def scheduler_history(tmp_path, controls, seed, env_weight_decay=1e-3):
    """Replays the env's episode in a torch loop with `GannoScheduler` on torch's SGD (weight
    decay 1e-3) and checks, decision by decision, the same observations and the same values
    of every knob; returns the scheduler's history."""
    path = knob_policy(tmp_path / "p.pt", controls, seed=seed)
    records, model, batches, (x_train, y_train, x_val, y_val) = recorded_episode(
        path, conditions={"initial_lr": LR}, max_cycles=CYCLES, interval=INTERVAL,
        controls=controls, weight_decay=env_weight_decay,
    )  # fmt: skip

    def val_loss():
        return F.cross_entropy(model(x_val), y_val).item()

    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.0, weight_decay=1e-3)
    scheduler = GannoScheduler(
        optimizer, model, path, interval=INTERVAL, val_loss_fn=val_loss, max_cycles=CYCLES
    )
    observed = replay(scheduler, optimizer, model, batches, x_train, y_train)
    agents = [f"layer_{j}" for j in range(4)]
    assert len(scheduler.history) == CYCLES
    for t, record in enumerate(scheduler.history):
        observations, _ = records[t]
        np.testing.assert_allclose(
            observed[t], np.stack([observations[a] for a in agents]), atol=1e-5, rtol=1e-5
        )
        after = records[t + 1][1]
        np.testing.assert_allclose(record["lrs"], [after[a]["lr"] for a in agents], rtol=1e-6)
        for name in controls[1:]:
            np.testing.assert_allclose(record[name], [after[a][name] for a in agents], rtol=1e-6)
    np.testing.assert_allclose(val_loss(), records[-1][1]["layer_0"]["val_loss"], rtol=1e-5)
    for j, group in enumerate(optimizer.param_groups):
        for k, name in enumerate(controls):
            value = scheduler.core.values[0, j, k]
            assert group[KNOBS[name].group_key] == pytest.approx(value)
    return scheduler.history


def varied(history, name):
    return len(np.unique(np.round([record[name] for record in history], 12))) > 2


@pytest.mark.parametrize(
    "controls, seed", [(BOTH, 1), (ALL, 8)], ids=["lr+momentum", "lr+momentum+wd"]
)
def test_scheduler_sets_every_knob_as_the_env_does(tmp_path, controls, seed):
    """Two or three knobs: the scheduler on torch's SGD sees the env's observations and sets
    the same LRs, momenta and weight decays, step for step. (With two, the weight decay is
    the env's fixed setting, and torch's.)"""
    history = scheduler_history(tmp_path, controls, seed)
    assert all(varied(history, name) for name in controls[1:]), "knobs must vary to mean much"


def test_a_new_knob_needs_only_its_definition(tmp_path, monkeypatch):
    """A knob added to `KNOBS` alone (here L2 decay under a new name, written to torch's
    `weight_decay`) works in the env, the policy file and the scheduler."""
    l2 = replace(
        KNOBS["weight_decay"], name="l2", initial="l2", default=1e-3,
        columns=(Feature("log10_l2", -6.0, -1.0, ""), Feature("last_log_factor_l2", -5, 5, "")),
    )  # fmt: skip
    monkeypatch.setitem(knobs.KNOBS, "l2", l2)
    # the knob starts at its default, 1e-3, as torch's weight decay does
    history = scheduler_history(tmp_path, ("lr", "l2"), seed=1, env_weight_decay=0.0)
    assert varied(history, "l2")


def test_scheduler_refuses_an_optimizer_without_the_knob(tmp_path):
    path = knob_policy(tmp_path / "p.pt", BOTH)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = GannoScheduler(optimizer, model, path)
    model(torch.randn(2, 4)).sum().backward()
    with pytest.raises(ValueError, match="no 'momentum'"):
        scheduler.observe(1.0)


@pytest.mark.parametrize("action_mode", ["discrete", "continuous"])
def test_a_two_knob_policy_file_runs_in_the_env_it_names(tmp_path, action_mode):
    path = knob_policy(tmp_path / "p.pt", BOTH, action_mode)
    payload = torch.load(path, weights_only=True)
    assert payload["env_version"] == "layerwise_lr_v2" and payload["controls"] == list(BOTH)
    assert payload["knobs"] == {"momentum": {"factors": [0.5, 1.0, 2.0], "bounds": [0.0, 0.99]}}
    for tie_layers in (False, True):
        controller = load_policy(path, tie_layers=tie_layers)
        assert controller.env_requirements()["controls"] == BOTH
        env = make_env(controller, population=2, max_cycles=3, interval=5)
        assert env.metadata["name"] == "layerwise_lr_v2"
        results = rollout(env, controller, seed=0)
        schedule = np.array(results[0].knob_schedules["momentum"])
        assert schedule.shape == (3, 4) and np.all((schedule >= 0) & (schedule <= 0.99))
        if tie_layers:  # one action per network: every layer the same momentum
            assert all(len(set(row)) == 1 for row in schedule.round(12))
    with pytest.raises(ValueError, match="controls"):
        make_env(load_policy(path), controls=("lr",))


def test_lr_only_policy_files_keep_their_format(tmp_path):
    net = PolicyNet(13, 5)
    export_policy(tmp_path / "p.pt", {"shared": net}, "shared", {})
    payload = torch.load(tmp_path / "p.pt", weights_only=True)
    assert payload["env_version"] == "layerwise_lr_v1"
    assert "controls" not in payload and "knobs" not in payload
    assert "controls" not in load_policy(tmp_path / "p.pt").env_requirements()


def test_a_policy_file_whose_knobs_do_not_match_its_outputs_raises(tmp_path):
    path = knob_policy(tmp_path / "p.pt", BOTH)
    payload = torch.load(path, weights_only=True)
    payload["controls"] = ["lr"]
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="layerwise_lr_v2"):
        load_policy(tmp_path / "bad.pt")


def test_weight_decay_setting_without_the_knob_decays_the_weights():
    """The env's `weight_decay` applies to every layer when agents do not set it."""
    losses = {}
    for decay in (0.0, 0.05):
        env = layerwise_lr_v1.parallel_env(max_cycles=2, interval=20, weight_decay=decay)
        env.reset(seed=0)
        env.step({a: 2 for a in env.agents})
        losses[decay] = float(env.trainer.params[0].square().mean())
    assert losses[0.05] < losses[0.0]


def test_hand_made_schedules_refuse_an_env_with_more_knobs():
    from ganno_env.controllers import HAND_MADE

    env = layerwise_lr_v2.parallel_env(action_mode="log_lr", max_cycles=2)
    with pytest.raises(ValueError, match="controller 'cosine' sets \\('lr',\\)"):
        rollout(env, HAND_MADE["cosine"](), seed=0)
