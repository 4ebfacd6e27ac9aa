"""Version 0 of the layerwise learning-rate env: observation features v1 (12 numbers).

Kept for policies trained on it: the env of `ganno_env.layerwise_lr` with
`features_version=1`, so its observations are exactly those of the original release (see
the Version History there). New work uses `ganno_env.layerwise_lr_v1`.
"""

from __future__ import annotations

from typing import Any

from ganno_env import layerwise_lr

FEATURES_VERSION = 1


class raw_env(layerwise_lr.raw_env):
    """`layerwise_lr.raw_env` with observation features v1 unless told otherwise."""

    metadata = {**layerwise_lr.raw_env.metadata, "name": "layerwise_lr_v0"}

    def __init__(self, **kwargs: Any):
        super().__init__(**{"features_version": FEATURES_VERSION, **kwargs})


def parallel_env(**kwargs: Any) -> raw_env:
    """The v0 env with the PettingZoo Parallel API."""
    return raw_env(**kwargs)


def env(**kwargs: Any):
    """The v0 env with the PettingZoo AEC API (one agent acts at a time)."""
    return layerwise_lr.to_aec(raw_env(**kwargs))


__all__ = ["env", "parallel_env", "raw_env"]
