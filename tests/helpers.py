"""Helpers shared by the test modules: random policy files and a short training loop."""

from pathlib import Path

import torch
import torch.nn.functional as F

from ganno_env.features import FEATURES
from ganno_env.policy import PolicyNet, export_policy


def random_policy(path, mapping="shared", modules=("shared",), seed=0, scale=300.0, extra=None):
    """A policy file with random weights whose actions differ between layers and decisions."""
    torch.manual_seed(seed)
    nets = {}
    for name in modules:
        net = PolicyNet(len(FEATURES), 5, (16, 16))
        with torch.no_grad():
            net.pi[-1].weight.mul_(scale)  # undo PolicyNet's near-uniform start
        nets[name] = net
    export_policy(path, nets, mapping, {}, extra)
    return Path(path)


def train_steps(model, optimizer, scheduler, steps, seed=1, inputs=8, classes=3):
    """`steps` full-batch steps on fixed random data, `scheduler.observe` before each update;
    the losses."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(64, inputs, generator=generator)
    y = torch.randint(0, classes, (64,), generator=generator)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        scheduler.observe(loss)
        optimizer.step()
        losses.append(loss.item())
    return losses
