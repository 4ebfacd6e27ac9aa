"""The env as a SuperSuit vector env of single agents, e.g. for Stable-Baselines3.

`pip install 'ganno[sb3]'` (SuperSuit and Stable-Baselines3); see docs/supersuit.md.

SuperSuit's `pettingzoo_env_to_vec_env_v1` turns each of `possible_agents` into one slot of
a vector env, so one single-agent learner (a shared policy) trains every layer, and
`concat_vec_envs_v1` stacks `num_envs` copies of the env. That needs:

* a fixed agent set: every episode has all of `possible_agents`. Conditions that give
  networks of different depths (`"deeper"`), or a `max_layers` above the networks' depth,
  raise ValueError here; use TorchRL (`use_mask`) or RLlib for those.
* agents that end together: with population > 1, when one network diverges the other
  networks' agents are truncated at the same step (`FixedAgentSet`), and the population
  starts a new episode.
* identical spaces for all agents, which this env has.

Seeds: SuperSuit resets copy i with seed s + i; each copy multiplies its seed by
`population`, so all copies' networks get distinct seeds.
"""

from __future__ import annotations

from typing import Any

from ganno_env import layerwise_lr_v1
from ganno_env.integrations._common import FixedAgentSet, require, varying_agents


def vec_env(
    num_envs: int = 1,
    *,
    num_cpus: int = 0,
    base_class: str = "stable_baselines3",
    **env_kwargs: Any,
):
    """`num_envs` copies of `layerwise_lr_v1.parallel_env(**env_kwargs)`, one slot per agent.

    The result has `num_envs * len(possible_agents)` slots. `base_class`: as SuperSuit's
    `concat_vec_envs_v1`: `"stable_baselines3"` (an SB3 `VecEnv`) or `"gymnasium"`.
    `num_cpus` > 1 runs the copies in that many processes.
    """
    supersuit = require("supersuit", "sb3", "ganno_env.integrations.supersuit")
    if base_class == "stable_baselines3":
        require("stable_baselines3", "sb3", "vec_env(base_class='stable_baselines3')")
    if num_envs < 1:
        raise ValueError(f"num_envs={num_envs!r}; allowed: an int >= 1")
    env = layerwise_lr_v1.parallel_env(**env_kwargs)
    reason = varying_agents(env)
    if reason is not None:
        raise ValueError(
            f"SuperSuit's vector env gives each of possible_agents a fixed slot and needs all "
            f"of them in every episode, but {reason}: allowed: conditions of one depth (e.g. "
            "'train', 'unseen_lr', 'wider', 'cnn') with max_layers at its default; for "
            "varying depth use ganno_env.integrations.torchrl (use_mask) or RLlib"
        )
    fixed = FixedAgentSet(env, seed_stride=env.unwrapped.config.population)
    markov = supersuit.pettingzoo_env_to_vec_env_v1(fixed)
    if base_class != "stable_baselines3":
        return supersuit.concat_vec_envs_v1(
            markov, num_envs, num_cpus=num_cpus, base_class=base_class
        )
    concat = supersuit.concat_vec_envs_v1(markov, num_envs, num_cpus=num_cpus)
    return _seedable_sb3(concat)


def _seedable_sb3(venv):
    """SuperSuit's SB3 wrapper, with the `seed()` that `PPO(..., seed=...)` calls.

    SuperSuit 3.11's wrapper forwards `seed()` to its vector env, which has none, and its
    `reset(seed)` drops the seed; here `seed(s)` seeds the next reset, as SB3's own do.
    `get_attr("render_mode")` answers too, so SB3's `VecMonitor` does not warn.
    """
    from supersuit.vector.sb3_vector_wrapper import SB3VecEnvWrapper

    class SeedableSB3VecEnv(SB3VecEnvWrapper):
        _next_seed: int | None = None

        def seed(self, seed: int | None = None) -> list[int | None]:
            self._next_seed = seed
            return [None if seed is None else seed + i for i in range(self.num_envs)]

        def reset(self, seed: int | None = None, options: dict | None = None):
            if seed is not None:
                self._next_seed = seed
            seed, self._next_seed = self._next_seed, None
            observations, self.reset_infos = self.venv.reset(seed=seed, options=options)
            return observations

        def get_attr(self, attr_name: str, indices=None) -> list:
            if attr_name == "render_mode":  # SuperSuit's vector env has no get_attr
                return [self.render_mode] * self.num_envs
            return super().get_attr(attr_name, indices)

    return SeedableSB3VecEnv(venv)
