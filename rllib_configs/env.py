"""The GANNO env as an RLlib MultiAgentEnv.

RLlib's stock `ParallelPettingZooEnv` reads agents and spaces from the first episode only
(a deeper network later is a KeyError) and does not set `__all__` when some agents
terminate and the rest truncate. This subclass takes `possible_agents` and the spaces from
the PettingZoo env, and ends the episode exactly when the PettingZoo env has no agents
left. It is an importable class built from the env-config dict, so a checkpoint restores
in a fresh process without `register_env`.

`MixedDepthEnv` trains on networks of several depths under fixed agent ids (RLlib cannot
take agent ids that come and go between sampling rounds). `NetworkViewEnv` adds the whole
network's observations to each agent's, for a centralised critic.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
from ray.rllib.env.multi_agent_env import MultiAgentEnv
from ray.rllib.env.wrappers.pettingzoo_env import ParallelPettingZooEnv

from ganno_env import get_task, layerwise_lr_v1
from ganno_env.conditions import HELD_OUT_SEED_START
from ganno_env.policy import parse_agent


class GannoMultiAgentEnv(ParallelPettingZooEnv):
    """`layerwise_lr_v1.parallel_env(**config)` for RLlib."""

    def __init__(self, config: dict[str, Any] | None = None):
        # MultiAgentEnv.__init__ only; the stock wrapper would reset the env here
        super(ParallelPettingZooEnv, self).__init__()
        config = dict(config or {})
        # RLlib merges the evaluation env_config into the training one: a plain evaluation
        # env next to a MixedDepthEnv gets agents_per_env=None
        if config.pop("agents_per_env", None) is not None:
            raise ValueError("agents_per_env is a MixedDepthEnv setting; allowed here: None")
        self.par_env = layerwise_lr_v1.parallel_env(**config)
        self.possible_agents = list(self.par_env.possible_agents)
        self.agents = []
        self._agent_ids = set(self.possible_agents)
        self.observation_spaces = {
            a: self.par_env.observation_space(a) for a in self.possible_agents
        }
        self.action_spaces = {a: self.par_env.action_space(a) for a in self.possible_agents}
        self.observation_space = gym.spaces.Dict(self.observation_spaces)
        self.action_space = gym.spaces.Dict(self.action_spaces)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, infos = self.par_env.reset(seed=seed, options=options)
        self.agents = list(self.par_env.agents)
        return obs, infos

    def step(self, action_dict: dict):
        obs, rewards, terminateds, truncateds, infos = self.par_env.step(action_dict)
        # agents that finish now still get this last observation; they leave next step
        self.agents = list(obs)
        set_episode_end(terminateds, truncateds, over=not self.par_env.agents)
        return obs, rewards, terminateds, truncateds, infos


class NetworkViewEnv(GannoMultiAgentEnv):
    """Each agent observes its own layer, then every layer of its network (MAPPO style).

    The reward is shared by a network's layers, so a critic that sees one layer cannot tell
    what the other layers chose; a critic over the whole network can. The actor reads only
    the first `local_size` features (the env's own observation), so the trained policy
    runs on the plain env and in the scheduler. Layout: own features, then layer 0 to
    layer `max_layers - 1` of the same network (zeros where a network has fewer layers).
    """

    def __init__(self, config: dict[str, Any] | None = None):
        super().__init__(config)
        space = self.par_env.observation_space(self.possible_agents[0])
        self.local_size = int(space.shape[0])
        self.max_layers = int(self.par_env.max_layers)
        low = np.tile(space.low, 1 + self.max_layers)
        high = np.tile(space.high, 1 + self.max_layers)
        self._fill = np.clip(np.zeros_like(space.low), space.low, space.high)
        view = gym.spaces.Box(low, high, dtype=np.float32)
        self.observation_spaces = {a: view for a in self.possible_agents}
        self.observation_space = gym.spaces.Dict(self.observation_spaces)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, infos = super().reset(seed=seed, options=options)
        return self.with_network_view(obs), infos

    def step(self, action_dict: dict):
        obs, rewards, terminateds, truncateds, infos = super().step(action_dict)
        return self.with_network_view(obs), rewards, terminateds, truncateds, infos

    def with_network_view(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each agent's observation followed by its network's layers' observations."""
        networks: dict[int, np.ndarray] = {}
        for agent, features in obs.items():
            network, layer = parse_agent(agent)
            if network not in networks:
                networks[network] = np.tile(self._fill, (self.max_layers, 1))
            networks[network][layer] = features
        return {
            agent: np.concatenate([features, networks[parse_agent(agent)[0]].ravel()])
            for agent, features in obs.items()
        }


def set_episode_end(terminateds: dict, truncateds: dict, over: bool) -> None:
    """RLlib's `__all__` flags: the episode is over when the PettingZoo env has no agents
    left; it terminated if every agent did, else it was truncated."""
    everyone_terminated = over and all(terminateds.values())
    terminateds["__all__"] = everyone_terminated
    truncateds["__all__"] = over and not everyone_terminated


class MixedDepthEnv(MultiAgentEnv):
    """Networks of several depths for RLlib, under the same agent ids in every episode.

    RLlib 2.60 sums its per-agent step counters after each sampling round; an agent id that
    was seen before but has no step in this round reads NaN there, and training stops with
    "cannot convert float NaN to integer". Episodes of networks of different depths have
    different agent ids, so depth could not vary in training. Here each depth the
    conditions can draw has its own env, whose population makes `agents_per_env` agents
    (population x layers) at every depth, and RLlib sees `agent_0 ... agent_{K-1}`: the
    episode's agents in the env's order (network by network, input layer first). Each
    episode draws its depth uniformly from the conditions' `depth` choice.

    Config: the env's keyword arguments plus `agents_per_env`; `population` is set per
    depth (one given is ignored here, and used by the held-in validation).
    """

    def __init__(self, config: dict[str, Any] | None = None):
        super().__init__()
        config = dict(config or {})
        agents = config.pop("agents_per_env", None)
        config.pop("population", None)
        probe = layerwise_lr_v1.parallel_env(**config)
        self.populations = depth_populations(probe, agents)
        self._envs = {
            depth: layerwise_lr_v1.parallel_env(**config, population=population)
            for depth, population in self.populations.items()
        }
        self.par_env = self._envs[min(self._envs)]  # the current episode's (alike settings)
        self.possible_agents = [f"agent_{k}" for k in range(agents)]
        self.agents = []
        self._agent_ids = set(self.possible_agents)
        obs_space = self.par_env.observation_space(self.par_env.possible_agents[0])
        action_space = self.par_env.action_space(self.par_env.possible_agents[0])
        self.observation_spaces = {a: obs_space for a in self.possible_agents}
        self.action_spaces = {a: action_space for a in self.possible_agents}
        self.observation_space = gym.spaces.Dict(self.observation_spaces)
        self.action_space = gym.spaces.Dict(self.action_spaces)
        self._rng = np.random.default_rng()
        self._inner: dict[str, str] = {}  # agent_k -> the env's own agent id

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        depth = int(self._rng.choice(sorted(self._envs)))
        self.par_env = self._envs[depth]
        if seed is None:  # drawn here, so one seed fixes every episode's networks
            population = self.populations[depth]  # below the held-out seeds, as the env's own
            seed = int(self._rng.integers(max(HELD_OUT_SEED_START - population, 1)))
        obs, infos = self.par_env.reset(seed=seed, options={**(options or {}), "depth": depth})
        self._inner = dict(zip(self.possible_agents, self.par_env.agents))
        self._outer = {inner: outer for outer, inner in self._inner.items()}
        self.agents = list(self.possible_agents)
        return self._rename(obs), self._rename(infos)

    def step(self, action_dict: dict):
        actions = {self._inner[agent]: action for agent, action in action_dict.items()}
        obs, rewards, terminateds, truncateds, infos = self.par_env.step(actions)
        obs, rewards, infos = self._rename(obs), self._rename(rewards), self._rename(infos)
        terminateds, truncateds = self._rename(terminateds), self._rename(truncateds)
        self.agents = list(obs)
        set_episode_end(terminateds, truncateds, over=not self.par_env.agents)
        return obs, rewards, terminateds, truncateds, infos

    def _rename(self, per_agent: dict) -> dict:
        return {self._outer[agent]: value for agent, value in per_agent.items()}


def check_fixed_agents(env: Any) -> None:
    """RLlib 2.60 stops mid-run ("cannot convert float NaN to integer") when agent ids
    come and go between episodes; refuse such conditions before any work starts."""
    counts = list(env.layer_counts)  # the env's own count, custom tasks' models included
    if len(counts) > 1:
        raise ValueError(
            f"conditions {env.condition.name!r} draw networks of {counts} layers, so the agent "
            f"ids change between episodes, which RLlib cannot train on; allowed: conditions "
            f"of one layer count, or agents_per_env (`ganno train --agents-per-env K`, K a "
            f"multiple of {math.lcm(*counts)})"
        )


def depth_populations(env: Any, agents_per_env: Any) -> dict[int, int]:
    """Depth -> population such that every depth has `agents_per_env` agents; ValueError,
    naming the values, where a depth's layer count does not divide it."""
    if not isinstance(agents_per_env, int) or isinstance(agents_per_env, bool):
        raise ValueError(f"agents_per_env={agents_per_env!r}; allowed: a positive int")
    depths = env.condition.values_of("depth")
    tasks = env.condition.values_of("task")
    spec = env.condition.specs.get("depth")
    if not (isinstance(spec, dict) and "choice" in spec) or len(tasks) > 1:
        raise ValueError(
            f"agents_per_env needs conditions with a depth choice and one task; "
            f"{env.condition.name!r} has depth {spec!r} and task {tasks or 'the default'}"
        )
    populations = {}
    for depth in depths:
        layers = get_task(env.config.task).num_layers(depth)
        if agents_per_env <= 0 or agents_per_env % layers:
            raise ValueError(
                f"agents_per_env={agents_per_env} is not a multiple of {layers}, the layers "
                f"of a depth-{depth} network ({env.condition.name!r} draws depths {depths}); "
                f"allowed: a common multiple of the layer counts"
            )
        populations[int(depth)] = agents_per_env // layers
    return populations
