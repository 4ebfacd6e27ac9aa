"""GannoScheduler: a policy driving an ordinary PyTorch loop exactly as it drives the env."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ganno_env import GannoScheduler, add_fallback, add_step_clip, load_policy
from ganno_env.features import FEATURE_NAMES
from ganno_env.models import MLP
from tests.helpers import random_policy, recorded_episode, replay, train_steps

torch.set_num_threads(1)

INTERVAL, CYCLES, LR = 10, 6, 0.05


def run_env(policy_path, lr=LR, **env_kwargs):
    """The env's episode; returns its records and what an ordinary loop needs to replay it."""
    records, model, batches, data = recorded_episode(
        policy_path, conditions={"initial_lr": lr}, max_cycles=CYCLES, interval=INTERVAL,
        **env_kwargs,
    )  # fmt: skip
    return [_record(*record) for record in records], model, batches, data


def _record(observations, infos):
    agents = sorted(observations, key=lambda a: int(a.split("_")[1]))
    return {
        "obs": np.stack([observations[a] for a in agents]),
        "lrs": [infos[a]["lr"] for a in agents],
        "train_loss": infos[agents[0]]["train_loss"],
        "val_loss": infos[agents[0]]["val_loss"],
    }


OPTIMIZERS = {
    "sgd": (LR, {}, lambda params, lr: torch.optim.SGD(params, lr=lr)),
    "momentum": (
        0.003,
        {"momentum": 0.9},
        lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9),
    ),
    "adam": (1e-3, {"optimizer": "adam"}, lambda params, lr: torch.optim.Adam(params, lr=lr)),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_same_decisions_and_losses_as_the_env(policy_path, name):
    lr, env_kwargs, make_optimizer = OPTIMIZERS[name]
    records, model, batches, data = run_env(policy_path, lr, **env_kwargs)
    optimizer = make_optimizer(model.parameters(), lr)
    lrs = assert_replays_the_env(policy_path, optimizer, records, model, batches, data)
    assert len(np.unique(lrs.round(12))) > 4, "actions must vary for this test to mean much"
    assert any(len(set(row)) > 1 for row in lrs.round(12)), "layers must get different LRs"


def test_same_decisions_and_losses_as_the_env_under_the_safety_net(tmp_path):
    ratio = 2e-3  # small enough to hold some LRs under their ceiling in this run
    policy_path = random_policy(tmp_path / "net.pt", env_config={"max_step_ratio": ratio})
    records, model, batches, data = run_env(policy_path, max_step_ratio=ratio)
    free, *_ = run_env(random_policy(tmp_path / "free.pt"))
    assert [r["lrs"] for r in records] != [r["lrs"] for r in free], "the net must bind here"
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    assert_replays_the_env(policy_path, optimizer, records, model, batches, data)
    with pytest.raises(ValueError, match="max_step_ratio=None.*max_step_ratio=0.002"):
        run_env(policy_path)  # its actions end at other LRs without the net


def test_same_decisions_and_losses_as_the_env_without_raises_at_the_probe(tmp_path):
    policy_path = random_policy(tmp_path / "cut.pt", env_config={"probe_cuts_only": True})
    records, model, batches, data = run_env(policy_path, probe_cuts_only=True)
    raised, *_ = run_env(random_policy(tmp_path / "free.pt"))
    assert max(raised[1]["lrs"]) > LR, "a raise at the probe must be asked for here"
    assert max(records[1]["lrs"]) <= LR  # none granted (records[0]: the LRs before it)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    assert_replays_the_env(policy_path, optimizer, records, model, batches, data)
    with pytest.raises(ValueError, match="probe_cuts_only=False.*probe_cuts_only=True"):
        run_env(policy_path)


def test_same_decisions_and_losses_as_the_env_under_the_fallback(tmp_path):
    ratio = 2e-3  # small enough to take the network outside at some decisions of this run
    policy_path = random_policy(tmp_path / "fb.pt", env_config={"fallback_step_ratio": ratio})
    records, model, batches, data = run_env(policy_path, fallback_step_ratio=ratio)
    free, *_ = run_env(random_policy(tmp_path / "free.pt"))
    assert [r["lrs"] for r in records] != [r["lrs"] for r in free], "the fallback must act here"
    smallest = 0.5  # the env's default factors: every layer cut by it at once
    assert any(
        np.allclose(after["lrs"], np.multiply(before["lrs"], smallest))
        for before, after in zip(records, records[1:])
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    assert_replays_the_env(policy_path, optimizer, records, model, batches, data)
    with pytest.raises(ValueError, match="fallback_step_ratio=None.*fallback_step_ratio=0.002"):
        run_env(policy_path)


def test_a_fallback_added_after_training_runs_in_the_env_and_the_scheduler_alike(tmp_path):
    ratio = 2e-3
    trained_without = random_policy(tmp_path / "free.pt")
    guarded = add_fallback(trained_without, tmp_path / "guarded.pt", ratio)
    policy = load_policy(guarded)
    assert policy.env_requirements()["fallback_step_ratio"] == ratio
    assert policy.payload["extra"]["fallback_added"] == ratio  # the results can tell
    assert load_policy(trained_without).env_requirements()["fallback_step_ratio"] is None
    records, model, batches, data = run_env(guarded, fallback_step_ratio=ratio)
    free, *_ = run_env(trained_without)
    assert [r["lrs"] for r in records] != [r["lrs"] for r in free], "the fallback must act here"
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    assert_replays_the_env(guarded, optimizer, records, model, batches, data)

    for bad in (0, float("inf"), True, "0.3"):
        with pytest.raises(ValueError, match=f"step_ratio={bad!r}; allowed: a finite number > 0"):
            add_fallback(trained_without, tmp_path / "bad.pt", bad)
    with pytest.raises(ValueError, match="trained with fallback_step_ratio=0.002"):
        add_fallback(guarded, tmp_path / "other.pt", 0.5)
    raises_only = random_policy(tmp_path / "up.pt", env_config={"lr_factors": (1, 2, 3, 4, 5)})
    with pytest.raises(ValueError, match="none below 1"):
        add_fallback(raises_only, tmp_path / "up_guarded.pt", ratio)
    assert not (tmp_path / "bad.pt").exists() and not (tmp_path / "up_guarded.pt").exists()


def test_a_step_clip_runs_in_the_env_and_the_scheduler_alike(tmp_path):
    clip = 2e-3  # small enough to bind on some steps of this run
    trained_without = random_policy(tmp_path / "free.pt")
    clipped = add_step_clip(trained_without, tmp_path / "clipped.pt", clip)
    assert load_policy(clipped).env_requirements()["step_clip"] == clip
    assert load_policy(clipped).payload["extra"]["step_clip_added"] == clip
    records, model, batches, data = run_env(clipped, step_clip=clip)
    free, *_ = run_env(trained_without)
    assert records[0]["lrs"] == free[0]["lrs"]  # the clip acts on steps, not on the probe
    assert [r["train_loss"] for r in records] != [r["train_loss"] for r in free], "must bind"
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    assert_replays_the_env(clipped, optimizer, records, model, batches, data, step_clip=clip)
    with pytest.raises(ValueError, match="step_clip=None.*step_clip=0.002"):
        run_env(clipped)  # its LRs would take other steps without the clip

    for bad in (0, -1.0, float("nan"), True, "0.5"):
        with pytest.raises(ValueError, match=f"step_clip={bad!r}; allowed: a finite number > 0"):
            add_step_clip(trained_without, tmp_path / "bad.pt", bad)
    with pytest.raises(ValueError, match="trained with step_clip=0.002; allowed: that value"):
        add_step_clip(clipped, tmp_path / "other.pt", 0.5)
    assert not (tmp_path / "bad.pt").exists() and not (tmp_path / "other.pt").exists()


def test_a_policy_that_clips_its_observations_runs_in_the_env_and_the_scheduler_alike(tmp_path):
    free = random_policy(tmp_path / "free.pt")
    payload = torch.load(free, weights_only=True)
    payload["observation_clip"] = {"log10_relative_lr": [-0.3, 0.3]}
    torch.save(payload, tmp_path / "clipped.pt")
    records, model, batches, data = run_env(tmp_path / "clipped.pt")
    unclipped, *_ = run_env(free)
    assert [r["lrs"] for r in records] != [r["lrs"] for r in unclipped], "the clip must act here"
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    assert_replays_the_env(tmp_path / "clipped.pt", optimizer, records, model, batches, data)


def assert_replays_the_env(
    policy_path, optimizer, records, model, batches, data, step_clip: float | None = None
):
    """A scheduler on an ordinary loop over the env's minibatches observes, decides and
    loses exactly what the env did; returns its LRs [decision, layer]. Under a step clip
    the optimizer's last step took each layer's LR in force or less, as the clip asked."""
    x_train, y_train, x_val, y_val = data
    assert len(batches) == INTERVAL * CYCLES

    def val_loss():
        return F.cross_entropy(model(x_val), y_val).item()

    scheduler = GannoScheduler(
        optimizer, model, policy_path, interval=INTERVAL, val_loss_fn=val_loss, max_cycles=CYCLES
    )
    assert len(optimizer.param_groups) == scheduler.num_layers == 4
    observed = replay(scheduler, optimizer, model, batches, x_train, y_train)
    # the env's last observation comes after its last interval: one more observe would decide
    assert len(observed) == CYCLES == len(records) - 1
    history = scheduler.history
    for t in range(CYCLES):
        np.testing.assert_allclose(observed[t], records[t]["obs"], atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(history[t]["lrs"], records[t + 1]["lrs"], rtol=1e-6)
        np.testing.assert_allclose(history[t]["train_loss"], records[t]["train_loss"], rtol=1e-5)
        np.testing.assert_allclose(history[t]["val_loss"], records[t]["val_loss"], rtol=1e-5)
    np.testing.assert_allclose(val_loss(), records[-1]["val_loss"], rtol=1e-5)
    lrs = np.array([h["lrs"] for h in history])
    for j, group in enumerate(optimizer.param_groups):
        if step_clip is None:
            assert group["lr"] == pytest.approx(lrs[-1, j])
        else:
            assert 0 < group["lr"] <= lrs[-1, j] * (1 + 1e-6)
    return lrs


def test_first_decision_happens_before_the_first_update(policy_path):
    torch.manual_seed(0)
    model = MLP(8, 16, 2, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = GannoScheduler(optimizer, model, policy_path, interval=5, max_cycles=4)
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    for step in range(11):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        scheduler.observe(loss)
        assert scheduler.decisions == 1 + step // 5
        assert [g["lr"] for g in optimizer.param_groups] == pytest.approx(scheduler.lrs)
        optimizer.step()
    assert [h["step"] for h in scheduler.history] == [0, 5, 10]
    # without val_loss_fn the train loss stands in: the first val ratio is exactly 1
    assert scheduler.history[0]["val_loss"] == pytest.approx(scheduler.history[0]["train_loss"])


def test_step_without_observe_raises(policy_path):
    model = MLP(8, 16, 1, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = GannoScheduler(optimizer, model, policy_path)
    F.cross_entropy(model(torch.randn(4, 8)), torch.tensor([0, 1, 2, 0])).backward()
    with pytest.raises(RuntimeError, match="observe"):
        optimizer.step()
    scheduler.close()
    optimizer.step()


def test_defaults_come_from_the_policy_file(tmp_path):
    plain = random_policy(tmp_path / "plain.pt")
    recorded = random_policy(tmp_path / "rec.pt", extra={"interval": 7, "max_cycles": 9})
    model = MLP(4, 8, 1, 2)
    scheduler = GannoScheduler(torch.optim.SGD(model.parameters(), lr=0.1), model, plain)
    assert (scheduler.interval, scheduler.max_cycles) == (25, 40)
    scheduler = GannoScheduler(torch.optim.SGD(model.parameters(), lr=0.1), model, recorded)
    assert (scheduler.interval, scheduler.max_cycles) == (7, 9)


class Evil:
    def __reduce__(self):
        return (print, ("unpickled arbitrary code",))


@pytest.mark.parametrize(
    "tamper, message",
    [
        (lambda p: Evil(), "not a GANNO policy file"),
        (lambda p: ["just", "a", "list"], "policy format"),
        (lambda p: p | {"format": 99}, "policy format"),
        (lambda p: p | {"env_version": "other_v9"}, "trained on"),
        (lambda p: p | {"features_version": 0}, "observation features"),
        (lambda p: p | {"mapping": "weird"}, "mapping"),
        (lambda p: p | {"step_clip": -0.5}, "step_clip=-0.5; allowed: None or a finite"),
    ],
)
def test_tampered_policy_files_raise_value_error(tmp_path, policy_path, tamper, message):
    payload = torch.load(policy_path, weights_only=True)
    bad = tmp_path / "bad.pt"
    torch.save(tamper(payload), bad)
    model = MLP(4, 8, 1, 2)
    with pytest.raises(ValueError, match=message):
        GannoScheduler(torch.optim.SGD(model.parameters(), lr=0.1), model, bad)


def test_deeper_model_with_shared_mapping(policy_path):
    model = MLP(8, 16, 7, 3)  # 8 layers, twice the training tasks' depth
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scheduler = GannoScheduler(optimizer, model, policy_path, interval=4)
    losses = train_steps(model, optimizer, scheduler, 12)
    assert scheduler.num_layers == len(optimizer.param_groups) == 8
    assert scheduler.decisions == 3 and np.isfinite(losses).all()
    assert all(g["momentum"] == 0.9 for g in optimizer.param_groups)
    depth = scheduler.observations[:, FEATURE_NAMES.index("relative_depth")]
    np.testing.assert_allclose(depth, np.arange(8) / 7, atol=1e-6)


def test_per_layer_policy_on_a_deeper_model_raises(tmp_path):
    path = random_policy(tmp_path / "per_layer.pt", "per_layer", [f"layer_{j}" for j in range(4)])
    shallow = MLP(8, 16, 3, 3)
    GannoScheduler(torch.optim.SGD(shallow.parameters(), lr=0.1), shallow, path)
    deep = MLP(8, 16, 5, 3)
    with pytest.raises(ValueError, match="per_layer policy .* 6 layers.*layer_4"):
        GannoScheduler(torch.optim.SGD(deep.parameters(), lr=0.1), deep, path)


def test_adam_gets_per_layer_lrs_and_trains(policy_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.LayerNorm(32), nn.ReLU(), nn.Linear(32, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.8, 0.99))
    scheduler = GannoScheduler(optimizer, model, policy_path, interval=3)
    losses = train_steps(model, optimizer, scheduler, 15)
    assert scheduler.layer_names == [
        ["0.weight", "0.bias", "1.weight", "1.bias"],
        ["3.weight", "3.bias"],
    ]
    assert len(optimizer.param_groups) == 2
    assert all(g["betas"] == (0.8, 0.99) for g in optimizer.param_groups)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx(scheduler.lrs)
    assert len(optimizer.state) == 6 and np.isfinite(losses).all()
    low, high = scheduler.lr_bounds
    assert all(low <= lr <= high for h in scheduler.history for lr in h["lrs"])


def test_optimizer_groups_split_per_layer_keep_their_settings(policy_path):
    model = MLP(8, 16, 2, 3)
    decay = [p for n, p in model.named_parameters() if n.endswith("weight")]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias")]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=1e-3,
    )
    scheduler = GannoScheduler(optimizer, model, policy_path, interval=3)
    assert len(optimizer.param_groups) == 6  # 3 layers x (decay, no decay)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0] * 3
    train_steps(model, optimizer, scheduler, 7)
    for j, lr in enumerate(scheduler.lrs):
        assert {g["lr"] for g in optimizer.param_groups[2 * j : 2 * j + 2]} == {lr}

    mixed = torch.optim.SGD([{"params": decay, "lr": 0.1}, {"params": no_decay, "lr": 0.2}], lr=0.1)
    with pytest.raises(ValueError, match="one LR per layer"):
        GannoScheduler(mixed, model, policy_path)


def test_optimizer_of_another_model_raises(policy_path):
    model, other = MLP(4, 8, 1, 2), MLP(4, 8, 1, 2)
    with pytest.raises(ValueError, match="not in the model"):
        GannoScheduler(torch.optim.SGD(other.parameters(), lr=0.1), model, policy_path)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda(policy_path):
    model = MLP(8, 16, 2, 3).cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    scheduler = GannoScheduler(optimizer, model, policy_path, interval=4)
    torch.manual_seed(1)
    x, y = torch.randn(64, 8, device="cuda"), torch.randint(0, 3, (64,), device="cuda")
    for _ in range(9):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        scheduler.observe(loss)
        optimizer.step()
    assert scheduler.decisions == 3 and np.isfinite(scheduler.observations).all()
