"""The GANNO env as an RLlib MultiAgentEnv.

RLlib's stock `ParallelPettingZooEnv` reads agents and spaces from the first episode only
(a deeper network later is a KeyError) and does not set `__all__` when some agents
terminate and the rest truncate. This subclass takes `possible_agents` and the spaces from
the PettingZoo env, and ends the episode exactly when the PettingZoo env has no agents
left. It is an importable class built from the env-config dict, so a checkpoint restores
in a fresh process without `register_env`.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
from ray.rllib.env.wrappers.pettingzoo_env import ParallelPettingZooEnv

from ganno_env import layerwise_lr_v1


class GannoMultiAgentEnv(ParallelPettingZooEnv):
    """`layerwise_lr_v1.parallel_env(**config)` for RLlib."""

    def __init__(self, config: dict[str, Any] | None = None):
        # MultiAgentEnv.__init__ only; the stock wrapper would reset the env here
        super(ParallelPettingZooEnv, self).__init__()
        self.par_env = layerwise_lr_v1.parallel_env(**dict(config or {}))
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
        over = not self.par_env.agents
        everyone_terminated = over and all(terminateds.values())
        terminateds["__all__"] = everyone_terminated
        truncateds["__all__"] = over and not everyone_terminated
        return obs, rewards, terminateds, truncateds, infos
