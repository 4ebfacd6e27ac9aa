"""The networks that the agents train, and how their parameters split into layers.

A *layer* is one agent: a Linear or Conv module's weight and bias together. Any other
parameters (a LayerNorm after a Linear, say) join the layer they follow, and a parameter
shared by several layers (tied weights) belongs to the first one, so every parameter has
exactly one learning rate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class MLP(nn.Sequential):
    """Flatten, then `depth` hidden Linear+ReLU blocks of `width` units, then a Linear head."""

    def __init__(self, in_features: int, width: int, depth: int, num_outputs: int):
        blocks: list[nn.Module] = [nn.Flatten()]
        size = in_features
        for _ in range(depth):
            blocks += [nn.Linear(size, width), nn.ReLU()]
            size = width
        blocks.append(nn.Linear(size, num_outputs))
        super().__init__(*blocks)


class CNN(nn.Sequential):
    """`depth` 3x3 Conv+ReLU blocks of `width` channels, 2x2 average pooling, Linear head.

    Images larger than 8x8 are downsampled by stride 2 in each block, so the cost stays
    small on 28x28 and 32x32 inputs.
    """

    def __init__(self, input_shape: Sequence[int], width: int, depth: int, num_outputs: int):
        channels, height = input_shape[0], input_shape[1]
        blocks: list[nn.Module] = []
        for _ in range(depth):
            stride = 2 if height > 8 else 1
            blocks += [nn.Conv2d(channels, width, 3, stride=stride, padding=1), nn.ReLU()]
            channels, height = width, (height + 2 - 3) // stride + 1
        blocks += [nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * channels, num_outputs)]
        super().__init__(*blocks)


def layer_groups(module: nn.Module) -> list[list[str]]:
    """Names of the parameters of each layer, from input to output.

    A parameter shared by several modules (tied weights) belongs to the first layer that
    uses it, under the name `module.named_parameters()` gives it, so that it gets one LR
    and is counted once in the layer statistics.
    """
    groups: list[list[str]] = []
    seen: set[int] = set()
    for prefix, sub in module.named_modules():
        own = []
        for name, param in sub.named_parameters(recurse=False):
            if id(param) not in seen:
                seen.add(id(param))
                own.append(f"{prefix}.{name}" if prefix else name)
        if not own:
            continue
        if isinstance(sub, LAYER_TYPES) or not groups:
            groups.append(own)
        else:
            groups[-1].extend(own)
    if not groups:
        raise ValueError(f"model {type(module).__name__} has no trainable parameters")
    return groups


def init_parameters(module: nn.Module, generator: torch.Generator, scale: float) -> None:
    """PyTorch's default Linear/Conv initialisation, drawn from `generator`, times `scale`.

    Drawing from an explicit generator (not the global RNG) makes a network depend only on
    its seed, so network i of a population equals a single network with the same seed.
    """
    with torch.no_grad():
        for sub in module.modules():
            if not isinstance(sub, LAYER_TYPES):
                continue
            fan_in = sub.weight[0].numel()
            bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            sub.weight.copy_(_uniform(sub.weight.shape, bound, generator) * scale)
            if sub.bias is not None:
                sub.bias.copy_(_uniform(sub.bias.shape, bound, generator) * scale)


def _uniform(shape: torch.Size, bound: float, generator: torch.Generator) -> torch.Tensor:
    return (torch.rand(shape, generator=generator) * 2.0 - 1.0) * bound
