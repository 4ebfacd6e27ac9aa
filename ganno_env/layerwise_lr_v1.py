"""Version 1 of the layerwise learning-rate env (see `ganno_env.layerwise_lr`): scale-free
observation features v2 (13 numbers)."""

from ganno_env.layerwise_lr import LayerwiseLREnv, env, parallel_env, raw_env

__all__ = ["LayerwiseLREnv", "env", "parallel_env", "raw_env"]
