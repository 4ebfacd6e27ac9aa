"""What the library glue shares: library checks, agent-set checks and two env wrappers.

* `FixedAgentSet`: every episode has all of `possible_agents`, and they all end at the same
  step (for libraries that stack agents into fixed arrays: SuperSuit, skrl).
* `PaddedInfos`: every info has the same keys, and reset gives an observation and an info
  to every possible agent (for TorchRL, whose specs come from the first reset's infos).

Both run the env under `torch.enable_grad()`: TorchRL's collectors and skrl's trainers step
envs inside `torch.no_grad()`, where the inner training's `autograd.grad` would fail.
"""

from __future__ import annotations

import importlib
import math
from types import ModuleType
from typing import Any

import numpy as np
import torch
from pettingzoo import ParallelEnv
from pettingzoo.utils.wrappers import BaseParallelWrapper

# Info keys of every step after `PaddedInfos`; the test metrics are NaN until measured.
INFO_KEYS = (
    "lr",
    "train_loss",
    "val_loss",
    "diverged",
    "network",
    "layer",
    "inner_steps",
    "test_loss",
    "test_accuracy",
)
UNMEASURED = ("test_loss", "test_accuracy")


def require(module: str, extra: str, user: str) -> ModuleType:
    """Import `module`, or raise ImportError saying which extra of ganno installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"{user} needs the Python package {module!r}, which is not installed here: "
            f"pip install 'ganno[{extra}]' (add -c constraints.txt for the tested versions)"
        ) from error


def env_or_new(env: ParallelEnv | None, env_kwargs: dict[str, Any]) -> ParallelEnv:
    """The env the caller passed, or a new one from keyword arguments (not both)."""
    if env is None:
        from ganno_env import layerwise_lr_v1

        return layerwise_lr_v1.parallel_env(**env_kwargs)
    if env_kwargs:
        raise ValueError(f"env given together with env arguments {sorted(env_kwargs)}")
    return env


def layer_counts(env: ParallelEnv) -> list[int]:
    """The layer counts (agents per network) that the env's conditions can produce."""
    return list(env.unwrapped.layer_counts)


def varying_agents(env: ParallelEnv) -> str | None:
    """Why an episode may lack some of `possible_agents`, or None when it never does."""
    raw = env.unwrapped
    counts = layer_counts(env)
    name = raw.condition.name
    if len(counts) > 1:
        return (
            f"conditions={name!r} give networks of {counts} layers, so the agent set "
            f"changes between episodes (possible_agents covers {raw.max_layers} per network)"
        )
    if raw.max_layers > counts[0]:
        return (
            f"max_layers={raw.max_layers} but conditions={name!r} give networks of "
            f"{counts[0]} layers, so agents layer_{counts[0]}..layer_{raw.max_layers - 1} "
            "never act"
        )
    return None


class FixedAgentSet(BaseParallelWrapper):
    """All possible agents in every episode; they all end together.

    A reset whose network lacks some of `possible_agents` (a `depth` reset option, say)
    raises ValueError. With population > 1, when one network's episode ends early
    (divergence), the other networks' agents are truncated at the same step, so the whole
    population starts a new episode: like TorchRL's `done_on_any`. `seed_stride` multiplies
    reset seeds, so copies of a population env seeded s, s+1, ... (SuperSuit's
    `concat_vec_envs_v1` does so) train distinct networks: `seed_stride=population`.
    """

    def __init__(self, env: ParallelEnv, seed_stride: int = 1):
        super().__init__(env)
        self.possible_agents = list(env.possible_agents)
        self.agents: list[str] = []
        self.metadata = env.metadata
        self.render_mode = env.unwrapped.render_mode
        self.seed_stride = seed_stride

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
        if seed is not None:
            seed = int(seed) * self.seed_stride
        with torch.enable_grad():  # libraries step envs under torch.no_grad()
            observations, infos = self.env.reset(seed=seed, options=options)
        if list(self.env.agents) != self.possible_agents:
            missing = [a for a in self.possible_agents if a not in self.env.agents]
            raise ValueError(
                f"this episode's networks lack agents {missing}; a fixed agent set (SuperSuit, "
                "skrl) needs networks of max_layers layers in every episode: allowed: "
                "conditions and reset options of one depth, max_layers left at its default"
            )
        self.agents = list(self.env.agents)
        return observations, infos

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        if not self.agents:
            raise RuntimeError("step() called before reset() or after the episode ended")
        with torch.enable_grad():
            observations, rewards, terminations, truncations, infos = self.env.step(actions)
        if any(terminations[a] or truncations[a] for a in observations):
            for agent in observations:  # the rest of the population ends with them
                truncations[agent] = truncations[agent] or not terminations[agent]
            self.agents = []
            self.env.unwrapped.agents = []  # for libraries that read the raw env's agents
        return observations, rewards, terminations, truncations, infos

    def state(self) -> np.ndarray:
        state = self.env.state()
        return state if self.agents else np.zeros_like(state)


class PaddedInfos(BaseParallelWrapper):
    """Infos with the keys of `INFO_KEYS` (and of the knobs after the LR, when the agents set
    more) at every step; reset pads absent agents.

    `test_loss` and `test_accuracy` are NaN except at the last step of a network's episode
    (and `test_accuracy` stays NaN on regression tasks). At reset, possible agents absent
    from the episode (shallower networks) get a zero observation and an info of zeros, so a
    library can build fixed-size arrays; `agents` still lists only the live ones, and
    actions for absent agents are dropped.
    """

    def __init__(self, env: ParallelEnv):
        super().__init__(env)
        self.possible_agents = list(env.possible_agents)
        self._possible = set(self.possible_agents)
        self.metadata = env.metadata
        self.render_mode = env.unwrapped.render_mode

    @property
    def agents(self) -> list[str]:
        return self.env.agents

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
        with torch.enable_grad():  # libraries step envs under torch.no_grad()
            observations, infos = self.env.reset(seed=seed, options=options)
        index = self.env.unwrapped.agent_index
        for agent in self.possible_agents:
            if agent not in observations:
                observations[agent] = np.zeros_like(self.observation_space(agent).low)
                network, layer = index[agent]
                infos[agent] = {"network": network, "layer": layer}
        return observations, {a: self._padded(info) for a, info in infos.items()}

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        live = set(self.env.agents)  # libraries send actions for absent agents too: drop them
        actions = {a: x for a, x in actions.items() if a in live or a not in self._possible}
        with torch.enable_grad():
            observations, rewards, terminations, truncations, infos = self.env.step(actions)
        infos = {a: self._padded(info) for a, info in infos.items()}
        return observations, rewards, terminations, truncations, infos

    def _padded(self, info: dict[str, Any]) -> dict[str, Any]:
        padded = {}
        knobs = [knob.name for knob in self.env.unwrapped.knobs[1:]]  # e.g. "momentum"
        for key in (*INFO_KEYS, *knobs):
            default = math.nan if key in UNMEASURED else 0
            value = info.get(key, default)
            padded[key] = float(value) if key != "diverged" else bool(value)
        return padded
