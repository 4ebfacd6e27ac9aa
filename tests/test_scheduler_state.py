"""GannoScheduler checkpoints (state_dict / load_state_dict) and models with tied weights."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ganno_env import GannoScheduler, layerwise_lr_v1
from ganno_env.models import MLP, layer_groups
from ganno_env.policy import load_policy, policy_sha256
from ganno_env.tasks import Task
from tests.helpers import random_policy, train_steps

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ checkpoints
# Trains a few configurations, saving model, optimizer and scheduler with torch.save at
# many steps ("run"), then resumes each checkpoint from those files ("resume"), so that the
# resumed runs happen in another process than the one that saved.
RESUME_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch, torch.nn.functional as F
    from torch import nn
    from ganno_env import GannoScheduler, load_policy

    torch.set_num_threads(1)
    STEPS, INTERVAL = 23, 5
    SAVE_AT = (0, 1, 2, 4, 5, 6, 11, 15, 22)
    CONFIGS = {  # optimizer, initial LR, greedy policy
        "momentum": ("sgd", 0.05, True),
        "adam": ("adam", 3e-3, True),
        "sampled": ("sgd", 0.05, False),
        "diverging": ("sgd", 9.0, True),
    }

    def build(name, policy_file):
        kind, lr, greedy = CONFIGS[name]
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Linear(8, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
            nn.Linear(16, 3),
        )
        if kind == "adam":
            optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        else:
            optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        g = torch.Generator().manual_seed(1)
        x, y = torch.randn(256, 8, generator=g), torch.randint(0, 3, (256,), generator=g)
        x_val, y_val = torch.randn(64, 8, generator=g), torch.randint(0, 3, (64,), generator=g)
        order = torch.randint(0, 256, (STEPS, 32), generator=g)

        def val_loss():
            return F.cross_entropy(model(x_val), y_val).item()

        policy = load_policy(policy_file, greedy=greedy, seed=7)
        scheduler = GannoScheduler(
            optimizer, model, policy, interval=INTERVAL, val_loss_fn=val_loss, max_cycles=4
        )
        return model, optimizer, scheduler, (x, y, order, val_loss)

    def train(model, optimizer, scheduler, data, start, save_to=None):
        x, y, order, val_loss = data
        losses, lrs = [], []
        for step in range(start, STEPS):
            if save_to is not None and step in SAVE_AT:
                torch.save(model.state_dict(), f"{save_to}_{step}_model.pt")
                torch.save(optimizer.state_dict(), f"{save_to}_{step}_optimizer.pt")
                torch.save(scheduler.state_dict(), f"{save_to}_{step}_scheduler.pt")
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x[order[step]]), y[order[step]])
            loss.backward()
            scheduler.observe(loss)
            lrs.append(scheduler.get_last_lr())
            optimizer.step()
            losses.append(loss.item())
        return {
            "losses": losses,
            "lrs": lrs,
            "final_val_loss": val_loss(),
            "history": scheduler.history,
            "diverged": scheduler.diverged,
        }

    mode, policy_file, out = sys.argv[1:]
    results = {}
    for name in CONFIGS:
        prefix = f"{out}/{name}"
        if mode == "run":
            results[name] = {
                "plain": train(*build(name, policy_file), 0),
                "saving": train(*build(name, policy_file), 0, save_to=prefix),
            }
        else:
            for step in SAVE_AT:
                model, optimizer, scheduler, data = build(name, policy_file)
                model.load_state_dict(torch.load(f"{prefix}_{step}_model.pt", weights_only=True))
                optimizer.load_state_dict(
                    torch.load(f"{prefix}_{step}_optimizer.pt", weights_only=True)
                )
                scheduler.load_state_dict(
                    torch.load(f"{prefix}_{step}_scheduler.pt", weights_only=True)
                )
                results[f"{name}/{step}"] = train(model, optimizer, scheduler, data, step)
    with open(f"{out}/{mode}.json", "w") as f:
        json.dump(results, f)
    """
)


def _run_script(script: Path, mode: str, policy: Path, out: Path) -> dict:
    done = subprocess.run(
        [sys.executable, str(script), mode, str(policy), str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads((out / f"{mode}.json").read_text())


def test_resuming_in_a_new_process_at_any_step_is_bit_identical(tmp_path, policy_path):
    script = tmp_path / "resume_script.py"
    script.write_text(RESUME_SCRIPT)
    runs = _run_script(script, "run", policy_path, tmp_path)
    resumed = _run_script(script, "resume", policy_path, tmp_path)
    assert len(resumed) == 4 * 9
    for name, run in runs.items():
        plain = run["plain"]
        _assert_same_run(run["saving"], plain, 0, f"{name}: saving changed the run")
        if name != "diverging":  # that one sits at the upper LR bound
            assert len(np.unique(plain["lrs"])) > 3, "actions must vary for this test to mean much"
        for key, after in resumed.items():
            if key.startswith(f"{name}/"):
                _assert_same_run(after, plain, int(key.split("/")[1]), key)
    assert runs["diverging"]["plain"]["diverged"], "one run must reach the loss cap"
    assert not runs["momentum"]["plain"]["diverged"]


def _assert_same_run(after: dict, full: dict, step: int, what: str) -> None:
    """`after` (from `step` on) is bit for bit `full`; NaN equals NaN (a diverging run)."""
    np.testing.assert_array_equal(after["losses"], full["losses"][step:], err_msg=what)
    np.testing.assert_array_equal(after["lrs"], full["lrs"][step:], err_msg=what)
    np.testing.assert_array_equal(after["final_val_loss"], full["final_val_loss"], err_msg=what)
    assert after["history"] == full["history"], what
    assert after["diverged"] == full["diverged"], what


def _plain_types(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_types(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_plain_types(v) for v in value)
    return value is None or isinstance(value, (torch.Tensor, bool, int, float, str))


@pytest.mark.parametrize("steps", [0, 1, 3, 4, 9])
def test_state_loads_with_weights_only_and_restores_everything(policy_path, steps):
    torch.manual_seed(0)
    model = MLP(8, 16, 2, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    scheduler = GannoScheduler(optimizer, model, policy_path, interval=4, max_cycles=5)
    train_steps(model, optimizer, scheduler, steps)
    state = scheduler.state_dict()
    assert _plain_types(state)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    assert loaded["policy_sha256"] == policy_sha256(load_policy(policy_path).payload)

    other = GannoScheduler(
        torch.optim.SGD(model.parameters(), lr=0.05), model, policy_path, interval=9
    )
    other.load_state_dict(loaded)
    assert (other.interval, other.max_cycles, other.core.max_cycles) == (4, 5, 5)
    assert other.steps == scheduler.steps and other.decisions == scheduler.decisions
    assert other.history == scheduler.history
    for name in ("lrs", "last_log_factor", "observations"):
        mine, theirs = getattr(scheduler, name), getattr(other, name)
        assert (mine is None and theirs is None) or np.array_equal(mine, theirs)
    if steps == 0:
        assert other.feature_reference is None and scheduler.feature_reference is None
    else:
        for field in ("lrs", "weight_rms", "grad_rms"):
            mine = getattr(scheduler.feature_reference, field)
            assert np.array_equal(getattr(other.feature_reference, field), mine)
    for name in ("initial_val_loss", "cap", "val_loss", "diverged"):
        assert getattr(other, name) == getattr(scheduler, name)
    if steps:
        assert other.get_last_lr() == scheduler.get_last_lr()
        assert other.lrs.dtype == np.float64 and other.core.diverged.dtype == bool


def test_state_dict_is_a_snapshot(policy_path):
    torch.manual_seed(0)
    model = MLP(8, 16, 1, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    scheduler = GannoScheduler(optimizer, model, policy_path, interval=4)
    train_steps(model, optimizer, scheduler, 6)
    state = scheduler.state_dict()
    before = io.BytesIO()
    torch.save(state, before)
    train_steps(model, optimizer, scheduler, 5, seed=2)
    after = io.BytesIO()
    torch.save(state, after)
    assert before.getvalue() == after.getvalue()


def test_a_state_of_another_policy_raises_naming_both_hashes(tmp_path, policy_path):
    other_path = random_policy(tmp_path / "other.pt", seed=1)
    model = MLP(8, 16, 1, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    scheduler = GannoScheduler(optimizer, model, policy_path, interval=4)
    train_steps(model, optimizer, scheduler, 5)
    other = GannoScheduler(torch.optim.SGD(model.parameters(), lr=0.05), model, other_path)
    mine, theirs = scheduler.policy_sha256, other.policy_sha256
    assert mine != theirs
    with pytest.raises(ValueError, match=f"policy sha256 {mine}.*sha256 {theirs}"):
        other.load_state_dict(scheduler.state_dict())
    assert other.steps == 0 and other.history == []  # nothing changed
    # the same policy, however it is passed, has one identity
    same = GannoScheduler(
        torch.optim.SGD(model.parameters(), lr=0.05), model, load_policy(policy_path)
    )
    same.load_state_dict(scheduler.state_dict())
    assert same.steps == 5


def test_a_state_of_another_model_shape_raises(policy_path):
    model = MLP(8, 16, 2, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    scheduler = GannoScheduler(optimizer, model, policy_path, interval=4)
    train_steps(model, optimizer, scheduler, 5)
    state = scheduler.state_dict()
    for other_model in (MLP(8, 32, 2, 3), MLP(8, 16, 3, 3)):
        other = GannoScheduler(
            torch.optim.SGD(other_model.parameters(), lr=0.05), other_model, policy_path
        )
        with pytest.raises(ValueError, match=r"saved for a model with layers .* of shapes"):
            other.load_state_dict(state)
        assert other.steps == 0


def test_not_a_state_raises(policy_path):
    model = MLP(8, 16, 1, 3)
    scheduler = GannoScheduler(torch.optim.SGD(model.parameters(), lr=0.05), model, policy_path)
    with pytest.raises(ValueError, match="not a GannoScheduler state"):
        scheduler.load_state_dict({"lr": 0.1})
    state = scheduler.state_dict()
    del state["grad_sum"]
    with pytest.raises(ValueError, match="lacks"):
        scheduler.load_state_dict(state)


# ----------------------------------------------------------------- tied weights
def tied_model() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
        nn.Linear(16, 3),
    )  # fmt: skip
    model[4].weight = model[2].weight  # shared by the second and third Linear
    return model


def test_layer_groups_give_a_tied_parameter_to_its_first_layer():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))
    model[2].weight = model[0].weight
    assert layer_groups(model) == [["0.weight", "0.bias"], ["2.bias"]]
    assert layer_groups(tied_model()) == [
        ["0.weight", "0.bias"],
        ["2.weight", "2.bias"],
        ["4.bias"],
        ["6.weight", "6.bias"],
    ]


@pytest.mark.parametrize("make_optimizer", [torch.optim.SGD, torch.optim.Adam])
def test_scheduler_trains_a_model_with_tied_weights(policy_path, make_optimizer):
    model = tied_model()
    optimizer = make_optimizer(model.parameters(), lr=0.01)
    scheduler = GannoScheduler(optimizer, model, policy_path, interval=6)
    losses = train_steps(model, optimizer, scheduler, 36)
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    assert scheduler.num_layers == len(optimizer.param_groups) == 4
    assert scheduler.decisions == 6
    assert scheduler.layer_names[2] == ["4.bias"]
    counts = Counter(id(p) for group in optimizer.param_groups for p in group["params"])
    assert set(counts) == {id(p) for p in model.parameters()}
    assert set(counts.values()) == {1}  # each parameter in exactly one param group
    assert model[4].weight is model[2].weight  # still tied
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx(scheduler.lrs)


def test_env_trains_a_custom_model_with_tied_weights():
    def tied(width, depth, input_shape, num_outputs):
        model = nn.Sequential(
            nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
            nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, num_outputs),
        )  # fmt: skip
        model[5].weight = model[3].weight
        return model

    task = Task("tied_mlp", "digits", arch="custom", model_factory=tied)
    env = layerwise_lr_v1.parallel_env(task=task, population=2, max_cycles=3, interval=3)
    env.reset(seed=0)
    assert len(env.agents) == 2 * 4
    names = ["1.weight", "1.bias", "3.weight", "3.bias", "5.bias", "7.weight", "7.bias"]
    assert env.trainer.names == names
    while env.agents:
        _, rewards, _, _, infos = env.step({a: 2 for a in env.agents})
        assert all(np.isfinite(list(rewards.values())))
    assert all(np.isfinite(info["val_loss"]) for info in infos.values())
