"""Helpers shared by the test modules: random policy files and a short training loop."""

from pathlib import Path

import torch
import torch.nn.functional as F

from ganno_env import layerwise_lr_v1
from ganno_env.features import FEATURES
from ganno_env.policy import PolicyNet, export_policy, load_policy


def random_policy(
    path, mapping="shared", modules=("shared",), seed=0, scale=300.0, extra=None, env_config=None
):
    """A policy file with random weights whose actions differ between layers and decisions."""
    torch.manual_seed(seed)
    nets = {}
    for name in modules:
        net = PolicyNet(len(FEATURES), 5, (16, 16))
        with torch.no_grad():
            net.pi[-1].weight.mul_(scale)  # undo PolicyNet's near-uniform start
        nets[name] = net
    export_policy(path, nets, mapping, env_config or {}, extra)
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


def recorded_episode(policy_path, **env_kwargs):
    """One episode of the env (population 1, seed 3) under a policy, recording each
    decision's observations and infos and the minibatches it trained on.

    Returns (records, model, batches, data): `records` is [(observations, infos)] at reset
    and after each step, `model` a copy of the network at reset, `batches` the train indices
    of every step, `data` (x_train, y_train, x_val, y_val), so that an ordinary torch loop
    can replay the episode step for step.
    """
    env = layerwise_lr_v1.parallel_env(**env_kwargs)
    observations, infos = env.reset(seed=3)
    trainer = env.trainer
    model = trainer.module(0)
    batches = []
    take = trainer._take_batches

    def recording(steps):
        out = take(steps)
        batches.append(out[:, 0].clone())
        return out

    trainer._take_batches = recording
    controller = load_policy(policy_path)
    controller.reset(env, observations, infos)
    records = [(observations, infos)]
    while env.agents:
        observations, _, terminations, _, infos = env.step(controller.act(observations, infos))
        assert not any(terminations.values()), "the test run must not diverge"
        records.append((observations, infos))
    data = (trainer.x_train, trainer.y_train, trainer.x_val, trainer.y_val)
    return records, model, torch.cat(batches), data


def replay(scheduler, optimizer, model, batches, x_train, y_train):
    """An ordinary torch loop over the recorded minibatches, `scheduler.observe` before each
    update; the observations the scheduler decided on, one per decision."""
    observed = []
    for index in batches:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x_train[index]), y_train[index])
        loss.backward()
        decisions = scheduler.decisions
        scheduler.observe(loss)
        if scheduler.decisions > decisions:
            observed.append(scheduler.observations.copy())
        optimizer.step()
    return observed
