"""Hold a policy's observations inside the range its training showed it.

A policy is an MLP: fed a feature value far outside what it was trained on, it
extrapolates. `log10_relative_lr` is such a feature. Training starts every layer at an LR
in [1e-4, 0.3], so no training run ever shows a layer at 10^5 times its first LR, while a
network started at an LR of 1e-6 reaches that by climbing to 0.1; there the policies that
kept climbing to LRs of 5 and 10 read 4.8 to 7.0 (docs/results.md, "The climb at LR 1e-6
and 1e-5"). `add_observation_clip` measures each feature's range on the policy's own
training conditions (its file records them), with sampled actions as in training, and
writes a copy of the policy that clips its observations to that range before it acts, so
that beyond the edge it acts as it learned to at the edge. No held-out value enters: the
range comes from training conditions and seeds below 1,000,000 only.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ganno_env.conditions import HELD_OUT_SEED_START
from ganno_env.policy import load_policy, recorded_setting
from ganno_env.rollout import make_env
from ganno_env.validation import check_training_conditions

# The feature the climb from LR 1e-6 and 1e-5 drove past its training range.
CLIPPED_FEATURES: tuple[str, ...] = ("log10_relative_lr",)
# What `ganno run` clips by default (docs/results.md, "The clip as a guard": adopted).
MAIN_JOB_CLIP: tuple[str, ...] | None = CLIPPED_FEATURES
RANGE_NETWORKS = 64  # networks of the training conditions that the range is measured on


def training_ranges(
    policy: str | os.PathLike,
    features: Sequence[str] = CLIPPED_FEATURES,
    networks: int = RANGE_NETWORKS,
    seed: int = 0,
) -> dict[str, list[float]]:
    """{feature: [min, max]} of the observations a policy meets on its training conditions.

    The conditions, the population and the divergence factor are those its file records
    (`extra`); actions are sampled, as in training (`seed` seeds both the env and the
    sampling). ValueError, before any run, for an unknown feature, a count of networks
    that is not an int >= 1, a negative seed, seeds that would reach the held-out ones
    (1,000,000 and above), a file that records no training conditions or one that records
    a held-out condition.
    """
    controller = load_policy(policy, greedy=False, seed=seed)
    names = list(controller.payload["feature_names"])
    if isinstance(features, str):
        raise ValueError(f"features={features!r}; allowed: a list of names, e.g. [{features!r}]")
    unknown = [name for name in features if name not in names]
    if unknown or not features:
        raise ValueError(f"features={list(features)!r}; allowed: some of the policy's {names}")
    if isinstance(networks, bool) or not isinstance(networks, int) or networks < 1:
        raise ValueError(f"networks={networks!r}; allowed: an int >= 1")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed={seed!r}; allowed: an int >= 0")
    conditions = recorded_setting(controller.payload, "conditions")
    if conditions is None:
        raise ValueError(
            f"{os.fspath(policy)!r} records no training conditions (extra['conditions']); "
            "allowed: a policy exported by ganno train"
        )
    check_training_conditions(conditions, "the clip's range")
    settings: dict[str, Any] = {"conditions": conditions}
    for key in ("population", "divergence_factor"):
        value = recorded_setting(controller.payload, key)
        if value is not None:
            settings[key] = value
    env = make_env(controller, **settings)
    population = env.config.population
    episodes = math.ceil(networks / population)
    if seed + episodes * population > HELD_OUT_SEED_START:
        raise ValueError(
            f"seed={seed!r} with networks={networks!r} reaches seed "
            f"{seed + episodes * population - 1}; allowed: seeds below {HELD_OUT_SEED_START} "
            "(the held-out seeds start there)"
        )
    columns = [names.index(name) for name in features]
    seen: list[np.ndarray] = []
    for episode in range(episodes):
        observations, infos = env.reset(seed=seed + episode * population)  # network i: + i
        controller.reset(env, observations, infos)
        while env.agents:
            live = env.agents
            seen.append(np.stack([observations[a][columns] for a in live]))
            actions = controller.act(
                {a: observations[a] for a in live}, {a: infos[a] for a in live}
            )
            observations, _, _, _, infos = env.step(actions)
    values = np.concatenate(seen)
    return {
        name: [float(values[:, k].min()), float(values[:, k].max())]
        for k, name in enumerate(features)
    }


def add_observation_clip(
    path: str | os.PathLike,
    out: str | os.PathLike,
    features: Sequence[str] = CLIPPED_FEATURES,
    networks: int = RANGE_NETWORKS,
    seed: int = 0,
) -> Path:
    """Write a copy of a policy file that clips `features` to their `training_ranges`.

    The copy records the ranges (`observation_clip`) and how they were measured
    (`extra["observation_clip_from"]`); the benchmark, `make_env` and `GannoScheduler` then
    run it clipped. ValueError for a policy that already clips its observations.
    """
    payload = dict(load_policy(path).payload)
    if payload.get("observation_clip") is not None:
        raise ValueError(
            f"{os.fspath(path)!r} already clips its observations "
            f"({payload['observation_clip']}); allowed: a policy without observation_clip"
        )
    ranges = training_ranges(path, features, networks, seed)
    payload["observation_clip"] = ranges
    measured = {
        "conditions": recorded_setting(payload, "conditions"),
        "networks": networks,
        "seed": seed,
    }
    payload["extra"] = {**payload.get("extra", {}), "observation_clip_from": measured}
    torch.save(payload, out)
    return Path(out)
