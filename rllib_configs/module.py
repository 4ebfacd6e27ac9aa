"""The RLlib policy module: `ganno_env.policy.PolicyNet` inside a TorchRLModule.

Holding the weights in a plain `PolicyNet` is what lets `policy.pt` run without Ray: the
export is that net's state dict, and the greedy action RLlib computes is the one
`ganno_env.load_policy` computes.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import TorchMultiCategorical
from ray.rllib.core.rl_module.apis import ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule

from ganno_env.policy import PolicyNet

DEFAULT_HIDDEN = (64, 64)


class GannoRLModule(TorchRLModule, ValueFunctionAPI):
    """Actor-critic MLP over one layer's observation (PPO).

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
        self.net = PolicyNet(int(self.observation_space.shape[0]), out_size, hidden)

    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        return {Columns.ACTION_DIST_INPUTS: self.net(batch[Columns.OBS])}

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        return self.net.value(batch[Columns.OBS])
