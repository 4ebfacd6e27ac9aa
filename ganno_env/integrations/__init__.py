"""Glue for training GANNO's agents with other multi-agent RL libraries.

One module per library; none is imported by `import ganno_env`, and each needs its
library only when used (a missing one raises ImportError naming the extra to install):

* `ganno_env.integrations.torchrl`: `make_torchrl_env(...)`, a TorchRL `PettingZooWrapper`
  with the mask, group map and info keys this env needs (extra `torchrl`).
* `ganno_env.integrations.supersuit`: `vec_env(num_envs, ...)`, a SuperSuit vector env of
  single agents for Stable-Baselines3 (extra `sb3`); fixed-depth conditions only.
* `ganno_env.integrations.skrl`: `make_skrl_env(...)` and `mappo_cfg(...)` /
  `ippo_cfg(...)`, per-agent configs that skrl's multi-agent algorithms accept (extra `skrl`).
* `ganno_env.integrations.benchmarl`: `GannoTask`, a BenchMARL task (extra `benchmarl`,
  in its own environment: BenchMARL pins an older TorchRL).

The docs/ folder has one page per library with a training example.
"""
