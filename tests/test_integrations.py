"""Other MARL libraries: TorchRL, SuperSuit + Stable-Baselines3, skrl, BenchMARL.

Each library's tests skip when it is not installed (CI installs the torchrl, sb3 and skrl
extras). BenchMARL needs its own environment (it pins torchrl<0.12): its test runs the
script of docs/benchmarl.md with the Python that GANNO_BENCHMARL_PYTHON names.
"""

import atexit
import math
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ganno_env import layerwise_lr_v1
from ganno_env.features import FEATURES
from ganno_env.integrations._common import (
    INFO_KEYS,
    FixedAgentSet,
    PaddedInfos,
    require,
    varying_agents,
)

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"max_cycles": 5, "interval": 5}
LIBRARIES = ("torchrl", "tensordict", "supersuit", "stable_baselines3", "skrl", "benchmarl")

NUM_FEATURES = len(FEATURES)


# ------------------------------------------------------------------ shared glue, no library
def test_import_ganno_env_and_glue_needs_no_library():
    code = (
        "import sys, ganno_env\n"
        "import ganno_env.integrations.torchrl, ganno_env.integrations.supersuit\n"
        "import ganno_env.integrations.skrl\n"
        f"loaded = [m for m in {LIBRARIES!r} if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_missing_library_names_the_extra():
    with pytest.raises(ImportError, match=r"pip install 'ganno\[torchrl\]'"):
        require("ganno_no_such_library", "torchrl", "a test")


def test_benchmarl_module_without_benchmarl_names_the_extra():
    try:
        import benchmarl  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("benchmarl is installed here")
    with pytest.raises(ImportError, match=r"ganno\[benchmarl\]"):
        import ganno_env.integrations.benchmarl  # noqa: F401


@pytest.mark.parametrize(
    "kwargs, varies",
    [
        ({}, False),
        ({"conditions": "other_dataset"}, False),  # three tasks, all 3-layer MLPs
        ({"conditions": "cnn"}, False),
        ({"conditions": "deeper"}, True),
        ({"max_layers": 6}, True),
    ],
)
def test_varying_agents(kwargs, varies):
    reason = varying_agents(layerwise_lr_v1.parallel_env(**kwargs))
    assert (reason is not None) == varies, reason


@pytest.mark.filterwarnings("ignore:reset options")  # the API test passes foreign options
@pytest.mark.parametrize("wrapper", [FixedAgentSet, PaddedInfos])
def test_wrappers_pass_the_parallel_api_test(wrapper):
    from pettingzoo.test import parallel_api_test

    parallel_api_test(wrapper(layerwise_lr_v1.parallel_env(population=2, **SMALL)), 12)


def test_fixed_agent_set_ends_the_population_together():
    env = FixedAgentSet(layerwise_lr_v1.parallel_env(population=2, **SMALL))
    env.reset(seed=0, options={"conditions": [{"initial_lr": 10.0}, {"initial_lr": 0.01}]})
    assert env.agents == env.possible_agents
    for _ in range(SMALL["max_cycles"]):
        obs, rewards, terms, truncs, infos = env.step({a: 2 for a in env.agents})
        if not env.agents:
            break
    assert set(obs) == set(env.possible_agents)  # every agent reports at the last step
    assert infos["net0_layer0"]["diverged"] and terms["net0_layer0"]
    assert truncs["net1_layer0"] and not terms["net1_layer0"]
    assert all(terms[a] or truncs[a] for a in obs)
    assert env.agents == [] and env.unwrapped.agents == []
    assert not env.state().any()
    with pytest.raises(RuntimeError, match="after the episode ended"):
        env.step({})


def test_fixed_agent_set_refuses_a_shallower_episode():
    env = FixedAgentSet(layerwise_lr_v1.parallel_env(**SMALL))
    with pytest.raises(ValueError, match=r"lack agents \['layer_3'\]"):
        env.reset(seed=0, options={"depth": 2})


def test_fixed_agent_set_seed_stride():
    env = FixedAgentSet(layerwise_lr_v1.parallel_env(population=2, **SMALL), seed_stride=2)
    env.reset(seed=3)
    assert [c.seed for c in env.unwrapped.episode_conditions] == [6, 7]


def test_padded_infos_keys_and_absent_agents():
    env = PaddedInfos(layerwise_lr_v1.parallel_env(**SMALL))
    obs, infos = env.reset(seed=0, options={"depth": 2})  # 3 of 4 possible layers
    assert set(obs) == set(infos) == set(env.possible_agents)
    assert env.agents == ["layer_0", "layer_1", "layer_2"]
    assert not obs["layer_3"].any() and env.observation_space("layer_3").contains(obs["layer_3"])
    with torch.no_grad():  # libraries step envs without autograd: the wrapper turns it on
        while env.agents:
            obs, rewards, terms, truncs, infos = env.step({a: 2 for a in env.possible_agents})
            for info in infos.values():
                assert tuple(info) == INFO_KEYS
            done = any(truncs.values())
            assert math.isfinite(infos["layer_0"]["test_loss"]) == done


# ------------------------------------------------------------------------------- TorchRL
def _torchrl():
    pytest.importorskip("torchrl")
    from ganno_env.integrations.torchrl import make_torchrl_env

    return make_torchrl_env


@pytest.mark.parametrize("population", [1, 2])
def test_torchrl_check_env_specs(population):
    make_torchrl_env = _torchrl()
    from torchrl.envs.utils import check_env_specs

    env = make_torchrl_env(population=population, seed=0, **SMALL)
    assert list(env.group_map) == ["agents"]
    assert len(env.group_map["agents"]) == 4 * population
    check_env_specs(env, seed=0)
    td = env.rollout(SMALL["max_cycles"] + 1, break_when_any_done=False)
    done = td["next", "done"].squeeze(-1)
    assert done.tolist() == [False] * 4 + [True, False]
    assert td["next", "state"].shape[-1] == NUM_FEATURES * 4 * population
    test_loss = td["next", "agents", "info", "test_loss"][:, 0]
    assert torch.isfinite(test_loss[4]) and torch.isnan(test_loss[:4]).all()


def test_torchrl_variable_depth_uses_the_mask():
    make_torchrl_env = _torchrl()
    env = make_torchrl_env(conditions="deeper", seed=0, **SMALL)
    assert env.use_mask and env.done_on_any is False
    td = env.rollout(3 * SMALL["max_cycles"], break_when_any_done=False)
    done = td["next", "done"].squeeze(-1).tolist()
    assert done == ([False] * 4 + [True]) * 3  # absent layers do not end the episode
    layers = td["agents", "mask"].sum(-1)
    assert set(layers.tolist()) <= {7, 10}
    assert (td["next", "agents", "reward"][~td["agents", "mask"]] == 0).all()
    with pytest.raises(ValueError, match="done_on_any=True"):
        make_torchrl_env(conditions="deeper", done_on_any=True, **SMALL)
    with pytest.raises(ValueError, match="use_mask=False"):
        make_torchrl_env(conditions="deeper", use_mask=False, **SMALL)


def test_torchrl_ppo_updates():
    make_torchrl_env = _torchrl()
    from tensordict.nn import TensorDictModule
    from torchrl.collectors import Collector
    from torchrl.modules import MultiAgentMLP, ProbabilisticActor
    from torchrl.objectives import ClipPPOLoss, ValueEstimators

    torch.manual_seed(0)
    env = make_torchrl_env(seed=0, **SMALL)
    n_agents = len(env.group_map["agents"])
    action_spec = env.full_action_spec["agents", "action"]
    actor_net = MultiAgentMLP(
        n_agent_inputs=NUM_FEATURES, n_agent_outputs=action_spec.space.n, n_agents=n_agents,
        centralized=False, share_params=True, depth=1, num_cells=32,
    )  # fmt: skip
    policy = ProbabilisticActor(
        TensorDictModule(actor_net, [("agents", "observation")], [("agents", "logits")]),
        spec=action_spec,
        in_keys=[("agents", "logits")],
        out_keys=[("agents", "action")],
        distribution_class=torch.distributions.Categorical,
        return_log_prob=True,
    )
    critic_net = MultiAgentMLP(
        n_agent_inputs=NUM_FEATURES, n_agent_outputs=1, n_agents=n_agents,
        centralized=True, share_params=True, depth=1, num_cells=32,
    )  # fmt: skip
    critic = TensorDictModule(critic_net, [("agents", "observation")], [("agents", "state_value")])
    loss_module = ClipPPOLoss(policy, critic, entropy_coeff=0.01)
    loss_module.set_keys(
        reward=("agents", "reward"),
        action=("agents", "action"),
        value=("agents", "state_value"),
        done=("agents", "done"),
        terminated=("agents", "terminated"),
    )
    loss_module.make_value_estimator(ValueEstimators.GAE, gamma=0.99, lmbda=0.95)
    optimizer = torch.optim.Adam(loss_module.parameters(), lr=3e-4)
    collector = Collector(
        env, policy, frames_per_batch=10, total_frames=20, auto_register_policy_transforms=False
    )
    losses = []
    for batch in collector:
        with torch.no_grad():
            loss_module.value_estimator(
                batch,
                params=loss_module.critic_network_params,
                target_params=loss_module.target_critic_network_params,
            )
        for _ in range(2):
            out = loss_module(batch)
            loss = out["loss_objective"] + out["loss_critic"] + out["loss_entropy"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    collector.shutdown()
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)


# ----------------------------------------------------------------- SuperSuit + SB3
def _supersuit():
    pytest.importorskip("supersuit")
    pytest.importorskip("stable_baselines3")
    from ganno_env.integrations.supersuit import vec_env

    return vec_env


@pytest.mark.parametrize("kwargs", [{"conditions": "deeper"}, {"max_layers": 6}])
def test_supersuit_refuses_a_varying_agent_set(kwargs):
    vec_env = _supersuit()
    with pytest.raises(ValueError, match="fixed slot"):
        vec_env(2, **kwargs, **SMALL)


def test_supersuit_vec_env_steps():
    vec_env = _supersuit()
    venv = vec_env(2, population=2, **SMALL)
    assert venv.num_envs == 2 * 2 * 4
    venv.seed(0)
    obs = venv.reset()
    assert obs.shape == (16, NUM_FEATURES)
    for step in range(SMALL["max_cycles"]):
        obs, rewards, dones, infos = venv.step(np.full(16, 2))
        assert obs.shape == (16, NUM_FEATURES) and np.isfinite(rewards).all()
        assert dones.all() == (step == SMALL["max_cycles"] - 1)
    assert all(math.isfinite(info["test_loss"]) for info in infos)
    seeds = [c.seed for e in venv.venv.vec_envs for c in e.par_env.unwrapped.episode_conditions]
    assert len(set(seeds)) == 4  # copies' networks never share a seed
    venv.close()


def test_sb3_ppo_learns():
    vec_env = _supersuit()
    from stable_baselines3 import PPO

    venv = vec_env(1, **SMALL)
    model = PPO("MlpPolicy", venv, n_steps=10, batch_size=20, n_epochs=2, seed=0, device="cpu")
    model.learn(total_timesteps=80)
    assert model.num_timesteps == 80
    assert math.isfinite(model.logger.name_to_value["train/loss"])
    venv.close()


# ------------------------------------------------------------------------------- skrl
def _skrl():
    pytest.importorskip("skrl")
    from ganno_env.integrations import skrl as glue

    return glue


def test_skrl_per_agent_config():
    glue = _skrl()
    agents = ["layer_0", "layer_1"]
    cfg = glue.mappo_cfg(agents, state_preprocessor_kwargs={"size": 24}, rollouts=4)
    assert cfg.state_preprocessor_kwargs == {a: {"size": 24} for a in agents}
    assert cfg.learning_rate_scheduler_kwargs == {a: {} for a in agents}
    assert cfg.rollouts == 4
    per = glue.ippo_cfg(agents, value_preprocessor_kwargs={a: {} for a in agents})
    assert per.value_preprocessor_kwargs == {a: {} for a in agents}
    with pytest.raises(ValueError, match="one entry per agent"):
        glue.mappo_cfg(agents, observation_preprocessor_kwargs={"layer_0": {}})


def test_skrl_refuses_a_varying_agent_set():
    glue = _skrl()
    with pytest.raises(ValueError, match="every possible agent"):
        glue.make_skrl_env(conditions="deeper", **SMALL)


def test_skrl_mappo_trains_with_a_state_critic(tmp_path):
    glue = _skrl()
    from skrl.memories.torch import RandomMemory
    from skrl.models.torch import CategoricalMixin, DeterministicMixin, Model
    from skrl.multi_agents.torch.mappo import MAPPO
    from skrl.trainers.torch import SequentialTrainer

    class Policy(CategoricalMixin, Model):
        def __init__(self, observation_space, state_space, action_space, device):
            Model.__init__(
                self,
                observation_space=observation_space,
                state_space=state_space,
                action_space=action_space,
                device=device,
            )
            CategoricalMixin.__init__(self)
            self.net = torch.nn.Linear(self.num_observations, self.num_actions)

        def compute(self, inputs, role=""):
            return self.net(inputs["observations"]), {}

    class Critic(DeterministicMixin, Model):
        def __init__(self, observation_space, state_space, action_space, device):
            Model.__init__(
                self,
                observation_space=observation_space,
                state_space=state_space,
                action_space=action_space,
                device=device,
            )
            DeterministicMixin.__init__(self)
            self.net = torch.nn.Linear(self.num_states, 1)
            self.state_sizes = []

        def compute(self, inputs, role=""):
            self.state_sizes.append(inputs["states"].shape[-1])
            return self.net(inputs["states"]), {}

    torch.manual_seed(0)
    env = glue.make_skrl_env(**SMALL)
    agents = env.possible_agents
    spaces = [(env.observation_space(a), env.state_space(a), env.action_space(a)) for a in agents]
    models = {
        a: {"policy": Policy(*s, env.device), "value": Critic(*s, env.device)}
        for a, s in zip(agents, spaces)
    }
    cfg = glue.mappo_cfg(agents, rollouts=5, learning_epochs=2, mini_batches=1)
    cfg.experiment.directory = str(tmp_path)
    cfg.experiment.write_interval = 0
    cfg.experiment.checkpoint_interval = 0
    memories = {a: RandomMemory(memory_size=5, num_envs=env.num_envs) for a in agents}
    mappo = MAPPO(
        possible_agents=agents,
        models=models,
        memories=memories,
        observation_spaces=env.observation_spaces,
        state_spaces=env.state_spaces,
        action_spaces=env.action_spaces,
        device=env.device,
        cfg=cfg,
    )
    trainer_cfg = {
        "timesteps": 10,
        "headless": True,
        "disable_progressbar": True,
        "close_environment_at_exit": False,  # its atexit hook logs after pytest closed stdout
    }
    SequentialTrainer(env=env, agents=mappo, cfg=trainer_cfg).train()
    assert set(models["layer_0"]["value"].state_sizes) == {NUM_FEATURES * 4}
    losses = [v for k, vs in mappo.tracking_data.items() if k.startswith("Loss") for v in vs]
    assert len(losses) == 2 * 2 * len(agents)  # 2 updates x (policy, value) x agents
    assert all(math.isfinite(x) for x in losses)
    env.close()


# ------------------------------------------------------------------------ docs' examples
def doc_script(page, name):
    """The example `name` of docs/`page` (the python block starting `# name`)."""
    text = (ROOT / "docs" / page).read_text()
    return re.search(rf"```python\n(# {re.escape(name)}.*?)```", text, re.S).group(1)


@pytest.mark.slow
@pytest.mark.parametrize(
    "page, name, library, printed",
    [
        ("torchrl.md", "torchrl_demo.py", "torchrl", "iteration 2: loss"),
        ("supersuit.md", "sb3_demo.py", "stable_baselines3", "held-out start"),
        ("skrl.md", "skrl_demo.py", "skrl", "test accuracy"),
    ],
)
def test_doc_example_runs(tmp_path, monkeypatch, capsys, page, name, library, printed):
    """Each page's example, run in this process (the libraries are imported already)."""
    pytest.importorskip(library)
    (tmp_path / name).write_text(doc_script(page, name))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(atexit, "register", lambda hook: hook)  # skrl's env-closing hook
    runpy.run_path(str(tmp_path / name), run_name="__main__")
    assert printed in capsys.readouterr().out


# ----------------------------------------------------------------------------- BenchMARL
@pytest.mark.slow
def test_benchmarl_doc_script(tmp_path):
    python = os.environ.get("GANNO_BENCHMARL_PYTHON")
    if not python:
        pytest.skip(
            "BenchMARL pins torchrl<0.12, so it has its own environment (docs/benchmarl.md); "
            "set GANNO_BENCHMARL_PYTHON to that environment's python to run this test"
        )
    (tmp_path / "benchmarl_demo.py").write_text(doc_script("benchmarl.md", "benchmarl_demo.py"))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [python, "benchmarl_demo.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "iterations 3" in result.stdout, result.stdout
