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

`GannoScheduler` as a callback of a training framework (also importable from here, which
imports the framework only on first use):

* `ganno_env.integrations.lightning`: `GannoLightningCallback`, for PyTorch Lightning's
  `Trainer` (extra `lightning`).
* `ganno_env.integrations.hf`: `GannoTrainerCallback`, for the Hugging Face `Trainer`
  (extra `hf`).

The docs/ folder has one page per library with a training example.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"GannoLightningCallback": "lightning", "GannoTrainerCallback": "hf"}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    """Import a callback's module (and its framework) when the callback is first asked for."""
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
