"""Version 2 of the layerwise learning-rate env: agents set more than the learning rate.

The env of `ganno_env.layerwise_lr` with `controls=("lr", "momentum")` unless told
otherwise (any `controls` from `ganno_env.knobs` work, e.g. `("lr", "weight_decay")`): each
layer's agent sets its LR and its momentum, with a MultiDiscrete action (one factor per knob)
or a Box(K) one, and sees features v2 plus two columns per knob after the LR (see the
Version History there). With `controls=("lr",)` it is the v1 env, and says so in
`metadata["name"]`. PettingZoo's factories: `parallel_env` (class `LayerwiseLREnv`), `env`
(AEC, wrapped) and `raw_env` (AEC, no wrappers).
"""

from __future__ import annotations

from typing import Any

from ganno_env import layerwise_lr

CONTROLS = ("lr", "momentum")


class LayerwiseLREnv(layerwise_lr.LayerwiseLREnv):
    """`layerwise_lr.LayerwiseLREnv` whose agents set the LR and momentum unless told otherwise."""

    metadata = {**layerwise_lr.LayerwiseLREnv.metadata, "name": "layerwise_lr_v2"}

    def __init__(self, **kwargs: Any):
        super().__init__(**{"controls": CONTROLS, **kwargs})


parallel_env, raw_env, env = layerwise_lr.factories(LayerwiseLREnv)

__all__ = ["CONTROLS", "LayerwiseLREnv", "env", "parallel_env", "raw_env"]
