"""The policy shipped inside the package under the name "pretrained", and `--conditions`.

The tests marked `shipped` read the real `ganno_env/data/pretrained_policy.pt` and skip
only while it is absent; the others point `PRETRAINED_PATH` at a temporary policy file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import ganno_env
from ganno_env import GannoScheduler, cli, policy
from ganno_env.features import FEATURE_NAMES, FEATURES, FEATURES_VERSION
from ganno_env.models import MLP
from ganno_env.observation_clip import MAIN_JOB_CLIP
from ganno_env.policy import (
    FALLBACK_STEP_RATIO,
    STEP_CLIP,
    PolicyNet,
    export_policy,
    load_policy,
    resolve_policy_path,
)
from ganno_env.rollout import make_env, rollout

torch.set_num_threads(1)

SHIPPED = policy.PRETRAINED_PATH  # read at import: the temp-file tests patch the module's
shipped = pytest.mark.skipif(
    not SHIPPED.is_file(),
    reason=f"{SHIPPED} is not shipped yet (write it with ganno_env.policy.export_policy)",
)
EXTRA_KEYS = ("command", "commit", "seed", "unseen_v0_summary")


def scheduler_steps(policy_arg: str, steps: int) -> GannoScheduler:
    """An ordinary SGD loop on random data, its per-layer LRs set by the scheduler."""
    torch.manual_seed(0)
    model = MLP(8, 16, 2, 3)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    scheduler = GannoScheduler(optimizer, model, policy_arg)
    for step in range(steps):
        batch = slice(8 * (step % 8), 8 * (step % 8) + 8)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x[batch]), y[batch])
        loss.backward()
        scheduler.observe(loss)
        optimizer.step()
    return scheduler


# -- the real shipped file ------------------------------------------------------------------


@shipped
def test_shipped_policy_loads_weights_only_and_records_its_training():
    payload = torch.load(SHIPPED, map_location="cpu", weights_only=True)
    assert payload["features_version"] == FEATURES_VERSION
    assert list(payload["feature_names"]) == list(FEATURE_NAMES)
    missing = [key for key in EXTRA_KEYS if key not in payload["extra"]]
    assert not missing, f"{SHIPPED} does not record {missing} in payload['extra']"


@shipped
def test_shipped_policy_carries_the_main_jobs_guards_and_the_step_clip():
    payload = torch.load(SHIPPED, map_location="cpu", weights_only=True)
    assert payload["step_clip"] == payload["extra"]["step_clip_added"] == STEP_CLIP
    assert load_policy(SHIPPED).env_requirements()["step_clip"] == STEP_CLIP
    assert payload["fallback_step_ratio"] == FALLBACK_STEP_RATIO
    assert payload["extra"]["fallback_added"] == FALLBACK_STEP_RATIO
    assert sorted(payload["observation_clip"]) == sorted(MAIN_JOB_CLIP)
    measured_on = payload["extra"]["observation_clip_from"]["conditions"]
    assert measured_on == payload["extra"]["conditions"]  # its own training conditions
    assert load_policy(SHIPPED).payload["observation_clip"] == payload["observation_clip"]


@shipped
def test_pretrained_policy_plays_a_full_episode():
    controller = ganno_env.load_policy("pretrained")
    env = make_env(controller)  # the pace the policy records, else the env's defaults
    results = rollout(env, controller, seed=0)
    assert results and all(math.isfinite(r.test_loss) for r in results)
    assert len(results[0].val_curve) == env.config.max_cycles + 1  # the whole episode


@shipped
def test_scheduler_runs_the_pretrained_policy():
    scheduler = scheduler_steps("pretrained", steps=30)
    assert scheduler.decisions >= 1 and len(scheduler.history) == scheduler.decisions
    assert all(math.isfinite(lr) and lr > 0 for lr in scheduler.lrs)


# -- the name, with a temporary file --------------------------------------------------------


@pytest.fixture
def fake_pretrained(tmp_path, monkeypatch) -> Path:
    """A random policy of the right observation size, installed as "pretrained"."""
    torch.manual_seed(1)
    path = tmp_path / "pretrained_policy.pt"
    export_policy(path, {"shared": PolicyNet(len(FEATURES), 5, (8,))}, "shared", {})
    monkeypatch.setattr(policy, "PRETRAINED_PATH", path)
    return path


@pytest.fixture
def no_pretrained(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "absent" / "pretrained_policy.pt"
    monkeypatch.setattr(policy, "PRETRAINED_PATH", path)
    return path


def test_the_name_resolves_to_the_packaged_file_and_paths_stay_paths(fake_pretrained):
    assert resolve_policy_path("pretrained") == fake_pretrained
    assert resolve_policy_path("runs/policy.pt") == Path("runs/policy.pt")
    assert resolve_policy_path(Path("pretrained")) == Path("pretrained")  # a Path is a path


def test_the_default_location_is_inside_the_package():
    assert SHIPPED == Path(ganno_env.__file__).resolve().parent / "data" / "pretrained_policy.pt"


def test_load_policy_and_scheduler_accept_the_name(fake_pretrained):
    loaded = load_policy("pretrained").payload
    assert loaded["modules"]["shared"]["pi.0.weight"].shape[1] == len(FEATURES)
    assert scheduler_steps("pretrained", steps=2).decisions == 1


def test_a_missing_pretrained_file_is_one_clear_error(no_pretrained):
    with pytest.raises(FileNotFoundError, match="pretrained GANNO policy is not installed") as e:
        load_policy("pretrained")
    assert str(no_pretrained) in str(e.value)
    model = MLP(2, 2, 1, 2)
    with pytest.raises(FileNotFoundError, match="not installed"):
        GannoScheduler(torch.optim.SGD(model.parameters(), lr=0.1), model, "pretrained")


def test_bench_resolves_pretrained_to_the_file_it_hashes(fake_pretrained):
    assert cli._policy_file("pretrained") == str(fake_pretrained)


def test_bench_without_the_shipped_file_fails_before_any_work(no_pretrained, tmp_path, capsys):
    out = tmp_path / "bench"
    assert cli.main(["bench", "--quick", "--policy", "pretrained", "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "not installed" in error
    assert not out.exists()


# -- ganno train --conditions ---------------------------------------------------------------


def test_train_refuses_held_out_and_unknown_conditions_before_any_work(tmp_path, capsys):
    pytest.importorskip("ray")
    out = tmp_path / "run"
    for name, why in (("unseen_lr", "held out"), ("no_such", "unknown")):
        code = cli.main(["train", "--preset", "smoke", "--conditions", name, "--out", str(out)])
        error = capsys.readouterr().err.strip()
        assert code == 2 and len(error.splitlines()) == 1, error
        assert why in error and "'train'" in error  # names what is allowed
        assert not out.exists()


def test_conditions_merge_into_the_preset_env_config():
    pytest.importorskip("ray")
    from rllib_configs.ppo import get_preset, training_env_config

    preset = get_preset("smoke")
    merged = training_env_config(preset, "default")
    assert merged == {**preset.env_config, "conditions": "default"}
    assert preset.env_config["conditions"] == "train"  # the preset itself is not changed


def test_train_conditions_reach_run_json_and_policy(ray_session, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--preset", "smoke", "--out", str(out)]
    assert cli.main([*args, "--stop-iters", "1", "--conditions", "default"]) == 0
    env_config = json.loads((out / "run.json").read_text())["config"]["env_config"]
    assert env_config["conditions"] == "default"
    assert env_config["population"] == 2 and env_config["max_cycles"] == 5  # merged
    assert load_policy(out / "policy.pt").payload["extra"]["conditions"] == "default"
    capsys.readouterr()
    # resuming with other conditions is another run: refused, naming the difference
    assert cli.main([*args, "--resume", "--stop-iters", "2", "--conditions", "train"]) == 2
    error = capsys.readouterr().err
    assert "env_config.conditions: recorded 'default', requested 'train'" in error
