"""RLlib (new API stack) configs for training GANNO agents: the env wrapper, the policy
module, the presets and the training loop. The submodules import Ray; this package itself
does not, so the CLI can list the preset names without it."""

PRESET_NAMES = ("smoke", "local", "full", "cluster_gpu")  # one function each in ppo.py
CRITICS = ("local", "network")  # what the critic sees: the agent's layer, or its network's


class NoSamplesError(RuntimeError):
    """An iteration sampled nothing: RLlib carries on when every env runner fails.

    Defined here, without Ray, so that `ganno` can report it in one line."""
