"""The RLlib policy module: `ganno_env.policy.PolicyNet` inside a TorchRLModule.

Holding the weights in a plain `PolicyNet` is what lets `policy.pt` run without Ray: the
export is that net's state dict, and the greedy action RLlib computes is the one
`ganno_env.load_policy` computes.

With `actor_obs_size` in the model config (`rllib_configs.env.NetworkViewEnv`), the
observation is longer than what the actor reads: the actor sees its first
`actor_obs_size` features, and a separate critic (`critic`) sees all of them. The export
is still the actor's `PolicyNet` (its own critic head is then unused and untrained).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import TorchMultiCategorical
from ray.rllib.core.rl_module.apis import ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from torch import nn

from ganno_env.policy import PolicyNet, mlp

DEFAULT_HIDDEN = (64, 64)


class GannoRLModule(TorchRLModule, ValueFunctionAPI):
    """Actor-critic MLP over one layer's observation (PPO), or a local actor and a critic
    over the whole network's observations.

    Actions: Discrete (the LR alone), MultiDiscrete (one categorical per knob) or Box (a
    diagonal Gaussian over the knobs)."""

    def setup(self) -> None:
        hidden = tuple(self.model_config.get("hidden", DEFAULT_HIDDEN))
        if isinstance(self.action_space, gym.spaces.Discrete):
            out_size = int(self.action_space.n)
        elif isinstance(self.action_space, gym.spaces.MultiDiscrete):  # one block per knob
            sizes = [int(n) for n in self.action_space.nvec]
            out_size = sum(sizes)
            self.action_dist_cls = TorchMultiCategorical.get_partial_dist_cls(input_lens=sizes)
        else:
            out_size = 2 * int(self.action_space.shape[0])  # diagonal Gaussian: mean, log-std
        obs_size = int(self.observation_space.shape[0])
        self.actor_obs_size = int(self.model_config.get("actor_obs_size") or obs_size)
        if not 0 < self.actor_obs_size <= obs_size:
            raise ValueError(
                f"actor_obs_size={self.actor_obs_size}; allowed: 1 to the observation's "
                f"{obs_size} features"
            )
        self.net = PolicyNet(self.actor_obs_size, out_size, hidden)
        self.critic = None
        if self.actor_obs_size < obs_size:
            self.critic = central_critic(obs_size, hidden)

    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        obs = batch[Columns.OBS][..., : self.actor_obs_size]
        return {Columns.ACTION_DIST_INPUTS: self.net(obs)}

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        if self.critic is None:
            return self.net.value(batch[Columns.OBS])
        return self.critic(batch[Columns.OBS]).squeeze(-1)


def central_critic(obs_size: int, hidden: tuple[int, ...]) -> nn.Sequential:
    """A value MLP of the same shape as `PolicyNet`'s critic, over a longer observation."""
    critic = mlp(obs_size, hidden, 1)
    with torch.no_grad():  # values near 0 at the start, as PolicyNet's
        critic[-1].weight.mul_(0.01)
    return critic
