"""RLlib (new API stack) configs for training GANNO agents: the env wrapper, the policy
module, the presets and the training loop. Importing this package imports Ray."""
