"""RLlib (new API stack) configs for training GANNO agents: the env wrapper, the policy
module, the presets and the training loop. The submodules import Ray; this package itself
does not, so the CLI can list the preset names without it."""

PRESET_NAMES = ("smoke", "local", "full", "cluster_gpu")  # one function each in ppo.py
