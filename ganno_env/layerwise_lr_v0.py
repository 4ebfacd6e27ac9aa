"""Version 0 of the layerwise learning-rate env: observation features v1 (12 numbers).

Kept for policies trained on it: the env of `ganno_env.layerwise_lr` with
`features_version=1`, so its observations are exactly those of the original release (see
the Version History there). New work uses `ganno_env.layerwise_lr_v1`. PettingZoo's
factories: `parallel_env` (class `LayerwiseLREnv`), `env` (AEC, wrapped) and `raw_env`
(AEC, no wrappers).
"""

from __future__ import annotations

from typing import Any

from ganno_env import layerwise_lr

FEATURES_VERSION = 1


class LayerwiseLREnv(layerwise_lr.LayerwiseLREnv):
    """`layerwise_lr.LayerwiseLREnv` with observation features v1 unless told otherwise."""

    metadata = {**layerwise_lr.LayerwiseLREnv.metadata, "name": "layerwise_lr_v0"}

    def __init__(self, **kwargs: Any):
        super().__init__(**{"features_version": FEATURES_VERSION, **kwargs})


parallel_env, raw_env, env = layerwise_lr.factories(LayerwiseLREnv)

__all__ = ["LayerwiseLREnv", "env", "parallel_env", "raw_env"]
