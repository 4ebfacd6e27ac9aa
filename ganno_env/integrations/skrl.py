"""The env for skrl's multi-agent algorithms (`pip install 'ganno[skrl]'`; see docs/skrl.md).

* `make_skrl_env(**env_kwargs)`: the env wrapped by skrl's `wrap_env(..., "pettingzoo")`,
  with a fixed agent set: skrl's MAPPO and IPPO act for every one of `possible_agents` at
  every step, so conditions whose depth varies raise ValueError; with population > 1 a
  diverging network ends the whole population's episode (see `FixedAgentSet`).
* `mappo_cfg(agents, **fields)` / `ippo_cfg(agents, **fields)`: the algorithm's config with
  every dict-valued field given per agent. skrl 2.1 expands a config per agent, but takes
  an empty dict (the default of each `*_kwargs` field) for a per-agent dict missing every
  agent: `MAPPO(cfg=MAPPO_CFG())` raises "Specified keys (set()) do not match possible
  agents". Here a dict keyed by every agent stays as it is; any other dict (keyword
  arguments, such as `state_preprocessor_kwargs={"size": 48}`) is copied to each agent.

The env's global state (`state_space`, all agents' observations) reaches skrl as
`state_spaces[agent]`, for MAPPO's centralised value function.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable
from typing import Any

from pettingzoo import ParallelEnv

from ganno_env.integrations._common import FixedAgentSet, env_or_new, require, varying_agents

# Fields skrl's expand() keeps as they are (not per agent).
SHARED_FIELDS = ("experiment", "mixed_precision", "rewards_shaper", "rollouts")


def make_skrl_env(env: ParallelEnv | None = None, **env_kwargs: Any):
    """skrl's PettingZoo wrapper around `layerwise_lr_v1.parallel_env(**env_kwargs)`."""
    require("skrl", "skrl", "ganno_env.integrations.skrl")
    from skrl.envs.wrappers.torch import wrap_env

    env = env_or_new(env, env_kwargs)
    reason = varying_agents(env)
    if reason is not None:
        raise ValueError(
            f"skrl's multi-agent algorithms act for every possible agent at every step, but "
            f"{reason}: allowed: conditions of one depth with max_layers at its default; for "
            "varying depth use ganno_env.integrations.torchrl (use_mask) or RLlib"
        )
    return wrap_env(FixedAgentSet(env), wrapper="pettingzoo")


def per_agent(cfg: Any, possible_agents: Iterable[str]) -> Any:
    """`cfg` (a skrl multi-agent config dataclass) with each dict field given per agent."""
    agents = list(possible_agents)
    names = set(agents)
    changes = {}
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        if field.name in SHARED_FIELDS or not isinstance(value, dict):
            continue
        keys = set(value)
        if keys >= names:
            continue
        if keys & names:
            raise ValueError(
                f"{field.name} has entries for agents {sorted(keys & names)} but not for "
                f"{sorted(names - keys)}: allowed: one entry per agent, or one value for all"
            )
        changes[field.name] = {uid: copy.deepcopy(value) for uid in agents}
    return dataclasses.replace(cfg, **changes)


def mappo_cfg(possible_agents: Iterable[str], **fields: Any):
    """A `MAPPO_CFG(**fields)` that skrl's MAPPO accepts for these agents."""
    require("skrl", "skrl", "ganno_env.integrations.skrl")
    from skrl.multi_agents.torch.mappo import MAPPO_CFG

    return per_agent(MAPPO_CFG(**fields), possible_agents)


def ippo_cfg(possible_agents: Iterable[str], **fields: Any):
    """An `IPPO_CFG(**fields)` that skrl's IPPO accepts for these agents."""
    require("skrl", "skrl", "ganno_env.integrations.skrl")
    from skrl.multi_agents.torch.ippo import IPPO_CFG

    return per_agent(IPPO_CFG(**fields), possible_agents)
