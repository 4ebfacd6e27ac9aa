"""The env as a TorchRL env (`pip install 'ganno[torchrl]'`; see docs/torchrl.md).

`make_torchrl_env(**env_kwargs)` wraps `layerwise_lr_v1.parallel_env(**env_kwargs)` in
TorchRL's `PettingZooWrapper` with what this env needs:

* all agents in one group, `"agents"` (their spaces are identical, so one policy can serve
  every layer of every network), unless `group_map` says otherwise;
* `use_mask=True` and `done_on_any=False` when the conditions can give networks
  shallower than `max_layers` (e.g. `conditions="deeper"`): `("agents", "mask")` is False
  for layers the episode's network lacks (and for networks whose episode has ended), and
  losses should ignore them; the episode ends when every agent is done (TorchRL counts
  absent agents as done, so ending on any would end such episodes after one step);
* infos with one key set: `("agents", "info", key)` for the keys of
  `ganno_env.integrations._common.INFO_KEYS`; `test_loss` and `test_accuracy` are NaN
  except at the last step of a network's episode;
* the global `state` (`return_state=True`) and integer actions (`categorical_actions`).

With a fixed depth, as TorchRL does for any parallel env, the episode ends when any agent is
done (`done_on_any=True`, no mask): with population > 1, one diverging network ends the
whole population's episode. `done_on_any=False` keeps the other networks training, and
turns the mask on.
"""

from __future__ import annotations

import warnings
from typing import Any

from pettingzoo import ParallelEnv

from ganno_env.integrations._common import PaddedInfos, env_or_new, require, varying_agents

GROUP = "agents"


def make_torchrl_env(
    env: ParallelEnv | None = None,
    *,
    group_map: dict[str, list[str]] | None = None,
    use_mask: bool | None = None,
    done_on_any: bool | None = None,
    categorical_actions: bool = True,
    return_state: bool = True,
    seed: int | None = None,
    wrapper_kwargs: dict[str, Any] | None = None,
    **env_kwargs: Any,
):
    """A `torchrl.envs.PettingZooWrapper` around a GANNO parallel env.

    env: an existing `layerwise_lr_v1.parallel_env(...)`; else one is made from
        `env_kwargs` (task, conditions, population, max_cycles, ...).
    group_map: TorchRL groups, e.g. one per network: `{f"net{i}": [...]}`; default: all
        agents in one group `"agents"`.
    use_mask, done_on_any: default: `use_mask=True, done_on_any=False` when an episode can
        lack some of `possible_agents` (other values then raise ValueError), else TorchRL's
        `done_on_any=True` without mask; `done_on_any=False` always needs the mask.
    wrapper_kwargs: any other `PettingZooWrapper` argument (e.g. TorchRL's `device`).
    """
    require("torchrl", "torchrl", "ganno_env.integrations.torchrl")
    from torchrl.envs import PettingZooWrapper

    env = env_or_new(env, env_kwargs)
    reason = varying_agents(env)
    if reason is not None:
        # TorchRL counts absent agents as done: ending on any would end every episode of a
        # network shallower than max_layers after its first step.
        if done_on_any:
            raise ValueError(
                f"done_on_any=True, but {reason}: TorchRL counts absent agents as done, so "
                "such episodes would end after one step: allowed: done_on_any=False (or None)"
            )
        done_on_any = False
    needs_mask = done_on_any is False
    if use_mask is None:
        use_mask = needs_mask
    elif not use_mask and needs_mask:
        why = reason or "done_on_any=False lets a finished network's agents leave early"
        raise ValueError(f"use_mask=False, but {why}: allowed: use_mask=True (or None)")
    if group_map is None:
        group_map = {GROUP: list(env.possible_agents)}
    with warnings.catch_warnings():  # TorchRL's notice that it was tested with PettingZoo 1.24
        warnings.filterwarnings("ignore", message="PettingZoo in TorchRL is tested")
        return PettingZooWrapper(
            env=PaddedInfos(env),
            return_state=return_state,
            group_map=group_map,
            use_mask=use_mask,
            categorical_actions=categorical_actions,
            seed=seed,
            done_on_any=done_on_any,
            **(wrapper_kwargs or {}),
        )
