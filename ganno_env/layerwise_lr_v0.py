"""Version 0 of the layerwise learning-rate env (see `ganno_env.layerwise_lr`)."""

from ganno_env.layerwise_lr import env, parallel_env, raw_env

__all__ = ["env", "parallel_env", "raw_env"]
